"""The console script's entry (`hostctl`) and `python -m hostctl`."""

import sys


def main() -> None:
    from hostctl import ssh_login, warm

    # before typer's import: a local inspection's payload starts now (hostctl/warm.py), and so does the login to
    # an ssh:// engine (hostctl/ssh_login.py)
    warm.start(sys.argv[1:])
    ssh_login.start(sys.argv[1:])
    from hostctl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
