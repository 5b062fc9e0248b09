"""The command line read before the CLI parses it (hostctl/warm.py, hostctl/ssh_login.py): standard library only.

A wrong guess here only costs work started ahead of time that goes unused; the CLI parses the options for real.
"""

from __future__ import annotations


def last_value(argv: list[str], option: str) -> str | None:
    """The value of the last `option VALUE` or `option=VALUE` in argv, as click takes it."""
    value = None
    for i, arg in enumerate(argv):
        if arg == option and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(option + "="):
            value = arg[len(option) + 1:]
    return value
