#!/usr/bin/env bash
# Make the golden Python: the interpreter tests/golden/check.py runs under to compare the portable backend with
# the committed vai_q_pytorch references. It needs torch, torchvision, timm and segmentation_models_pytorch, and
# no nndct. The last stdout line is the interpreter's path (`HOSTCTL_GOLDEN_PYTHON="$(scripts/golden-env.sh |
# tail -n1)"`); all chatter goes to stderr.
#
# Debian's python3-torch (1.13) and python3-torchvision (0.14) are the base: the torchvision wheels on PyPI link
# a CUDA torch and fail to import beside the CPU one, and 1.13 is the torch of the references and of the
# stand-in image. A venv with --system-site-packages adds timm and smp (pure Python, pinned to the versions the
# references were made with) without letting pip replace torch. Idempotent: a second run only checks.
#
# Environment knobs:
#   HOSTCTL_GOLDEN_VENV   where the venv lives (default ${XDG_CACHE_HOME:-$HOME/.cache}/hostctl/golden-venv)
#   HOSTCTL_GOLDEN_BASE   the Debian interpreter to build it from (default /usr/bin/python3)
set -euo pipefail

readonly VENV="${HOSTCTL_GOLDEN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/hostctl/golden-venv}"
readonly BASE="${HOSTCTL_GOLDEN_BASE:-/usr/bin/python3}"
# The versions tests/golden/refs/*.json record under "versions"; scripts/make_golden.py's Python had the same.
readonly PINS=(timm==1.0.31 segmentation-models-pytorch==0.6.0)
readonly DEPS=(huggingface_hub==2.4.0 safetensors==0.8.0)
readonly APT=(python3-torch python3-torchvision python3-h5py python3-numpy python3-venv)
readonly STAMP="$VENV/.hostctl-golden"
readonly WANT="${PINS[*]} ${DEPS[*]}"

say() { printf 'golden-env: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The references were made on the reference BLAS (libblas3), which Debian's torch takes unless an optimised one
# is installed; tests/golden/arithmetic.py points each check at it, so it must be there beside OpenBLAS too.
if ! dpkg -s libblas3 >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" -eq 0 ]]; then
    say "installing Debian's libblas3 (the BLAS the references computed with)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libblas3 >&2 \
        || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libblas3 >&2; } \
        || die "apt-get install libblas3 failed"
fi

imports_all() {
    "$1" -c 'import torch, torchvision, h5py, numpy, timm, segmentation_models_pytorch' >/dev/null 2>&1
}

if [[ -x "$VENV/bin/python" && "$(cat "$STAMP" 2>/dev/null)" == "$WANT" ]] && imports_all "$VENV/bin/python"; then
    say "ready: $VENV"
    echo "$VENV/bin/python"
    exit 0
fi

if ! "$BASE" -c 'import torch, torchvision, h5py, numpy, ensurepip' >/dev/null 2>&1; then
    [[ "$(id -u)" -eq 0 ]] || die "$BASE lacks Debian's torch/torchvision; run 'sudo apt-get install -y ${APT[*]}' (or this script as root)"
    command -v apt-get >/dev/null 2>&1 || die "$BASE lacks torch/torchvision and apt-get is not available; point HOSTCTL_GOLDEN_BASE at a Python with torch 1.13 and torchvision 0.14"
    say "installing Debian's ${APT[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT[@]}" >&2 \
        || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT[@]}" >&2; } \
        || die "apt-get install ${APT[*]} failed"
    "$BASE" -c 'import torch, torchvision' >/dev/null 2>&1 || die "$BASE still cannot import torch and torchvision"
fi

say "building $VENV from $BASE"
mkdir -p "$(dirname "$VENV")"
"$BASE" -m venv --system-site-packages "$VENV"
py="$VENV/bin/python"
"$py" -m pip install -q --disable-pip-version-check "${DEPS[@]}" >&2 || die "pip install ${DEPS[*]} failed"
# --no-deps: their requirements name torch and torchvision, which pip would otherwise try to replace.
"$py" -m pip install -q --disable-pip-version-check --no-deps "${PINS[@]}" >&2 || die "pip install ${PINS[*]} failed"
imports_all "$py" || die "$py cannot import torch, torchvision, timm and segmentation_models_pytorch: $("$py" -c 'import torch, torchvision, timm, segmentation_models_pytorch' 2>&1 | tail -n1)"
echo "$WANT" >"$STAMP"
say "ready: $VENV ($("$py" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'))"
echo "$py"
