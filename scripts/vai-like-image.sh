#!/usr/bin/env bash
# Build a Vitis AI-like image holding the REAL vai_q_pytorch, to try --quantizer vai and hybrid for real in a
# container (issue 9's acceptance): the stand-in image plus a vai_q_pytorch tree built on this host.
#
#   scripts/vai-like-image.sh VAI_Q_PYTORCH_DIR NNDCT_VENV [TAG]
#
# VAI_Q_PYTORCH_DIR: src/vai_quantizer/vai_q_pytorch from the public Xilinx/Vitis-AI sources, set up and
#   imported once as the README's "golden references" section describes (nndct_shared linked into
#   pytorch_binding, version.py written), so that pytorch_binding/pytorch_nndct/nn/lib/nndct_kernels.so exists.
#   Its kernels must have been compiled against Debian's torch 1.13.1 (the stand-in image's).
# NNDCT_VENV: the venv it was imported in; scipy 1.9.3, tabulate, graphviz, tqdm and networkx are copied from it.
#
# The sources never enter this repository: the build context is a temporary directory. The kernels load ahead of
# time (pytorch_nndct/nn/*.so), so the image needs no compiler. There is no xir in it: --export none, or expect
# hostctl's exit 3 that says so. Prints the image tag on its last line.
set -euo pipefail

die() { printf 'vai-like-image: error: %s\n' "$*" >&2; exit 1; }
[[ $# -ge 2 ]] || die "usage: $0 VAI_Q_PYTORCH_DIR NNDCT_VENV [TAG]"
readonly SRC="$1" VENV="$2" TAG="${3:-hostctl-vai-like:3.5}"
readonly KERNELS="$SRC/pytorch_binding/pytorch_nndct/nn/lib/nndct_kernels.so"
[[ -f "$KERNELS" ]] || die "$KERNELS not found: import pytorch_nndct once in $VENV to compile its kernels"
SITE="$(echo "$VENV"/lib/python3*/site-packages)"
readonly SITE
[[ -d "$SITE/scipy" ]] || die "$SITE has no scipy: install the nndct requirements in $VENV first"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="$("$ROOT/scripts/build-stand-in-image.sh" | tail -n1)"
readonly ROOT BASE

CONTEXT="$(mktemp -d)"
trap 'rm -rf "$CONTEXT"' EXIT
mkdir -p "$CONTEXT/site"
cp -a "$SRC" "$CONTEXT/vai_q_pytorch"
rm -rf "$CONTEXT/vai_q_pytorch/pytorch_binding/build"
cp "$KERNELS" "$CONTEXT/vai_q_pytorch/pytorch_binding/pytorch_nndct/nn/"  # loaded ahead of time from here
for pattern in scipy scipy.libs 'scipy-*.dist-info' graphviz 'graphviz-*.dist-info' networkx \
        'networkx-*.dist-info' tabulate 'tabulate-*.dist-info' tqdm 'tqdm-*.dist-info'; do
    for path in "$SITE"/$pattern; do
        [[ -e "$path" ]] || die "$SITE lacks $pattern"
        cp -a "$path" "$CONTEXT/site/"
    done
done
cat > "$CONTEXT/Dockerfile" <<EOF
FROM $BASE
COPY vai_q_pytorch /opt/vitis_ai/vai_q_pytorch
COPY site /opt/vitis_ai/conda/envs/vitis-ai-wego-torch2/lib/python3.11/site-packages/
RUN set -eu; env=/opt/vitis_ai/conda/envs/vitis-ai-wego-torch2; \\
    echo /opt/vitis_ai/vai_q_pytorch/pytorch_binding > "\$env/lib/python3.11/site-packages/pytorch_nndct.pth"; \\
    chmod -R a+rX /opt/vitis_ai/vai_q_pytorch "\$env/lib/python3.11/site-packages"; \\
    cd /tmp && "\$env/bin/python" -c 'import pytorch_nndct'
EOF
docker build -q -t "$TAG" "$CONTEXT" >&2
echo "$TAG"
