"""hostctl diff"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hostctl.cli import app
from hostctl.cli.common import JsonOutput
from hostctl.errors import InputError
from hostctl.quantinfo_diff import QuantInfoError, SectionDiff, diff_files
from hostctl.ui import Reporter, print_json

EXAMPLES = """
[bold]Examples[/]

  hostctl diff portable-results vai-results    [dim]# two output directories[/]
  hostctl diff a/quant_info.json b/quant_info.json --exit-code
"""
SHOWN = 20


def _quant_info(path: Path) -> Path:
    return path / "quant_info.json" if path.is_dir() else path


def _agreeing(section: SectionDiff) -> str:
    if section.common:
        return f"{section.equal} ({section.match_ratio:.1%})"
    return "none shared" if section.only_a or section.only_b else "-"


@app.command(epilog=EXAMPLES)
def diff(
    a: Annotated[Path, typer.Argument(help="quant_info.json, or a results directory holding one.")],
    b: Annotated[Path, typer.Argument(help="The other one.")],
    exit_code: Annotated[bool, typer.Option("--exit-code", help="Exit 1 when the fix positions differ.")] = False,
    json_output: JsonOutput = False,
) -> None:
    """Compare two quant_info.json files tensor by tensor: e.g. the portable quantizer against vai_q_pytorch."""
    path_a, path_b = _quant_info(a), _quant_info(b)
    try:
        result = diff_files(path_a, path_b)
    except QuantInfoError as exc:
        raise InputError(path_a if str(path_a) in str(exc) else path_b, str(exc).split(": ", 1)[-1],
                         "Pass two quant_info.json files written by hostctl or pytorch_nndct.") from exc
    if json_output:
        print_json(result.to_dict())
    reporter = Reporter()
    reporter.table(f"{path_a} vs {path_b}", ["section", "in both", "same fix position", "only in A", "only in B"],
                   [(name, s.common, _agreeing(s), len(s.only_a), len(s.only_b))
                    for name, s in result.sections.items()])
    if not any(s.common for s in result.sections.values()):
        reporter.warn("the two files share no tensor name: they quantize different models (or graphs), so there "
                      "are no fix positions to compare")
    rows = [(m.section, m.name, m.a, m.b) for s in result.sections.values() for m in s.differ]
    if rows:
        reporter.table("differing tensors" + (f" (first {SHOWN} of {len(rows)})" if len(rows) > SHOWN else ""),
                       ["section", "tensor", "A [bits, fp]", "B [bits, fp]"], rows[:SHOWN])
    for key, (va, vb) in result.metadata.items():
        reporter.info(f"{key}: {va!r} vs {vb!r}")
    if result.identical:
        reporter.success("same tensors, same fix positions")
    if exit_code and not result.identical:
        raise typer.Exit(1)
