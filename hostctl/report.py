"""The run's pictures: previews of a few samples, per-class IoU bars and an index.html that shows both.

Previews are drawn with Pillow at integer scale and nearest-neighbour resampling, so that every mask pixel is a
real prediction. The bar chart uses matplotlib's object API with the Agg canvas (no pyplot, no global backend),
imported only here and only when a report is written.
"""

from __future__ import annotations

import html
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from container_payload.job import FLOAT_PREDS, LAYERS, QUANT_PREDS
from hostctl.evaluate import (
    LABELS_GROUP,
    METRICS,
    TEST_GROUP,
    Metrics,
    evaluate,
    infer_num_classes,
    metric_rows,
    write_metrics,
)

REPORT_DIR = "report"  # a run's report directory, inside its output directory
PREVIEWS = "previews.png"
PER_CLASS_IOU = "per_class_iou.png"
INDEX = "index.html"

# Mask colours: fixed and distinct, so that a class has the same colour in every picture (the demo's mask PNGs use
# them too); classes beyond the list reuse it cyclically.
PALETTE = (
    (40, 40, 40),      # background: near black
    (230, 25, 75),     # red
    (60, 180, 75),     # green
    (0, 130, 200),     # blue
    (255, 225, 25),    # yellow
    (145, 30, 180),    # purple
    (70, 240, 240),    # cyan
    (245, 130, 48),    # orange
    (240, 50, 230),    # magenta
    (210, 245, 60),    # lime
    (250, 190, 212),   # pink
    (0, 128, 128),     # teal
)

_TILE_MIN = 160  # previews are scaled up by an integer factor until a tile is at least this many pixels wide
_TILE_MAX = 320
_GAP = 6
_DISAGREE = np.array((255, 0, 160), dtype=np.uint8)
_FLOAT_COLOUR = "#4a6fa5"
_QUANT_COLOUR = "#f28e2b"


def write_report(metrics: Metrics, samples: Path, float_preds: Path, quant_preds: Path, out_dir: Path,
                 max_previews: int = 4, about: Mapping[str, str] | None = None,
                 layers: Mapping[str, Any] | None = None) -> list[Path]:
    """Write out_dir/{previews.png, per_class_iou.png, index.html}; returns the files written. `about` names what
    was quantized (model, quantizer, run, samples: run_facts), so that a report read on its own says what it shows.
    `layers` (layers.json's content, portable and hybrid runs) adds the plot of SQNR along the network's depth.

    out_dir is the report directory itself (a run's `report/`). It is built beside its final place and swapped
    in whole, so a reader never sees a mix of an old and a new report. Without labels the bar chart is left out:
    there is no IoU to draw.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(out_dir, "tmp")
    staging.mkdir()
    try:
        names = _preview_names(metrics, quant_preds, max_previews)
        _draw_previews(names, metrics, samples, float_preds, quant_preds).save(staging / PREVIEWS)
        written = [PREVIEWS]
        if metrics.has_labels:
            _draw_per_class_iou(metrics, staging / PER_CLASS_IOU)
            written.append(PER_CLASS_IOU)
        section = ""
        if layers is not None:
            from hostctl.layers import SQNR_PLOT, draw_sqnr, report_section

            draw_sqnr(layers, staging / SQNR_PLOT)
            written.append(SQNR_PLOT)
            section = report_section(layers)
        (staging / INDEX).write_text(_index_html(metrics, names, written, about or {}, section), encoding="utf-8")
        written.append(INDEX)
        _swap_in(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / name for name in written]


def _sibling(path: Path, kind: str) -> Path:
    # A unique name and a plain mkdir rather than mkdtemp: the directory gets the umask's mode, not 0700.
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.{kind}"


def _swap_in(staging: Path, final: Path) -> None:
    if final.exists():
        old = _sibling(final, "old")
        os.replace(final, old)
        os.replace(staging, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, final)


def _preview_names(metrics: Metrics, quant_preds: Path, count: int) -> list[str]:
    """Half the rows where float and quantized disagree most, the rest spread evenly over the test set."""
    with h5py.File(quant_preds, "r") as file:
        all_names = list(file.keys())
    count = min(count, len(all_names))
    chosen = list(metrics.most_disagreeing[: count // 2])
    spread = np.linspace(0, len(all_names) - 1, num=count).round().astype(int)
    for index in spread:
        if len(chosen) == count:
            break
        if all_names[index] not in chosen:
            chosen.append(all_names[index])
    for name in all_names:  # the evenly spaced picks may have collided with the worst ones
        if len(chosen) == count:
            break
        if name not in chosen:
            chosen.append(name)
    return chosen


def display_image(sample: np.ndarray) -> np.ndarray:
    """A preprocessed [C,H,W] float sample -> [H,W,3] uint8, undoing any normalization by min-max scaling."""
    channels = sample if sample.shape[0] in (1, 3) else sample[:3] if sample.shape[0] > 3 else sample[:1]
    low, high = float(channels.min()), float(channels.max())
    scaled = (channels - low) / (high - low) if high > low else np.zeros_like(channels)
    rgb = np.repeat(scaled, 3, axis=0) if scaled.shape[0] == 1 else scaled
    return (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def colourize(mask: np.ndarray) -> np.ndarray:
    """[H,W] class indices -> [H,W,3] uint8 colours from PALETTE."""
    lut = np.array(PALETTE, dtype=np.uint8)
    return lut[mask.astype(np.int64) % len(PALETTE)]


def _draw_previews(names: list[str], metrics: Metrics, samples: Path, float_preds: Path,
                   quant_preds: Path) -> Image.Image:
    columns = ["input", "label", "float", "quantized", "where they differ"]
    if not metrics.has_labels:
        columns.remove("label")
    rows: list[tuple[str, list[np.ndarray]]] = []
    with h5py.File(samples, "r") as smp, h5py.File(float_preds, "r") as flt, h5py.File(quant_preds, "r") as qnt:
        for name in names:
            f_map = flt[name][0].argmax(axis=0)
            q_map = qnt[name][0].argmax(axis=0)
            test = smp.get(TEST_GROUP)
            image = display_image(test[name][()]) if test is not None and name in test else None
            image = _fit(image, f_map.shape) if image is not None else np.full((*f_map.shape, 3), 128, np.uint8)
            differ = f_map != q_map
            grey = image.mean(axis=2, keepdims=True).repeat(3, axis=2) * 0.45
            disagreement = np.where(differ[..., None], _DISAGREE, grey.astype(np.uint8))
            tiles = [image]
            if metrics.has_labels:
                tiles.append(colourize(smp[LABELS_GROUP][name][()]))
            tiles += [colourize(f_map), colourize(q_map), disagreement]
            caption = f"{name}   float/quantized agree on {1 - differ.mean():.2%} of pixels"
            rows.append((caption, tiles))
    return _grid(columns, rows, metrics.num_classes)


def _fit(image: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resize the input picture to the prediction's size when a model predicts at another resolution."""
    if image.shape[:2] == tuple(shape):
        return image
    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def _grid(columns: list[str], rows: list[tuple[str, list[np.ndarray]]], num_classes: int) -> Image.Image:
    height, width = rows[0][1][0].shape[:2] if rows else (64, 64)
    factor = max(1, -(-_TILE_MIN // width))
    tile_w, tile_h = width * factor, height * factor
    if tile_w > _TILE_MAX:  # only when the model's own output is wider: scale it down instead of up
        tile_h, tile_w = max(1, round(height * _TILE_MAX / width)), _TILE_MAX
    font = ImageFont.load_default(size=14)
    small = ImageFont.load_default(size=12)
    header_h, caption_h, legend_h = 24, 20, 34
    canvas_w = _GAP + len(columns) * (tile_w + _GAP)
    canvas_h = header_h + len(rows) * (caption_h + tile_h + _GAP) + legend_h
    canvas = Image.new("RGB", (canvas_w, canvas_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, title in enumerate(columns):
        draw.text((_GAP + i * (tile_w + _GAP) + tile_w / 2, header_h / 2), title, fill="black", font=font,
                  anchor="mm")
    y = header_h
    for caption, tiles in rows:
        draw.text((_GAP, y + caption_h / 2), caption, fill=(90, 90, 90), font=small, anchor="lm")
        y += caption_h
        for i, tile in enumerate(tiles):
            picture = Image.fromarray(tile).resize((tile_w, tile_h), Image.NEAREST)
            canvas.paste(picture, (_GAP + i * (tile_w + _GAP), y))
        y += tile_h + _GAP
    x = _GAP
    for k in range(num_classes):
        colour = PALETTE[k % len(PALETTE)]
        draw.rectangle((x, y + 8, x + 16, y + 24), fill=colour, outline=(0, 0, 0))
        label = f"class {k}"
        draw.text((x + 22, y + 16), label, fill="black", font=small, anchor="lm")
        x += 22 + int(draw.textlength(label, font=small)) + 14
    draw.rectangle((x, y + 8, x + 16, y + 24), fill=tuple(int(c) for c in _DISAGREE), outline=(0, 0, 0))
    draw.text((x + 22, y + 16), "float vs quantized differ", fill="black", font=small, anchor="lm")
    return canvas


def _draw_per_class_iou(metrics: Metrics, path: Path) -> None:
    """Float and quantized IoU side by side, and below them the change in points, where quantization shows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    assert metrics.float is not None and metrics.quantized is not None
    classes = np.arange(metrics.num_classes)
    f_iou = np.array([np.nan if v is None else v for v in metrics.float.per_class_iou])
    q_iou = np.array([np.nan if v is None else v for v in metrics.quantized.per_class_iou])
    figure = Figure(figsize=(max(6.0, 0.75 * metrics.num_classes + 2), 5.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes, delta_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1.2))
    bar = 0.38
    for offset, values, label, colour in (
            (-bar / 2, f_iou, f"float (mIoU {metrics.float.miou:.3f})", _FLOAT_COLOUR),
            (bar / 2, q_iou, f"quantized (mIoU {metrics.quantized.miou:.3f})", _QUANT_COLOUR)):
        bars = axes.bar(classes + offset, values, bar, label=label, color=colour)
        if metrics.num_classes <= 12:  # beyond that the numbers overlap; the bars alone still read
            axes.bar_label(bars, labels=["" if np.isnan(v) else f"{v:.2f}" for v in values], fontsize=7,
                           padding=2)
    for k in classes:
        if np.isnan(f_iou[k]) and np.isnan(q_iou[k]):
            axes.text(k, 0.02, "absent", ha="center", va="bottom", fontsize=8, color="grey", rotation=90)
    axes.set_ylim(0, 1.1)
    axes.set_ylabel("IoU")
    axes.set_title("Per-class IoU, float vs quantized")
    figure.legend(loc="outside lower center", ncols=2, frameon=False)

    delta = (q_iou - f_iou) * 100
    delta_axes.bar(classes, np.nan_to_num(delta), 0.6, color=np.where(delta < 0, "#d62728", "#2ca02c"))
    delta_axes.axhline(0, color="black", linewidth=0.8)
    limit = max(1.0, float(np.nanmax(np.abs(delta))) * 1.25) if np.isfinite(delta).any() else 1.0
    delta_axes.set_ylim(-limit, limit)
    delta_axes.set_ylabel("quantized - float\n(IoU points)")
    delta_axes.set_xticks(classes, [f"class {k}" for k in classes], rotation=30 if metrics.num_classes > 10 else 0)
    for ax in (axes, delta_axes):
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    figure.savefig(path)


def run_facts(options: Mapping[str, Any], backend: str | None, run_id: str | None,
              samples: Path | str | None) -> dict[str, str]:
    """What a report names: the model with its arguments, the quantizer that ran, the run, the samples file."""
    model = str(options.get("model") or "")
    args = options.get("model_args") or {}
    if args:
        model += " (" + ", ".join(f"{k}={v}" for k, v in args.items()) + ")"
    facts = {"model": model, "quantizer": backend or str(options.get("quantizer") or ""), "run": run_id or "",
             "samples": str(samples or "")}
    return {k: v for k, v in facts.items() if v}


def _index_html(metrics: Metrics, names: list[str], written: list[str], about: Mapping[str, str],
                layers_section: str = "") -> str:
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in metric_rows(metrics)
    )
    chart = (f'<h2>Per-class IoU</h2>\n<img src="{PER_CLASS_IOU}" alt="per-class IoU, float vs quantized">'
             if PER_CLASS_IOU in written else
             "<p>No labels in the samples file: IoU cannot be computed, only agreement and SQNR.</p>")
    summary = f"{metrics.num_samples} test samples, {metrics.num_classes} classes"
    if metrics.float is not None and metrics.quantized is not None:
        summary += (f"; mIoU float {metrics.float.miou:.4f}, quantized {metrics.quantized.miou:.4f} "
                    f"({metrics.quantized.miou - metrics.float.miou:+.4f})")
    summary += f"; agreement {metrics.agreement:.2%}"
    shown = ", ".join(html.escape(n) for n in names)
    worst = [n for n in names if n in metrics.most_disagreeing]
    order = (f"The first {len(worst)} are where the two models disagree most; the rest are spread over the test set."
             if worst else "They are spread evenly over the test set.")
    named = ", ".join(about[k] for k in ("model", "quantizer", "run") if k in about)
    title = html.escape("hostctl quantization report" + (f": {named}" if named else ""))
    facts = "".join(f"<p class=\"dim\">{html.escape(k)}: {html.escape(v)}</p>\n" for k, v in about.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ padding: 0.3em 0.9em; border-bottom: 1px solid #ddd; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
img {{ max-width: 100%; border: 1px solid #eee; }}
.dim {{ color: #777; }}
</style></head>
<body>
<h1>Quantization report</h1>
{facts}<p>{html.escape(summary)}</p>
<h2>Metrics</h2>
<table><tr><th>metric</th><th>float</th><th>quantized</th><th>delta</th></tr>
{rows}
</table>
{chart}
{layers_section}<h2>Previews</h2>
<p class="dim">Samples: {shown}. {order}</p>
<img src="{PREVIEWS}" alt="input, label, float and quantized predictions, and where they disagree">
</body></html>
"""


@dataclass(frozen=True)
class Evaluation:
    """What `hostctl evaluate` (and the end of a quantize run) produced."""

    metrics: Metrics
    metrics_file: Path
    report_files: tuple[Path, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"metrics": self.metrics.to_dict(), "metrics_file": str(self.metrics_file),
                "report_files": [str(p) for p in self.report_files]}


def evaluate_run(samples: Path, results_dir: Path, num_classes: int | None, reporter,  # noqa: ANN001
                 report: bool = True, about: Mapping[str, str] | None = None) -> Evaluation:
    """Metrics of a results directory (its two prediction files) into its metrics.json and report/."""
    float_preds, quant_preds = results_dir / FLOAT_PREDS, results_dir / QUANT_PREDS
    if num_classes is None:
        num_classes = infer_num_classes(quant_preds)
    metrics = evaluate(samples, float_preds, quant_preds, num_classes, reporter)
    write_metrics(metrics, results_dir / METRICS)
    layers = None
    if report and (results_dir / LAYERS).is_file():
        from hostctl.errors import RunFailed
        from hostctl.layers import read_layers

        try:
            layers = read_layers(results_dir / LAYERS)
        except RunFailed as exc:
            reporter.warn(f"the report leaves out the layer analysis: {exc.message}")
    files = (write_report(metrics, samples, float_preds, quant_preds, results_dir / REPORT_DIR, about=about,
                          layers=layers) if report else [])
    return Evaluation(metrics=metrics, metrics_file=results_dir / METRICS, report_files=tuple(files))
