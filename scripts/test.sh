#!/usr/bin/env bash
# The whole test suite, as the README's quick start runs it: lint, then every tier of tests, Docker included.
# Starts a Docker engine when none answers (as root, installing Debian's docker.io if needed) and builds or
# reuses the stand-in image; makes or reuses the golden Python (scripts/golden-env.sh). Docker and golden tests
# FAIL rather than skip here when the engine or the golden Python cannot be had.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

scripts/lint.sh

engine="$(scripts/docker-engine.sh start | tail -n1)"
# A registry on loopback for the pull tests (Debian's docker-registry; no outside registry is reachable),
# strace for the fault injection of tests/e2e/test_commit_faults.py, and OpenSSH's server and client for the
# ssh:// engine tests (tests/ssh/ start their own sshd on a loopback port; the package's own service is not used).
for tool in docker-registry strace /usr/sbin/sshd ssh; do
    package="$tool"
    case "$tool" in /usr/sbin/sshd) package=openssh-server ;; ssh) package=openssh-client ;; esac
    if ! command -v "$tool" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$package" >/dev/null; }
    fi
done
export DOCKER_HOST="${engine#DOCKER_HOST=}"
HOSTCTL_TEST_IMAGE="$(scripts/build-stand-in-image.sh | tail -n1)"
export HOSTCTL_TEST_IMAGE
export HOSTCTL_REQUIRE_DOCKER=1
export HOSTCTL_REQUIRE_SSH=1
echo "test: engine $DOCKER_HOST, stand-in image $HOSTCTL_TEST_IMAGE" >&2
# The golden tier's interpreter (Debian's torch + torchvision, timm, smp; as root it apt-gets what is missing).
HOSTCTL_GOLDEN_PYTHON="$(scripts/golden-env.sh | tail -n1)"
export HOSTCTL_GOLDEN_PYTHON
export HOSTCTL_REQUIRE_GOLDEN=1
echo "test: golden python $HOSTCTL_GOLDEN_PYTHON" >&2

"$PYTHON" -m pytest -q "$@"

left="$(docker ps -aq --filter label=hostctl.run | wc -l)"
if [ "$left" -ne 0 ]; then
    echo "test: FAILED: $left container(s) labelled hostctl.run left behind" >&2
    docker ps -a --filter label=hostctl.run >&2
    exit 1
fi
