"""Where the payload runs. A runtime maps host paths into its own view and runs one job to its exit code.

    runtime.prepare()                      # engine, image, interpreter: raise EnvironmentProblem when unusable
    path_in_runtime = runtime.view(path)   # how the payload sees a host path
    code = runtime.run(job_file, on_line)  # stream every output line to on_line(stream, text); return exit code
    runtime.describe()                     # facts for run.json (image id, interpreter, ...)

`run` must leave nothing behind whatever happens, including an Interrupted raised by a signal handler.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from hostctl.errors import EnvironmentProblem
from hostctl.options import QuantizeOptions
from hostctl.signals import SignalTrap
from hostctl.ui import Reporter

LineSink = Callable[[str, str], None]

# quantize and demo have --runtime: there an engine or image problem has a way around (compile and doctor do not).
LOCAL_RUNTIME_HINT = "Or run without Docker: --runtime local."


def offer_local_runtime(problem: EnvironmentProblem) -> EnvironmentProblem:
    problem.hint = f"{problem.hint} {LOCAL_RUNTIME_HINT}" if problem.hint else LOCAL_RUNTIME_HINT
    return problem


class Runtime(Protocol):
    def prepare(self) -> None: ...

    def view(self, path: Path) -> str: ...

    def run(self, job_file: Path, on_line: LineSink) -> int: ...

    def describe(self) -> dict[str, Any]: ...


def create(opts: QuantizeOptions, run_dir: Path, reporter: Reporter, trap: SignalTrap) -> Runtime:
    if opts.runtime == "local":
        from hostctl.runtime.local import LocalRuntime

        return LocalRuntime(opts, run_dir, reporter, trap)
    from hostctl.runtime.docker import DockerRuntime  # imports the docker SDK only when it is needed

    return DockerRuntime(opts, run_dir, reporter, trap, offer_local=True)
