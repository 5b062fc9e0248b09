# shellcheck shell=sh disable=SC3043,SC2016  # `local` works in dash, bash, busybox ash and zsh
# /opt/vitis_ai/conda/etc/profile.d/conda.sh of the hostctl stand-in image.
#
# The real file (Mambaforge 4.10) defines a shell function `conda`; scripts use it non-interactively as
#   source /opt/vitis_ai/conda/etc/profile.d/conda.sh && conda activate ENV
# Here every env is a venv under /opt/vitis_ai/conda/envs/ENV. Like conda (and unlike a venv's bin/activate),
# activation sets CONDA_PREFIX, CONDA_DEFAULT_ENV, CONDA_SHLVL and PATH, exports no PS1 and no VIRTUAL_ENV.
# POSIX sh, so bash, dash and `sh -c` can all source it, also under `set -eu`.

_CONDA_ROOT=/opt/vitis_ai/conda
export _CONDA_ROOT

__conda_path_remove() {
    # Drop directory $1 from PATH.
    local __conda_dir __conda_new __conda_ifs
    __conda_new=
    __conda_ifs=$IFS
    IFS=:
    for __conda_dir in $PATH; do
        if [ "$__conda_dir" != "$1" ]; then
            __conda_new=${__conda_new:+$__conda_new:}$__conda_dir
        fi
    done
    IFS=$__conda_ifs
    PATH=$__conda_new
    export PATH
}

__conda_deactivate() {
    if [ -n "${CONDA_PREFIX:-}" ] && [ "$CONDA_PREFIX" != "$_CONDA_ROOT" ]; then
        __conda_path_remove "$CONDA_PREFIX/bin"
    fi
    if [ -n "${PS1:-}" ] && [ -n "${CONDA_PROMPT_MODIFIER:-}" ]; then
        PS1=${PS1#"$CONDA_PROMPT_MODIFIER"}
    fi
    unset CONDA_PREFIX CONDA_DEFAULT_ENV CONDA_PROMPT_MODIFIER
    CONDA_SHLVL=0
    export CONDA_SHLVL
    hash -r 2>/dev/null || true
}

__conda_activate() {
    local __conda_name __conda_prefix
    __conda_name=${1:-base}
    case $__conda_name in
        base) __conda_prefix=$_CONDA_ROOT ;;
        */*) __conda_prefix=${__conda_name%/} ;;
        *) __conda_prefix=$_CONDA_ROOT/envs/$__conda_name ;;
    esac
    if [ "$__conda_prefix" != "$_CONDA_ROOT" ] && [ ! -x "$__conda_prefix/bin/python" ]; then
        printf '\nEnvironmentNameNotFound: Could not find conda environment: %s\n' "$__conda_name" >&2
        printf 'You can list all discoverable environments with `conda info --envs`.\n\n' >&2
        return 1
    fi
    __conda_deactivate
    if [ "$__conda_prefix" != "$_CONDA_ROOT" ]; then
        PATH=$__conda_prefix/bin:$PATH
        export PATH
    fi
    CONDA_PREFIX=$__conda_prefix
    CONDA_DEFAULT_ENV=$__conda_name
    CONDA_PROMPT_MODIFIER="($__conda_name) "
    CONDA_SHLVL=1
    export CONDA_PREFIX CONDA_DEFAULT_ENV CONDA_PROMPT_MODIFIER CONDA_SHLVL
    if [ -n "${PS1:-}" ]; then
        PS1=$CONDA_PROMPT_MODIFIER$PS1
    fi
    hash -r 2>/dev/null || true
}

__conda_list() {
    local __conda_env
    echo "# conda environments:"
    echo "#"
    printf '%-28s %s %s\n' base "$([ "${CONDA_PREFIX:-}" = "$_CONDA_ROOT" ] && echo '*' || echo ' ')" "$_CONDA_ROOT"
    for __conda_env in "$_CONDA_ROOT"/envs/*/; do
        [ -x "${__conda_env}bin/python" ] || continue
        __conda_env=${__conda_env%/}
        printf '%-28s %s %s\n' "${__conda_env##*/}" \
            "$([ "${CONDA_PREFIX:-}" = "$__conda_env" ] && echo '*' || echo ' ')" "$__conda_env"
    done
}

conda() {
    local __conda_cmd
    __conda_cmd=${1:-}
    [ "$#" -gt 0 ] && shift
    case $__conda_cmd in
        activate) __conda_activate "$@" ;;
        deactivate) __conda_deactivate ;;
        env)
            case ${1:-} in
                list) __conda_list ;;
                *) echo "conda env: only 'conda env list' is available in the hostctl stand-in image" >&2; return 1 ;;
            esac
            ;;
        info)
            case ${1:-} in
                --envs | -e) __conda_list ;;
                *) echo "conda info: only 'conda info --envs' is available in the hostctl stand-in image" >&2; return 1 ;;
            esac
            ;;
        *)
            echo "conda: '$__conda_cmd' is not available in the hostctl stand-in image (activate, deactivate, env list, info --envs)" >&2
            return 1
            ;;
    esac
}
