"""--help that reads at 80 columns: each option's names on one line, its help below at the full width, and its
default and environment variable whole, each on a line of its own.

Typer lays options out as a table whose last column, at 80 columns, is about 40 characters wide: there it cut
defaults and variable names with `…` (the default image's name, the default directories) and printed type labels
such as `<bool>` and `<list[Path]>`. Only the options panels change; typer still prints the usage, the command's
help, the commands panel and the examples.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer.core

from hostctl.ui import OptionHelp, print_options_panel

# Metavars for options that name none: a word for what to type, not a Python type (typer's own click names the
# type `int`, `Path`, `list[Path]`; click's `integer`, `path`).
_TYPE_WORDS = {"int": "N", "integer": "N", "float": "NUMBER", "path": "PATH", "str": "TEXT", "text": "TEXT"}


def install() -> None:
    """Our options panel in typer's help. typer.rich_utils (with rich's markdown, syntax and traceback modules, a
    seventh of a second) is imported only when help is printed, not on every command's start."""
    for cls in (typer.core.TyperCommand, typer.core.TyperGroup):
        cls.format_help = _with_our_panel(cls.format_help)  # type: ignore[method-assign]


def _with_our_panel(format_help: Any) -> Any:
    def wrapped(self: Any, ctx: Any, formatter: Any) -> Any:
        from typer import rich_utils

        rich_utils._print_options_panel = _print_options_panel  # type: ignore[assignment]
        return format_help(self, ctx, formatter)

    return wrapped


def reflow_docstrings(app: typer.Typer) -> None:
    """Typer keeps a docstring's line breaks (rich markup mode), so a command's help broke where its source line
    did, not at the terminal's width: each paragraph becomes one line, which rich then wraps."""
    for info in app.registered_commands:
        callback = info.callback
        if callback is not None and callback.__doc__:
            paragraphs = inspect.cleandoc(callback.__doc__).split("\n\n")
            callback.__doc__ = "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def option_help(param: Any, ctx: Any, markup_mode: Any) -> OptionHelp:
    """What the panel shows of one click parameter, as plain strings (and typer's rendering of its help)."""
    is_argument = isinstance(param, typer.core.TyperArgument)
    if is_argument:
        names = param.metavar or param.name.upper()
    else:
        names = ", ".join(param.opts)
        if param.secondary_opts:
            names += " / " + ", ".join(param.secondary_opts)
        metavar = _metavar(param)
        if metavar:
            names += f" {metavar}"
    from typer import rich_utils

    help_text = rich_utils._make_rich_text(text=param.help, style=rich_utils.STYLE_OPTION_HELP,
                                                 markup_mode=markup_mode) if param.help else None
    notes = []
    envvar = getattr(param, "envvar", None)
    if envvar and getattr(param, "show_envvar", True):
        notes.append(f"[env var: {envvar if isinstance(envvar, str) else ', '.join(envvar)}]")
    default = _default(param, ctx)
    if default:
        notes.append(f"[default: {default}]")
    if param.required:
        notes.append("[required]")
    return OptionHelp(names=names, help=help_text, notes=tuple(notes))


def _metavar(param: Any) -> str:
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if param.metavar:
        return str(param.metavar)
    bare = param.bare_type() if hasattr(param, "bare_type") else getattr(getattr(param, "type", None), "name", "")
    bare = str(bare).lower()
    if bare.startswith("list[") or bare.startswith("tuple["):
        bare = bare[bare.index("[") + 1:].split(",")[0].rstrip("]")
    word = _TYPE_WORDS.get(bare, "VALUE")
    return " ".join([word] * param.nargs) if param.nargs > 1 else word


def _default(param: Any, ctx: Any) -> str:
    show = getattr(param, "show_default", None)
    if isinstance(show, str):
        return show
    if show is False or (show is None and not ctx.show_default):
        return ""
    value = param._extract_default_help_str(ctx=ctx)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) and not value:
        return ""
    if isinstance(value, (list, tuple)) and getattr(param, "nargs", 1) > 1:  # as typed: --input-size 3 512 512
        return " ".join(str(v) for v in value)
    text = param._get_default_string(ctx=ctx, show_default_is_str=False, default_value=value)
    return "" if text in ("None", "[]", "()") else text


def _print_options_panel(*, name: str, params: list[Any], ctx: Any, markup_mode: Any, console: Any) -> None:
    if params:
        print_options_panel(console, name, [option_help(p, ctx, markup_mode) for p in params])
