"""The layer analysis on the host: layers.json read back, its summary for run.json, the five tensors that cost
the most in the terminal, and the plot of SQNR along the network for the report (issue 21).

The payload writes layers.json (container_payload/backends/portable/analysis.py) after a portable or hybrid run;
the vai quantizer (nndct alone) has no analysis, and the terminal says so once.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from container_payload.job import LAYERS
from hostctl.errors import RunFailed

ANALYSED_BACKENDS = ("portable", "hybrid")
SHOWN = 5
SQNR_PLOT = "layers_sqnr.png"  # in the run's report/
_ACT_COLOUR = "#4a6fa5"
_PARAM_COLOUR = "#9aa5b1"
_OWN_COLOUR = "#f28e2b"
_WORST_COLOUR = "#d62728"


def expected(analyze_samples: int | None, backend: str) -> bool:
    """Whether a run with this --analyze-samples that took this path writes layers.json."""
    return analyze_samples != 0 and backend in ANALYSED_BACKENDS


def read_layers(path: Path) -> dict[str, Any]:
    """layers.json as the payload wrote it; a file that cannot be read fails the run (the payload wrote it)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc["tensors"], list):
            raise TypeError("no list of tensors")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunFailed(f"{LAYERS} cannot be read ({exc})", "The run's files are kept in the failed-run "
                        "directory; --analyze-samples 0 skips the analysis.") from exc
    return doc


def sources_on_the_host(doc: dict[str, Any], inside: str, host: Path) -> bool:
    """The user's lines as this machine names them, in place: the payload saw the model's directory at `inside`
    (a container's mount). Returns whether any changed."""
    prefix = inside.rstrip("/") + "/"
    changed = False
    for t in doc["tensors"]:
        source = t.get("source")
        if isinstance(source, str) and source.startswith(prefix) and not str(host).startswith(inside):
            t["source"] = str(host / source[len(prefix):])
            changed = True
    return changed


def tensor_label(t: dict[str, Any]) -> str:
    """A tensor as the tables and the plot name it: nndct's name without the model's prefix (`nndct_relu_5`,
    `stem.0.weight`), with the tensor's index for one of a list-valued output."""
    name = str(t["name"]).split("::", 1)[-1]
    return name if t.get("index") is None else f"{name}:{t['index']}"


def where(t: dict[str, Any]) -> str:
    """The module path a user recognises, or, for an op of a forward's own code, that code's file and line."""
    if t.get("module"):
        return str(t["module"])
    if t.get("kind") == "input":
        return "(input)"
    source = t.get("source")
    if source:
        path, _, line = str(source).rpartition(":")
        return f"{os.path.basename(path)}:{line}" if path else str(source)
    return "(model)"


def worst(doc: dict[str, Any], count: int = SHOWN) -> list[dict[str, Any]]:
    """The tensors whose quantization alone costs the most (highest own_noise_ms), in that order."""
    ranked = [t for t in doc["tensors"] if t.get("own_noise_ms") is not None]
    ranked.sort(key=lambda t: (-t["own_noise_ms"], t.get("depth") or 0))
    return ranked[:count]


def summary(doc: dict[str, Any]) -> dict[str, Any]:
    """What run.json (`layers`) and --json keep of layers.json: the counts, the cost and the five worst."""
    keep = ("name", "index", "kind", "module", "source", "op", "fix_pos", "sqnr_db", "clipped", "own_sqnr_db",
            "own_changed")
    return {"file": LAYERS, "tensors": len(doc["tensors"]), "samples": doc.get("samples"),
            "own_error_samples": (doc.get("own_error") or {}).get("samples"),
            "output_sqnr_db": (doc.get("output") or {}).get("sqnr_db"), "cost": doc.get("cost"),
            "worst": [{k: t.get(k) for k in keep} for t in worst(doc)]}


def _db(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def _fraction(value: float | None) -> str:
    if value is None:
        return ""
    return "0" if value == 0 else f"{value:.2%}" if value >= 1e-4 else "<0.01%"


def render_worst(doc: dict[str, Any], reporter) -> None:  # noqa: ANN001 - hostctl.ui.Reporter
    """The five tensors that cost the most, with the module path, then the analysis's scope and cost."""
    rows = [(tensor_label(t), where(t), "" if t.get("fix_pos") is None else str(t["fix_pos"]),
             _db(t.get("own_sqnr_db")), _db(t.get("sqnr_db")), _fraction(t.get("clipped"))) for t in worst(doc)]
    own = (doc.get("own_error") or {}).get("samples")
    if rows:
        reporter.table(f"Tensors that cost the most (each alone, on {_count(own, 'sample')})",
                       ("tensor", "module", "fp", "alone dB", "SQNR dB", "clipped"), rows)
    cost = doc.get("cost") or {}
    out = (doc.get("output") or {}).get("sqnr_db")
    passes = cost.get("float_passes")
    seconds = float(cost.get("seconds") or 0.0)
    reporter.info(f"layer analysis: {_count(len(doc['tensors']), 'tensor')}, {_count(doc.get('samples'), 'sample')}; "
                  f"all quantized: output SQNR {_db(out)} dB")
    reporter.info(f"it took {seconds:.{1 if seconds >= 10 else 2}f} s"
                  + (f" ({passes:.1f} float passes)" if passes is not None else "") + f"; every tensor is in {LAYERS}")


def _count(n: int | None, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def render_unavailable(backend: str, reporter) -> None:  # noqa: ANN001 - hostctl.ui.Reporter
    reporter.info(f"the {backend} quantizer has no layer analysis (--quantizer portable or hybrid has one)")


def draw_sqnr(doc: dict[str, Any], path: Path) -> None:
    """SQNR along the network's depth: each activation's (whole model quantized) and each weight's, the output
    SQNR with that tensor alone quantized, and the five worst named."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tensors = doc["tensors"]
    figure = Figure(figsize=(10, 4.8), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()

    def series(kinds: tuple[str, ...], key: str) -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for t in tensors:
            if t["kind"] in kinds and t.get(key) is not None and math.isfinite(t[key]):
                xs.append(t["depth"])
                ys.append(t[key])
        return xs, ys

    xs, ys = series(("input", "activation"), "sqnr_db")
    axes.plot(xs, ys, "-o", color=_ACT_COLOUR, markersize=3, linewidth=1.2,
              label="activation SQNR, whole model quantized")
    xs, ys = series(("weight",), "sqnr_db")
    axes.plot(xs, ys, "s", color=_PARAM_COLOUR, markersize=3, label="weight SQNR")
    xs, ys = series(("input", "activation", "weight", "bias"), "own_sqnr_db")
    axes.plot(xs, ys, "^", color=_OWN_COLOUR, markersize=4,
              label="output SQNR with this tensor alone quantized")
    for rank, t in enumerate(worst(doc), 1):
        y = t["own_sqnr_db"]
        if y is None:
            continue
        axes.plot([t["depth"]], [y], "o", markersize=9, markerfacecolor="none", markeredgecolor=_WORST_COLOUR)
        axes.annotate(f"{rank}. {tensor_label(t)}", (t["depth"], y), textcoords="offset points",
                      xytext=(6, -12 if rank % 2 else 8), fontsize=8, color=_WORST_COLOUR)
    out = (doc.get("output") or {}).get("sqnr_db")
    if out is not None:
        axes.axhline(out, color="black", linewidth=0.8, linestyle="--", label=f"model output SQNR {out:.1f} dB")
    axes.set_xlabel("depth (the ops that make quantized tensors, in execution order)")
    axes.set_ylabel("SQNR (dB)")
    axes.set_title(f"Where quantization loses accuracy: {doc.get('model', '')}, {doc.get('samples')} samples")
    axes.grid(alpha=0.3)
    figure.legend(loc="outside lower center", ncols=2, frameon=False, fontsize=8)
    figure.savefig(path)


def report_section(doc: dict[str, Any]) -> str:
    """The report's section on the layer analysis: the plot and the five worst tensors as a table."""
    import html

    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in (
            tensor_label(t), where(t), "" if t.get("fix_pos") is None else str(t["fix_pos"]),
            _db(t.get("own_sqnr_db")), _fraction(t.get("own_changed")), _db(t.get("sqnr_db")),
            _fraction(t.get("clipped")))) + "</tr>" for t in worst(doc))
    own = doc.get("own_error") or {}
    cost = doc.get("cost") or {}
    note = (f"{len(doc['tensors'])} quantized tensors measured on {doc.get('samples')} test samples; the error each "
            f"adds alone (everything else float) on the first {own.get('samples')}. The analysis took "
            f"{cost.get('seconds', 0):.1f} s. Every tensor is in {LAYERS}.")
    return f"""<h2>Where quantization loses accuracy</h2>
<p class="dim">{html.escape(note)}</p>
<img src="{SQNR_PLOT}" alt="SQNR of every quantized tensor along the network's depth">
<table><tr><th>tensor</th><th>module</th><th>fix pos</th><th>output SQNR, alone (dB)</th>
<th>argmax changed, alone</th><th>SQNR (dB)</th><th>clipped</th></tr>
{rows}
</table>
"""
