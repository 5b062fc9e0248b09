"""Every verb's --help reads at 80 columns as at 200: nothing cut with `…`, no line wider than the terminal, each
default and environment variable whole on one line, no Python type labels, and each example on a line of its own
(examples are copied and run: one wrapped inside its comment or its command is not)."""

from __future__ import annotations

import re

import pytest
import typer.main
from helpers import hostctl_inprocess

from hostctl.cli import app

COMMANDS = ("quantize", "prepare", "evaluate", "compile", "demo", "doctor", "clean", "diff", "inspect")
TYPE_LABELS = re.compile(r"<(bool|str|int|float|path|list\[[^>]*\]|tuple\[[^>]*\])>", re.IGNORECASE)


def command(name: str):
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def expected_default(param) -> str | None:
    """The default as the user types it, for options whose default is a value (not a flag's off)."""
    if getattr(param, "is_flag", False) or param.default is None or getattr(param, "show_default", True) is False:
        return None
    value = param.default
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) if value else None
    return str(value)


def example_lines(name: str) -> list[str]:
    """The indented lines of the examples: commands, their continuation lines and comments."""
    epilog = command(name).epilog or ""
    plain = re.sub(r"\[/?[a-z ]*\]", "", epilog)
    return [line.strip() for line in plain.splitlines() if line.startswith("  ") and line.strip()]


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("name", COMMANDS)
def test_help_reads_whole(name, columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.delenv("TERMINAL_WIDTH", raising=False)
    code, out, err = hostctl_inprocess([name, "--help"], capsys)
    assert code == 0, err
    text = out + err
    lines = text.splitlines()
    assert "…" not in text
    assert all(len(line.rstrip()) <= columns for line in lines), \
        "\n".join(line for line in lines if len(line.rstrip()) > columns)
    assert not TYPE_LABELS.search(text), TYPE_LABELS.search(text)
    for param in command(name).params:
        default = expected_default(param)
        if default is not None:
            assert any(f"[default: {default}]" in line for line in lines), (param.name, default)
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            assert any(f"[env var: {envvar}]" in line for line in lines), (param.name, envvar)
    squeezed = [" ".join(line.split()) for line in lines]
    for example in example_lines(name):
        assert any(" ".join(example.split()) in line for line in squeezed), f"example cut: {example}"


def test_command_help_breaks_where_the_terminal_does_not_where_the_source_did():
    for name in COMMANDS:
        help_text = command(name).help or ""
        for paragraph in help_text.split("\n\n"):
            assert "\n" not in paragraph or paragraph.startswith("\b"), (name, paragraph)


@pytest.mark.parametrize("columns", [80, 200])
def test_the_command_list_reads_whole(columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    code, out, err = hostctl_inprocess(["--help"], capsys)
    assert code == 0, err
    assert "…" not in out + err
    assert all(len(line.rstrip()) <= columns for line in (out + err).splitlines())
