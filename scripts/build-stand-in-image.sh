#!/usr/bin/env bash
# Build, or reuse, the stand-in for the Vitis AI image (DESIGN.md sections 6 and 8).
#
#   scripts/build-stand-in-image.sh              build if needed; last stdout line: hostctl-stand-in:<12 hex>
#   scripts/build-stand-in-image.sh --print-tag  only print the tag the current sources map to
#   scripts/build-stand-in-image.sh --force      rebuild even if the tag exists (reuses the base rootfs)
#
# The tag is the first 12 hex digits of a sha256 over this script and scripts/stand-in-image/*; the full hash
# is stored as the image label hostctl.stand-in.hash. When that image exists nothing is built (~0.1 s). The
# image is also tagged hostctl-stand-in:latest. Everything but the tag goes to stderr.
#
# How: `mmdebstrap --variant=minbase bookworm -` (with every package installed there, so the docker build
# needs no network) piped into `docker import` gives the base image hostctl-stand-in-base:<12 hex of its
# recipe>; then a legacy-builder `docker build --network none` of scripts/stand-in-image/Dockerfile on top.
# Needs root (mmdebstrap, and apt-get if mmdebstrap is missing) and a running engine
# (scripts/docker-engine.sh start).
#
# Environment knobs:
#   HOSTCTL_DEBIAN_MIRROR   Debian mirror URI to use instead of the one in the machine's apt sources
set -euo pipefail

SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
readonly SCRIPT_PATH
readonly CONTEXT_DIR="${SCRIPT_PATH%/*}/stand-in-image"
readonly REPO="hostctl-stand-in"
readonly BASE_REPO="hostctl-stand-in-base"
readonly HASH_LABEL="hostctl.stand-in.hash"
readonly SUITE="bookworm"
readonly CLEAN_PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# python3-torch is Debian's 1.13.1 (the oldest torch hostctl supports). passwd gives usermod/groupmod.
# libopenblas0-openmp: without it apt satisfies python3-torch's libblas.so.3 with the reference BLAS, and torch
# 1.13 at one thread runs 1x1 convolutions of a batch under 16 through im2col and that BLAS: 10x slower than the
# Vitis AI image's MKL-backed torch (a forward of LR-ASPP at 3x512x512, 0.85 s against 0.10 s with OpenBLAS),
# which skewed every timing against nndct. The OpenMP build shares torch's libgomp, so OMP_NUM_THREADS and
# OMP_WAIT_POLICY (hostctl's thread plan) govern both.
readonly PACKAGES=(
    python3 python3-venv python3-pip python3-numpy python3-h5py python3-torch libopenblas0-openmp
    gosu passwd sudo ca-certificates
)

say() { printf 'build-stand-in-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

sha256() { sha256sum | cut -d' ' -f1; }

# Hash of everything the final image is made from: this script and the build context (names and contents;
# modes are normalised in the Dockerfile, so a checkout's umask does not change the tag).
content_hash() {
    [[ -f "$CONTEXT_DIR/Dockerfile" ]] || die "build context missing: $CONTEXT_DIR/Dockerfile"
    {
        printf 'script %s\n' "$(sha256 <"$SCRIPT_PATH")"
        (cd "$CONTEXT_DIR" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256
}

# Print the engine's answer to "which image id has this reference", or nothing.
image_id() { docker image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

engine_check() {
    docker version --format '{{.Server.Version}}' >/dev/null 2>&1 \
        || die "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); run: eval \"\$(scripts/docker-engine.sh start | tail -n1)\" && export DOCKER_HOST"
}

# apt sources lines for $SUITE (main only) read from the machine's deb822 and one-line sources; falls back
# to deb.debian.org. Third-party repositories are skipped: they would use other suites or components.
apt_mirror_lines() {
    if [[ -n "${HOSTCTL_DEBIAN_MIRROR:-}" ]]; then
        printf 'deb %s %s main\n' "$HOSTCTL_DEBIAN_MIRROR" "$SUITE"
        return
    fi
    local f lines
    lines="$(
        for f in /etc/apt/sources.list.d/*.sources; do
            [[ -r "$f" ]] || continue
            awk '
                function flush(   i, j, k, nu, ns, u, s, c, hasmain) {
                    if (types ~ /(^| )deb( |$)/ && enabled != "no") {
                        hasmain = (" " comps " " ~ / main /)
                        nu = split(uris, u, " "); ns = split(suites, s, " ")
                        for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++)
                            if (hasmain) print "deb " u[i] " " s[j] " main"
                    }
                    types = uris = suites = comps = enabled = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                { key = tolower($1); sub(/^[^:]*:[ \t]*/, "") }
                key == "types:" { types = $0 } key == "uris:" { uris = $0 }
                key == "suites:" { suites = $0 } key == "components:" { comps = $0 }
                key == "enabled:" { enabled = tolower($0) }
                END { flush() }
            ' "$f"
        done
        for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -r "$f" ]] || continue
            sed -E -n 's/\[[^]]*\]//; s/^[[:space:]]*deb[[:space:]]+([^[:space:]]+)[[:space:]]+([^[:space:]]+)[[:space:]]+(.*[[:space:]])?main([[:space:]].*)?$/deb \1 \2 main/p' "$f"
        done
    )"
    lines="$(awk -v suite="$SUITE" '$3 == suite || $3 == suite "-updates" || $3 == suite "-security"' <<<"$lines" | awk '!seen[$0]++')"
    if [[ -z "$lines" ]]; then
        say "no $SUITE main entry in the machine's apt sources; using http://deb.debian.org/debian"
        lines="deb http://deb.debian.org/debian $SUITE main"
    fi
    printf '%s\n' "$lines"
}

ensure_mmdebstrap() {
    command -v mmdebstrap >/dev/null 2>&1 && return
    [[ "$(id -u)" -eq 0 ]] || die "mmdebstrap is missing; install it (sudo apt-get install mmdebstrap) or run this script as root"
    say "installing mmdebstrap (apt-get)"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >&2 || die "apt-get install mmdebstrap failed"
}

# Build the base image (rootfs from mmdebstrap) unless an image for the same recipe exists; print its tag.
ensure_base() {
    local mirrors=() args base_hash base_tag tmp_tag
    mapfile -t mirrors < <(apt_mirror_lines)
    # The chroot steps run with a clean environment: nothing of the caller's (PYTHON*, LANG, proxies aside)
    # may leak into maintainer scripts or into compileall.
    local chroot_env="env -i PATH=$CLEAN_PATH LC_ALL=C.UTF-8"
    args=(
        --variant=minbase
        "--include=$(IFS=,; echo "${PACKAGES[*]}")"
        --aptopt='Acquire::Languages "none"'
        --dpkgopt='path-exclude=/usr/share/man/*'
        --dpkgopt='path-exclude=/usr/share/locale/*'
        --dpkgopt='path-include=/usr/share/locale/locale.alias'
        --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        # Tar does not keep the source mtimes that timestamp-based .pyc files are checked against, so every
        # container would recompile torch in memory (seconds per import): hash-based .pyc that Python
        # never re-checks. -f because compileall skips files whose timestamp .pyc look current.
        "--customize-hook=chroot \"\$1\" $chroot_env sh -c 'python3 -m compileall -q -f -j 0 --invalidation-mode unchecked-hash -x \"/(tests?|test_data)/\" /usr/lib/python3/dist-packages /usr/lib/python3.[0-9]*/ >/dev/null'"
        "--customize-hook=chroot \"\$1\" $chroot_env python3 -c 'import torch, numpy, h5py'"
    )
    base_hash="$(printf '%s\n' "base-recipe-v1" "$SUITE" "${args[@]}" "${mirrors[@]}" | sha256)"
    base_tag="$BASE_REPO:${base_hash:0:12}"
    if [[ -n "$(image_id "$base_tag")" ]]; then
        say "reusing base image $base_tag"
        printf '%s\n' "$base_tag"
        return
    fi

    ensure_mmdebstrap
    say "building base image $base_tag: mmdebstrap $SUITE from: $(printf '%s; ' "${mirrors[@]}")"
    local proxy_env=() var
    for var in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY TMPDIR; do
        [[ -n "${!var:-}" ]] && proxy_env+=("$var=${!var}")
    done
    tmp_tag="$BASE_REPO:tmp-$$"
    local start=$SECONDS
    if ! env -i "PATH=$CLEAN_PATH" HOME=/root LC_ALL=C.UTF-8 "${proxy_env[@]}" \
        mmdebstrap "${args[@]}" "$SUITE" - "${mirrors[@]}" \
        | docker import --message "hostctl stand-in base ($SUITE minbase)" - "$tmp_tag" >/dev/null; then
        docker rmi "$tmp_tag" >/dev/null 2>&1 || true
        die "mmdebstrap | docker import failed (see the messages above)"
    fi
    docker tag "$tmp_tag" "$base_tag"
    docker rmi "$tmp_tag" >/dev/null
    say "base image $base_tag done in $((SECONDS - start))s"
    printf '%s\n' "$base_tag"
}

main() {
    local mode="build"
    case "${1:-}" in
        "") ;;
        --force) mode="force" ;;
        --print-tag) mode="print" ;;
        *) die "usage: $0 [--force|--print-tag]" ;;
    esac
    local hash tag
    hash="$(content_hash)"
    tag="$REPO:${hash:0:12}"
    if [[ "$mode" == "print" ]]; then
        printf '%s\n' "$tag"
        return
    fi

    # Fast path: one CLI call when the image exists (label checked, :latest retagged only when stale).
    local found
    found="$(docker image inspect --format "{{.Id}} {{index .Config.Labels \"$HASH_LABEL\"}}" "$tag" "$REPO:latest" 2>/dev/null || true)"
    if [[ "$mode" == "build" && "$(sed -n 1p <<<"$found" | cut -d' ' -f2)" == "$hash" ]]; then
        if [[ "$(sed -n 2p <<<"$found" | cut -d' ' -f1)" != "$(sed -n 1p <<<"$found" | cut -d' ' -f1)" ]]; then
            docker tag "$tag" "$REPO:latest"
        fi
        say "up to date: $tag"
        printf '%s\n' "$tag"
        return
    fi

    engine_check
    # Parallel test workers may all arrive here: one builds, the others wait and then reuse its image.
    local lock="${TMPDIR:-/tmp}/hostctl-stand-in-build.lock"
    exec 9>"$lock"
    flock -w 1800 9 || die "timed out waiting for another build holding $lock"
    if [[ "$mode" == "build" && "$(docker image inspect --format "{{index .Config.Labels \"$HASH_LABEL\"}}" "$tag" 2>/dev/null || true)" == "$hash" ]]; then
        docker tag "$tag" "$REPO:latest"
        say "built by a concurrent caller: $tag"
        printf '%s\n' "$tag"
        return
    fi

    local start=$SECONDS base_tag
    base_tag="$(ensure_base)"
    say "building $tag on $base_tag (legacy builder, no network)"
    DOCKER_BUILDKIT=0 docker build --network none --force-rm --pull=false \
        --build-arg "BASE=$base_tag" \
        --label "$HASH_LABEL=$hash" \
        --label "hostctl.stand-in.base=$base_tag" \
        -t "$tag" -t "$REPO:latest" \
        "$CONTEXT_DIR" >&2 \
        || die "docker build of $CONTEXT_DIR failed (see the messages above)"
    say "built $tag in $((SECONDS - start))s ($(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.2f GB", $1 / 1e9}'))"
    printf '%s\n' "$tag"
}

main "$@"
