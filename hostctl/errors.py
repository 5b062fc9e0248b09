"""One exception tree. Each error carries its exit code and the next step for the user.

The CLI catches HostctlError once, at the top, and prints `error: <message>` plus the hint on one line each;
tracebacks appear only with --debug.
"""

from __future__ import annotations

EXIT_RUN = 1
EXIT_USAGE = 2
EXIT_ENV = 3
EXIT_SIGNAL_BASE = 128


class HostctlError(Exception):
    exit_code = EXIT_RUN

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}. {self.hint}"


class UsageError(HostctlError):
    """Bad options or invalid inputs, found before anything runs."""

    exit_code = EXIT_USAGE


class InputError(UsageError):
    """An input file that cannot be used; the message names the file."""

    def __init__(self, path, problem: str, hint: str | None = None) -> None:
        super().__init__(f"{path}: {problem}", hint)
        self.path = path


class EnvironmentProblem(HostctlError):
    """The machine cannot run the job: engine unreachable, image missing, permissions."""

    exit_code = EXIT_ENV


class RunFailed(HostctlError):
    """The payload ran and failed, died, or left outputs missing; the hint carries the log's last lines."""

    exit_code = EXIT_RUN
    disk_full = False


def io_error(exc: OSError, doing: str = "writing") -> RunFailed:
    """An I/O error as one line: what failed, on which file, and that earlier results are intact."""
    import errno

    what = (exc.strerror or str(exc)).lower()
    where = f" {doing} {exc.filename}" if exc.filename else ""
    hint = {errno.ENOSPC: "Free some space on that disk and run again.",
            errno.EDQUOT: "Free some space within your quota and run again.",
            errno.EROFS: "Choose an --output-dir on a writable file system.",
            errno.EACCES: "Check the permissions of that path.",
            errno.EIO: "Check the disk: the system reported an I/O error."}.get(exc.errno)
    failed = RunFailed(f"{what}{where}; earlier results are intact", hint)
    failed.disk_full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return failed


class Interrupted(HostctlError):
    """A signal ended the run; cleanup already happened."""

    def __init__(self, signum: int, outcome: str = "the run was stopped and cleaned up, earlier results are intact"
                 ) -> None:
        import signal

        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name}; {outcome}")
        self.signum = signum
        self.exit_code = EXIT_SIGNAL_BASE + signum
