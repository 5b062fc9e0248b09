"""The payload in the Vitis AI image, through the Docker SDK. This package is the only importer of docker.

One module per job (DESIGN.md sections 6-8):
  engine.py        connect to the engine the docker CLI would use; one-line reasons when that fails
  ssh.py           ssh:// engines through the system's ssh (`ssh HOST docker system dial-stdio`), no paramiko
  labels.py        the labels on every container; find and sweep those whose hostctl process is gone
  images.py        the image: present, pulled per --pull with progress, runnable on this platform
  shim.py          the root shim that maps the caller's uid/gid and activates the env; the paths inside
  files.py         bind mounts on a local engine, copies in and out on a remote one
  container.py     one container's life: create -> attach -> start -> stream -> wait -> stop -> remove
  lease.py         on a remote engine, the heartbeat that keeps the payload's lease (container_payload/lease.py)
  requirements.py  --requirements screened and pip-installed --user into a cache keyed by image and file
  runtime.py       DockerRuntime, the Runtime protocol on top of the pieces above
  command.py       --print-docker-cmd: the equivalent `docker run` line
  housekeeping.py  what `hostctl doctor` reports and what `hostctl clean` removes

Importing this package imports the docker SDK: import it lazily, where a docker run is actually needed.
"""

from hostctl.runtime.docker.command import docker_command
from hostctl.runtime.docker.engine import connect, engine_url, is_local_engine
from hostctl.runtime.docker.housekeeping import clean, engine_facts
from hostctl.runtime.docker.images import check_platform, ensure_image, split_image
from hostctl.runtime.docker.labels import LABEL_HOST, LABEL_PID, LABEL_PID_START, LABEL_RUN, owner_alive, process_start
from hostctl.runtime.docker.requirements import check_requirements
from hostctl.runtime.docker.runtime import DockerRuntime
from hostctl.runtime.docker.shim import shim

__all__ = [
    "LABEL_HOST", "LABEL_PID", "LABEL_PID_START", "LABEL_RUN", "DockerRuntime", "check_platform",
    "check_requirements", "clean", "connect", "docker_command", "engine_facts", "engine_url", "ensure_image",
    "is_local_engine", "owner_alive", "process_start", "shim", "split_image",
]
