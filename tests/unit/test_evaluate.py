"""Metrics on hand-built cases with known answers, the streaming evaluation over real HDF5 files, and the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import hostctl_inprocess, tree_snapshot

import hostctl.cli.evaluate  # noqa: F401 - registers the verb, whatever hostctl.cli imports
from container_payload.job import FLOAT_PREDS, QUANT_PREDS, SAMPLES
from hostctl.errors import InputError
from hostctl.evaluate import (
    Metrics,
    confusion_matrix,
    evaluate,
    metric_rows,
    metrics_from_confusion,
    render_metrics,
    write_metrics,
)
from hostctl.ui import Reporter


def cm(labels, preds, num_classes):
    return confusion_matrix(np.array(labels), np.array(preds), num_classes)


def test_perfect_prediction_scores_one():
    m = metrics_from_confusion(cm([0, 1, 2, 2], [0, 1, 2, 2], 3))
    assert (m.miou, m.pixel_accuracy, m.dice) == (1.0, 1.0, 1.0)
    assert m.per_class_iou == (1.0, 1.0, 1.0)


def test_all_wrong_scores_zero():
    m = metrics_from_confusion(cm([0, 0, 1, 1], [1, 1, 0, 0], 2))
    assert (m.miou, m.pixel_accuracy, m.dice) == (0.0, 0.0, 0.0)


def test_known_answer():
    # class 0: TP 1, FP 0, FN 1 -> IoU 1/2, Dice 2/3; class 1: TP 2, FP 1, FN 0 -> IoU 2/3, Dice 4/5.
    m = metrics_from_confusion(cm([0, 0, 1, 1], [0, 1, 1, 1], 2))
    assert m.per_class_iou == pytest.approx((0.5, 2 / 3))
    assert m.miou == pytest.approx(7 / 12)
    assert m.dice == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert m.pixel_accuracy == pytest.approx(3 / 4)


def test_class_absent_from_labels_and_predictions_is_left_out():
    m = metrics_from_confusion(cm([0, 0, 1, 1], [0, 1, 1, 1], 4))
    assert m.per_class_iou[2:] == (None, None)
    assert m.miou == pytest.approx(7 / 12)  # the mean over the two classes that occur, as without them


def test_label_only_class_counts_as_zero():
    # class 2 is in the labels but never predicted: IoU 0, and it pulls the mean down.
    m = metrics_from_confusion(cm([0, 1, 2, 2], [0, 1, 0, 1], 3))
    assert m.per_class_iou == pytest.approx((0.5, 0.5, 0.0))
    assert m.miou == pytest.approx(1 / 3)


def test_prediction_only_class_counts_as_zero():
    m = metrics_from_confusion(cm([0, 0, 0, 0], [0, 0, 0, 2], 3))
    assert m.per_class_iou == pytest.approx((0.75, None, 0.0))
    assert m.miou == pytest.approx(0.375)


# -- evaluate() on files ------------------------------------------------------------------------------------------

def logits(class_map: np.ndarray, num_classes: int) -> np.ndarray:
    """[1,C,H,W] scores whose argmax is class_map."""
    out = np.zeros((1, num_classes, *class_map.shape), dtype=np.float32)
    for k in range(num_classes):
        out[0, k][class_map == k] = 1.0
    return out


def write_h5(path: Path, groups: dict[str, dict[str, np.ndarray]] | None = None,
             datasets: dict[str, np.ndarray] | None = None) -> Path:
    with h5py.File(path, "w", track_order=True) as file:
        for group, items in (groups or {}).items():
            g = file.create_group(group, track_order=True)
            for name, array in items.items():
                g.create_dataset(name, data=array)
        for name, array in (datasets or {}).items():
            file.create_dataset(name, data=array)
    return path


def make_run(tmp_path: Path, labels: bool = True, num_classes: int = 3) -> tuple[Path, Path, Path]:
    """Two samples of 2x4 pixels; the quantized model flips 2 of the 16 pixels."""
    maps = {"a": np.array([[0, 0, 1, 1], [2, 2, 2, 2]]), "b": np.array([[1, 1, 1, 1], [0, 0, 0, 0]])}
    quant_maps = {"a": np.array([[0, 1, 1, 1], [2, 2, 2, 2]]), "b": np.array([[1, 1, 1, 1], [0, 0, 0, 2]])}
    groups = {"test": {n: np.zeros((3, 2, 4), np.float32) for n in maps}}
    if labels:
        groups["labels"] = {n: m.astype(np.uint8) for n, m in maps.items()}
    samples = write_h5(tmp_path / SAMPLES, groups)
    flt = write_h5(tmp_path / FLOAT_PREDS, datasets={n: logits(m, num_classes) for n, m in maps.items()})
    qnt = write_h5(tmp_path / QUANT_PREDS, datasets={n: logits(m, num_classes) for n, m in quant_maps.items()})
    return samples, flt, qnt


def test_evaluate_streams_both_models_against_labels(tmp_path):
    samples, flt, qnt = make_run(tmp_path)
    metrics = evaluate(samples, flt, qnt, 3, Reporter(quiet=True))
    assert metrics.num_samples == 2 and metrics.num_classes == 3
    assert metrics.float.miou == 1.0 and metrics.float.pixel_accuracy == 1.0
    assert metrics.quantized.pixel_accuracy == pytest.approx(14 / 16)
    # class 0: 6 labelled, 2 of them predicted as 1 or 2 -> 4/6; class 1: TP 6 of union 7; class 2: TP 4 of 5.
    assert metrics.quantized.per_class_iou == pytest.approx((4 / 6, 6 / 7, 4 / 5))
    assert metrics.agreement == pytest.approx(14 / 16)
    # Each flipped pixel moves a 1 from one channel to another: noise 2 per flip, signal 16 ones.
    assert metrics.sqnr_db == pytest.approx(10 * math.log10(16 / 4))
    assert metrics.most_disagreeing == ("a", "b") or metrics.most_disagreeing == ("b", "a")


def test_metrics_json_has_exactly_the_schema(tmp_path):
    samples, flt, qnt = make_run(tmp_path)
    metrics = evaluate(samples, flt, qnt, 3)
    write_metrics(metrics, tmp_path / "out" / "metrics.json")
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(data) == {"num_samples", "num_classes", "float", "quantized", "agreement", "sqnr_db"}
    assert set(data["float"]) == set(data["quantized"]) == {"miou", "pixel_accuracy", "dice", "per_class_iou"}
    assert Metrics.from_dict(data) == metrics
    assert list((tmp_path / "out").iterdir()) == [tmp_path / "out" / "metrics.json"]  # no temp file left


def test_without_labels_only_agreement_and_sqnr(tmp_path):
    samples, flt, qnt = make_run(tmp_path, labels=False)
    metrics = evaluate(samples, flt, qnt, 3)
    assert metrics.float is None and metrics.quantized is None and not metrics.has_labels
    assert metrics.to_dict()["float"] is None
    assert [row[0] for row in metric_rows(metrics)] == ["float/quantized agreement", "SQNR of quantized outputs"]


def test_identical_outputs_have_infinite_sqnr_written_as_null(tmp_path):
    samples, flt, _ = make_run(tmp_path)
    metrics = evaluate(samples, flt, flt, 3)
    assert metrics.sqnr_db == math.inf and metrics.agreement == 1.0 and metrics.most_disagreeing == ()
    assert json.loads(json.dumps(metrics.to_dict(), allow_nan=False))["sqnr_db"] is None


def test_render_metrics_prints_float_quantized_and_delta(tmp_path):
    import io

    samples, flt, qnt = make_run(tmp_path)
    buffer = io.StringIO()
    render_metrics(evaluate(samples, flt, qnt, 3), Reporter(stream=buffer))
    text = buffer.getvalue()
    assert "mIoU" in text and "1.0000" in text and "delta" in text and "87.50%" in text


@pytest.mark.parametrize("breakage, problem", [
    ("missing float", "does not exist"),
    ("float lacks a sample", "lacks predictions for 'b'"),
    ("label missing", "no label for 'b'"),
    ("label shape", "has shape (3, 4)"),
    ("label value", "holds class 7"),
    ("class count", "has 3 classes, expected 4"),
    ("not a prediction", "not a [1,C,H,W] prediction"),
])
def test_bad_inputs_name_the_file_and_the_problem(tmp_path, breakage, problem):
    samples, flt, qnt = make_run(tmp_path)
    num_classes = 3
    if breakage == "missing float":
        flt.unlink()
    elif breakage == "float lacks a sample":
        with h5py.File(flt, "a") as f:
            del f["b"]
    elif breakage in ("label missing", "label shape", "label value"):
        with h5py.File(samples, "a") as f:
            del f["labels/b"]
            if breakage == "label shape":
                f["labels"].create_dataset("b", data=np.zeros((3, 4), np.uint8))
            elif breakage == "label value":
                f["labels"].create_dataset("b", data=np.full((2, 4), 7, np.uint8))
    elif breakage == "class count":
        num_classes = 4
    elif breakage == "not a prediction":
        with h5py.File(qnt, "a") as f:
            del f["a"]
            f.create_dataset("a", data=np.zeros((3, 2, 4), np.float32))
    with pytest.raises(InputError) as caught:
        evaluate(samples, flt, qnt, num_classes)
    assert problem in str(caught.value)
    assert caught.value.exit_code == 2


# -- the CLI -------------------------------------------------------------------------------------------------------

def test_cli_writes_metrics_and_report(tmp_path, capsys):
    inputs, results = tmp_path / "inputs", tmp_path / "results"
    inputs.mkdir()
    results.mkdir()
    samples, flt, qnt = make_run(inputs)
    flt.rename(results / FLOAT_PREDS)
    qnt.rename(results / QUANT_PREDS)
    code, out, err = hostctl_inprocess(["evaluate", "--input-dir", str(inputs), "--output-dir", str(results),
                                        "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["metrics"]["num_classes"] == 3  # inferred from the predictions
    assert json.loads((results / "metrics.json").read_text())["agreement"] == pytest.approx(14 / 16)
    assert sorted(p.name for p in (results / "report").iterdir()) == ["index.html", "per_class_iou.png",
                                                                       "previews.png"]


def test_cli_missing_predictions_exit_2_with_one_error_line(tmp_path, capsys):
    (tmp_path / "results").mkdir()
    make_run(tmp_path)
    before = tree_snapshot(tmp_path / "results")
    code, _, err = hostctl_inprocess(["evaluate", "--input-dir", str(tmp_path), "--output-dir",
                                      str(tmp_path / "results")], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and QUANT_PREDS in errors[0] and "does not exist" in errors[0]
    assert tree_snapshot(tmp_path / "results") == before
