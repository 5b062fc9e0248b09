"""DockerRuntime: the Runtime protocol (hostctl/runtime/__init__.py) on the Docker engine.

  prepare: connect -> sweep containers whose hostctl process is gone -> ensure image (per --pull) -> requirements
  run:     the payload in one container (container.py), inputs and code read-only, only the run dir writable
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import docker

from container_payload.job import job_task
from container_payload.lease import TASK_ENV
from hostctl.errors import EnvironmentProblem
from hostctl.options import QuantizeOptions
from hostctl.runtime import LineSink, offer_local_runtime
from hostctl.runtime.docker.container import ContainerRunner
from hostctl.runtime.docker.engine import connect, engine_url, is_local_engine
from hostctl.runtime.docker.files import Share
from hostctl.runtime.docker.images import check_platform, ensure_image
from hostctl.runtime.docker.inputs import kept
from hostctl.runtime.docker.labels import sweep
from hostctl.runtime.docker.requirements import check_requirements, install_requirements
from hostctl.runtime.docker.shim import (
    IN_CODE,
    IN_INPUTS,
    IN_MODEL,
    IN_RUN,
    IN_USERBASE,
    PAYLOAD_COMMAND,
    PAYLOAD_DIR,
    payload_environment,
    shim,
)
from hostctl.signals import SignalTrap
from hostctl.threads import CpuSample, ThreadPlan, plan_remote, plan_threads
from hostctl.ui import Reporter


class DockerRuntime:
    def __init__(self, opts: QuantizeOptions, run_dir: Path, reporter: Reporter, trap: SignalTrap,
                 read_only: Sequence[tuple[Path, str]] = (), offer_local: bool = False) -> None:
        """`read_only`: further host paths the payload sees, as (host path, path inside), e.g. a user's arch.json.
        `offer_local`: the command has --runtime, so engine and image problems name --runtime local."""
        self.opts = opts
        self.offer_local = offer_local
        self.read_only = [(host.resolve(), inside) for host, inside in read_only]
        self.run_dir = run_dir
        self.reporter = reporter
        self.trap = trap
        self.client: docker.DockerClient | None = None
        self.image: Any = None
        self.runner: ContainerRunner | None = None
        self.userbase: Path | None = None
        self.requirements_text = check_requirements(opts.requirements) if opts.requirements else None
        self._cpu_sample = CpuSample()  # the thread plan's window runs while prepare() works
        self._threads: ThreadPlan | None = None
        self.copy_files = False
        self._engine_cpus: int | None = None  # a remote engine's CPUs

    def prepare(self) -> None:
        try:
            self._prepare()
        except EnvironmentProblem as problem:
            if self.offer_local:
                offer_local_runtime(problem)
            raise

    def _prepare(self) -> None:
        self.client = connect()
        remote = not is_local_engine(self.client)
        if remote:  # the payload runs on the engine's CPUs: this machine's count and load say nothing of them
            self._engine_cpus = self.client.info().get("NCPU")
        # A remote engine cannot see this machine's files: copy them in and the results out instead of binding.
        self.copy_files = remote or os.environ.get("HOSTCTL_DOCKER_FILES") == "copy"
        if self.copy_files:
            self.reporter.info(f"engine at {engine_url()} is remote: inputs are copied into the container and "
                               "results copied back")
        sweep(self.client, self.reporter)
        self.image = ensure_image(self.client, self.opts.image, self.opts.pull, self.reporter)
        check_platform(self.image)
        self.runner = ContainerRunner(self.client, self.image, self.reporter, self.trap, self.run_dir.name,
                                      self.copy_files, keep_inputs=kept() if remote else 0)
        if self.opts.requirements is not None and self.requirements_text is not None:
            self.userbase = install_requirements(self.runner, self.opts.requirements, self.requirements_text,
                                                 self.opts.conda_env, self._environment(), self.reporter)

    def view(self, path: Path) -> str:
        path = path.resolve()
        for host, inside in self._mapped_dirs():
            if path == host or host in path.parents:
                return str(Path(inside) / path.relative_to(host))
        raise AssertionError(f"{path} is not mounted in the container")

    def _mapped_dirs(self) -> list[tuple[Path, str]]:
        dirs = [(self.run_dir.resolve(), IN_RUN), (self.opts.input_dir.resolve(), IN_INPUTS)]
        if self.opts.model_path:
            dirs.append((self.opts.model_path.resolve(), IN_MODEL))
        return dirs + self.read_only

    def describe(self) -> dict[str, Any]:
        assert self.client is not None and self.image is not None
        version = self.client.version()
        return {"runtime": "docker", "image": self.opts.image, "image_id": self.image.id,
                "conda_env": self.opts.conda_env, "engine_version": version.get("Version"),
                "api_version": version.get("ApiVersion"), "requirements_cache": str(self.userbase or ""),
                "cpus": getattr(self.opts, "cpus", None),
                "threads": dict(self.threads.to_dict(), environment=self.threads.environment())}

    @property
    def threads(self) -> ThreadPlan:
        """The payload's threads (compile's options carry no thread settings: the plan alone)."""
        if self._threads is None:
            requested, limit = getattr(self.opts, "threads", None), getattr(self.opts, "cpus", None)
            if self._engine_cpus:
                self._threads = plan_remote(requested, limit, self._engine_cpus)
            else:
                self._threads = plan_threads(requested, limit, sample=self._cpu_sample)
        return self._threads

    def _environment(self) -> dict[str, str]:
        env = payload_environment(str(os.getuid()), str(os.getgid()), self.opts.conda_env)
        env.update(self.threads.environment())
        if self.userbase is not None:
            env["PYTHONUSERBASE"] = IN_USERBASE
        return env

    def _shares(self) -> list[Share]:
        """What the payload sees of this machine: inputs and code read-only, only the run directory writable."""
        shares = [Share(self.opts.input_dir.resolve(), IN_INPUTS, False, cache="inputs"),
                  Share(self.run_dir.resolve(), IN_RUN, True),
                  Share(PAYLOAD_DIR, f"{IN_CODE}/container_payload", False, cache="code", early=True)]
        if self.opts.model_path:
            shares.append(Share(self.opts.model_path.resolve(), IN_MODEL, False))
        if self.userbase is not None:  # Python adds a user site only if it exists when it starts
            shares.append(Share(self.userbase, IN_USERBASE, False, early=True))
        return shares + [Share(host, inside, False) for host, inside in self.read_only]

    def run(self, job_file: Path, on_line: LineSink) -> int:
        # the payload imports what its task needs before the job itself may be in (copied files: container.py)
        environment = dict(self._environment(), **{TASK_ENV: job_task(job_file.read_text(encoding="utf-8"))})
        return self._run_container(shim(PAYLOAD_COMMAND), self._shares(), environment, "payload",
                                   network=False, on_line=on_line, keep=self.opts.keep_container,
                                   memory=self.opts.memory, cpus=getattr(self.opts, "cpus", None), waits=True)

    def _run_container(self, command: list[str], shares: list[Share], environment: dict[str, str], role: str, *,
                       network: bool, on_line: LineSink, keep: bool = False, workdir: str = IN_RUN,
                       memory: str | None = None, cpus: float | None = None, waits: bool = False) -> int:
        assert self.runner is not None, "prepare() first"
        return self.runner.run(command, shares, environment, role, network=network, on_line=on_line, keep=keep,
                               workdir=workdir, memory=memory, cpus=cpus, waits=waits)
