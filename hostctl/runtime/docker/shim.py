"""What a container runs and sees: the root shim that maps the caller's uid/gid, and the paths inside.

The image maps UID/GID only in interactive bash (DESIGN.md section 6), so the container starts as root with
this shim, which maps the caller onto vitis-ai-user, drops privileges with gosu, activates the conda env and
execs the command: files land on the host owned by the caller, and the command's exit code is the container's.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import container_payload

PAYLOAD_DIR = Path(container_payload.__file__).resolve().parent
IN_INPUTS = "/hostctl/inputs"
IN_RUN = "/hostctl/run"
IN_MODEL = "/hostctl/model"
IN_CODE = "/opt/hostctl"
IN_USERBASE = "/hostctl/userbase"
IN_REQ = "/hostctl/req"
READY_FILE = "/hostctl/ready"  # put in last when files are copied: the payload's go-ahead (container_payload/lease.py)
CONDA_SH = "/opt/vitis_ai/conda/etc/profile.d/conda.sh"

CHECK_ENV = "HOSTCTL_CHECK"
EXIT_INCOMPLETE = 76  # a volume kept on the engine lacks its completion marker (hostctl/runtime/docker/inputs.py)

# Runs as root in the container. Checks the markers of the volumes kept on the engine, maps the caller onto
# vitis-ai-user/group (-o: the ids may already be taken), drops privileges with gosu (keeps HOME, passwd entry
# and exit code), activates the env with conda.sh (not `conda run`, which buffers output) and execs the command,
# so that signals and the exit status go straight through docker-init to the payload.
SHIM = "; ".join([
    "set -e",
    # CHECK_ENV: "FILE=CONTENT ..." of the volumes found on the engine; one without its marker was never finished
    f'for check in ${{{CHECK_ENV}:-}}; do [ "$(cat "${{check%%=*}}" 2>/dev/null)" = "${{check#*=}}" ]'
    f' || {{ echo "hostctl: ${{check%%=*}} is missing: the volume is incomplete" >&2; exit {EXIT_INCOMPLETE}; }}; done',
    'if [ -n "${HOSTCTL_JOB:-}" ]; then printf "%s" "$HOSTCTL_JOB" > /hostctl/run/job.json; fi',
    # Only change what differs: usermod complains "no changes" otherwise, and it re-owns the home directory.
    'if [ "$HOSTCTL_UID" != 0 ]; then'
    ' [ "$(getent group vitis-ai-group | cut -d: -f3)" = "$HOSTCTL_GID" ]'
    ' || groupmod -o -g "$HOSTCTL_GID" vitis-ai-group;'
    ' [ "$(id -u vitis-ai-user)" = "$HOSTCTL_UID" ] || usermod -o -u "$HOSTCTL_UID" vitis-ai-user;'
    " set -- gosu vitis-ai-user; else set --; fi",
    """exec "$@" bash -c 'source "$0" && conda activate "$HOSTCTL_CONDA_ENV" && exec "$@"' """
    f"{CONDA_SH} HOSTCTL_COMMAND",
])

PAYLOAD_COMMAND = ["python", "-u", "-m", "container_payload", "--job", f"{IN_RUN}/job.json"]


def shim(command: list[str]) -> list[str]:
    """The container command: bash -c SHIM with `command` spliced in as the activated env's command."""
    script = SHIM.replace("HOSTCTL_COMMAND", " ".join(shlex.quote(c) for c in command))
    return ["bash", "-c", script]


def payload_environment(uid: str, gid: str, conda_env: str) -> dict[str, str]:
    """What the shim and the payload read: whom to map, which env, where the code is; unbuffered UTF-8 output."""
    return {"HOSTCTL_UID": uid, "HOSTCTL_GID": gid, "HOSTCTL_CONDA_ENV": conda_env, "PYTHONUNBUFFERED": "1",
            "PYTHONIOENCODING": "utf-8", "PYTHONPATH": IN_CODE, "PYTHONDONTWRITEBYTECODE": "1"}
