"""Segmentation metrics of the float and the quantized model, from the prediction files of a run.

One streaming pass: each test sample's predictions are read, reduced to class maps by argmax over the class axis,
and folded into confusion matrices, so memory does not grow with the number of samples. The labels come from the
`labels` group of the samples file; without it only the float/quantized agreement and the SQNR are reported.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hostctl.errors import InputError, RunFailed

METRICS = "metrics.json"
LABELS_GROUP = "labels"
TEST_GROUP = "test"
# How many of the samples where float and quantized disagree most are remembered for the report's previews.
WORST_KEPT = 8


@dataclass(frozen=True)
class ModelMetrics:
    """Label-based metrics of one model. per_class_iou[k] is None when class k is in neither labels nor predictions."""

    miou: float
    pixel_accuracy: float
    dice: float
    per_class_iou: tuple[float | None, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"miou": self.miou, "pixel_accuracy": self.pixel_accuracy, "dice": self.dice,
                "per_class_iou": list(self.per_class_iou)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMetrics:
        return cls(miou=data["miou"], pixel_accuracy=data["pixel_accuracy"], dice=data["dice"],
                   per_class_iou=tuple(data["per_class_iou"]))


@dataclass(frozen=True)
class Metrics:
    """What metrics.json holds. float/quantized are None without labels; sqnr_db is inf for identical outputs."""

    num_samples: int
    num_classes: int
    float: ModelMetrics | None
    quantized: ModelMetrics | None
    agreement: float
    sqnr_db: float
    # Not part of metrics.json: names of the samples where the two models disagree most, worst first, so the
    # report can show where quantization hurts without a second pass over the predictions.
    most_disagreeing: tuple[str, ...] = field(default=(), compare=False)

    @property
    def has_labels(self) -> bool:
        return self.float is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_samples": self.num_samples,
            "num_classes": self.num_classes,
            "float": self.float.to_dict() if self.float else None,
            "quantized": self.quantized.to_dict() if self.quantized else None,
            "agreement": self.agreement,
            # JSON has no infinity; null means the quantized outputs equal the float ones exactly.
            "sqnr_db": self.sqnr_db if math.isfinite(self.sqnr_db) else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        sqnr = data.get("sqnr_db")
        return cls(
            num_samples=data["num_samples"],
            num_classes=data["num_classes"],
            float=ModelMetrics.from_dict(data["float"]) if data.get("float") else None,
            quantized=ModelMetrics.from_dict(data["quantized"]) if data.get("quantized") else None,
            agreement=data["agreement"],
            sqnr_db=math.inf if sqnr is None else sqnr,
        )


def metrics_from_confusion(confusion: np.ndarray) -> ModelMetrics:
    """IoU, Dice and pixel accuracy from a [label, prediction] confusion matrix.

    A class counts towards the means when it occurs in the labels or the predictions; a class in neither would
    make IoU 0/0 and is left out (None) rather than scored as 0 or 1.
    """
    confusion = confusion.astype(np.float64)
    true_pos = np.diag(confusion)
    in_labels = confusion.sum(axis=1)
    in_preds = confusion.sum(axis=0)
    union = in_labels + in_preds - true_pos
    present = union > 0
    iou = np.divide(true_pos, union, out=np.zeros_like(true_pos), where=present)
    dice = np.divide(2 * true_pos, in_labels + in_preds, out=np.zeros_like(true_pos), where=present)
    total = confusion.sum()
    return ModelMetrics(
        miou=float(iou[present].mean()) if present.any() else 0.0,
        pixel_accuracy=float(true_pos.sum() / total) if total else 0.0,
        dice=float(dice[present].mean()) if present.any() else 0.0,
        per_class_iou=tuple(float(v) if p else None for v, p in zip(iou, present, strict=True)),
    )


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    flat = labels.astype(np.int64).ravel() * num_classes + preds.astype(np.int64).ravel()
    return np.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def infer_num_classes(preds: Path) -> int:
    """The class count of a prediction file: the channel axis of its first [1,C,H,W] dataset."""
    with _open(preds) as file:
        for name in file:
            return int(_prediction(file, name, preds).shape[1])
    raise InputError(preds, "holds no predictions", "Run `hostctl quantize` again to produce them.")


def evaluate(samples: Path, float_preds: Path, quant_preds: Path, num_classes: int, reporter=None) -> Metrics:  # noqa: ANN001
    """Compare float and quantized predictions with each other and, where the samples file has labels, with them."""
    with _open(quant_preds) as quant, _open(float_preds) as flt, _open(samples) as smp:
        names = list(quant.keys())
        if not names:
            raise InputError(quant_preds, "holds no predictions", "Run `hostctl quantize` again to produce them.")
        _check_names(names, list(flt.keys()), smp.get(TEST_GROUP), quant_preds, float_preds, samples)
        labels = smp.get(LABELS_GROUP)
        if labels is not None:
            unlabelled = [n for n in names if n not in labels]
            if unlabelled:
                raise InputError(samples, f"group '{LABELS_GROUP}' has no label for {_some(unlabelled)}",
                                 "Write one label per test sample, named like it, or drop the labels group.")

        float_cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        quant_cm = np.zeros_like(float_cm)
        agree = pixels = 0
        signal = noise = 0.0
        worst: list[tuple[int, str]] = []  # min-heap of (disagreeing pixels, name)
        if reporter is not None:
            reporter.start_task("evaluate", len(names), "Evaluating")
        for name in names:
            q = _prediction(quant, name, quant_preds)
            f = _prediction(flt, name, float_preds)
            if q.shape != f.shape:
                raise InputError(quant_preds, f"'{name}' has shape {q.shape} but the float prediction {f.shape}",
                                 "Both prediction files must come from the same run.")
            if q.shape[1] != num_classes:
                raise InputError(quant_preds, f"'{name}' has {q.shape[1]} classes, expected {num_classes}",
                                 "Pass the model's class count with --num-classes.")
            for pred, path in ((f, float_preds), (q, quant_preds)):
                if not np.isfinite(pred).all():
                    bad = int((~np.isfinite(pred)).sum())
                    raise RunFailed(f"{path}: prediction '{name}' holds {bad} NaN or Inf value{'s' * (bad > 1)}; "
                                    "no metric can be computed from it",
                                    "The model produced non-finite outputs: check the weights and the samples.")
            q64, f64 = q.astype(np.float64), f.astype(np.float64)
            signal += float(np.square(f64).sum())
            noise += float(np.square(q64 - f64).sum())
            q_map, f_map = q[0].argmax(axis=0), f[0].argmax(axis=0)
            differing = int((q_map != f_map).sum())
            agree += q_map.size - differing
            pixels += q_map.size
            if differing:
                item = (differing, name)
                heapq.heappush(worst, item) if len(worst) < WORST_KEPT else heapq.heappushpop(worst, item)
            if labels is not None:
                label = _label(labels, name, q_map.shape, num_classes, samples)
                float_cm += confusion_matrix(label, f_map, num_classes)
                quant_cm += confusion_matrix(label, q_map, num_classes)
            if reporter is not None:
                reporter.update_task("evaluate", advance=1)
        if reporter is not None:
            reporter.finish_task("evaluate")

    return Metrics(
        num_samples=len(names),
        num_classes=num_classes,
        float=metrics_from_confusion(float_cm) if labels is not None else None,
        quantized=metrics_from_confusion(quant_cm) if labels is not None else None,
        agreement=agree / pixels,
        sqnr_db=_sqnr_db(signal, noise),
        most_disagreeing=tuple(name for _, name in sorted(worst, reverse=True)),
    )


def _check_names(quant: list[str], flt: list[str], test: Any, quant_preds: Path, float_preds: Path,
                 samples: Path) -> None:
    """Both files predict the same samples, and those are the first test samples of the samples file (a run with
    --test-samples-limit N predicts the first N): metrics over fewer samples than the run had are refused, the
    sample named, as much as over samples it never had."""
    for path, lacks, other, has in ((float_preds, set(flt), quant_preds, quant),
                                    (quant_preds, set(quant), float_preds, flt)):
        missing = [n for n in has if n not in lacks]
        if missing:
            raise InputError(path, f"lacks predictions for {_some(missing)} found in {other.name}",
                             "Both prediction files must come from the same run: run `hostctl quantize` again.")
    if not isinstance(test, h5py.Group):
        return
    test_names = list(test.keys())
    unknown = [n for n in quant if n not in test]
    if unknown:
        raise InputError(quant_preds, f"holds predictions for {_some(unknown)}, which {samples.name} has no test "
                         "sample of", "Evaluate with the samples file the run used (--input-dir).")
    predicted = set(quant)
    skipped = [n for n in test_names[:len(quant)] if n not in predicted]
    if skipped:
        raise InputError(quant_preds, f"lacks predictions for test sample{'s' * (len(skipped) > 1)} "
                         f"{_some(skipped)} of {samples.name} ({len(quant)} of {len(test_names)} predicted)",
                         "Run `hostctl quantize` again to predict every test sample.")


def write_metrics(metrics: Metrics, path: Path) -> None:
    """Write metrics.json atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name opened with "x" rather than mkstemp: the file gets the umask's mode, not 0600.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            json.dump(metrics.to_dict(), handle, indent=2, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def metric_rows(metrics: Metrics) -> list[tuple[str, str, str, str]]:
    """The (metric, float, quantized, delta) rows shown by the terminal table and the HTML report."""
    rows: list[tuple[str, str, str, str]] = []
    if metrics.float is not None and metrics.quantized is not None:
        pairs = [("mIoU", metrics.float.miou, metrics.quantized.miou),
                 ("pixel accuracy", metrics.float.pixel_accuracy, metrics.quantized.pixel_accuracy),
                 ("Dice", metrics.float.dice, metrics.quantized.dice)]
        for k, (f, q) in enumerate(zip(metrics.float.per_class_iou, metrics.quantized.per_class_iou, strict=True)):
            pairs.append((f"IoU class {k}", f, q))
        for title, f, q in pairs:
            if f is None and q is None:
                rows.append((title, "absent", "absent", ""))
            else:
                rows.append((title, _fmt(f), _fmt(q), _delta(f, q)))
    rows.append(("float/quantized agreement", "", f"{metrics.agreement:.2%}", ""))
    sqnr = f"{metrics.sqnr_db:.1f} dB" if math.isfinite(metrics.sqnr_db) else "inf (identical)"
    rows.append(("SQNR of quantized outputs", "", sqnr, ""))
    return rows


def render_metrics(metrics: Metrics, reporter) -> None:  # noqa: ANN001 - hostctl.ui.Reporter
    title = f"Metrics over {metrics.num_samples} test samples"
    if not metrics.has_labels:
        title += " (no labels: agreement and SQNR only)"
    reporter.table(title, ("metric", "float", "quantized", "delta"), metric_rows(metrics))


def _fmt(value: float | None) -> str:
    return "absent" if value is None else f"{value:.4f}"


def _delta(f: float | None, q: float | None) -> str:
    return "" if f is None or q is None else f"{q - f:+.4f}"


def _sqnr_db(signal: float, noise: float) -> float:
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def _some(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise InputError(path, "does not exist", "Check the path, or run the step that writes it first.")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(path, f"is not a readable HDF5 file ({exc})", "Write it again.") from exc


def _prediction(file: h5py.File, name: str, path: Path) -> np.ndarray:
    item = file[name]
    if not isinstance(item, h5py.Dataset) or item.ndim != 4 or item.shape[0] != 1:
        shape = getattr(item, "shape", "a group")
        raise InputError(path, f"'{name}' is {shape}, not a [1,C,H,W] prediction",
                         "Write one raw model output per test sample.")
    return item[()]


def _label(group: h5py.Group, name: str, shape: tuple[int, ...], num_classes: int, path: Path) -> np.ndarray:
    label = group[name][()]
    if label.shape != shape:
        raise InputError(path, f"label '{name}' has shape {label.shape}, predictions {shape}",
                         "Labels must be [H,W] class maps at the model's output size.")
    if label.size and int(label.min()) < 0:
        raise InputError(path, f"label '{name}' holds negative class {int(label.min())}",
                         "Labels are class indices from 0 to num_classes - 1.")
    if label.size and int(label.max()) >= num_classes:
        raise InputError(path, f"label '{name}' holds class {int(label.max())}, but there are {num_classes} classes",
                         "Pass the right --num-classes or fix the labels.")
    return label
