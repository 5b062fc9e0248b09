"""The console script's entry (`hostctl`) and `python -m hostctl`."""

import sys


def main() -> None:
    from hostctl import warm

    warm.start(sys.argv[1:])  # before typer's import: a local inspection's payload starts now (hostctl/warm.py)
    from hostctl.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
