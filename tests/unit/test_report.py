"""The report: three files swapped in whole, pictures that open, an index that shows the numbers."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from PIL import Image
from test_evaluate import logits, write_h5

from container_payload.job import FLOAT_PREDS, QUANT_PREDS, SAMPLES
from hostctl.evaluate import evaluate
from hostctl.report import display_image, write_report


def make_run(tmp_path: Path, n: int = 6, labels: bool = True, num_classes: int = 4) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    maps = {f"s{i}": rng.integers(0, num_classes, (16, 24)) for i in range(n)}
    quant = {name: m.copy() for name, m in maps.items()}
    for name, rows, cols in (("s3", 4, 4), ("s1", 1, 3)):  # s3 disagrees most, then s1
        if name in quant:
            quant[name][:rows, :cols] = (quant[name][:rows, :cols] + 1) % num_classes
    # Normalized inputs (negative values too): the report must still show them as pictures.
    groups = {"test": {name: rng.standard_normal((3, 16, 24)).astype(np.float32) for name in maps}}
    if labels:
        groups["labels"] = {name: m.astype(np.uint8) for name, m in maps.items()}
    samples = write_h5(tmp_path / SAMPLES, groups)
    flt = write_h5(tmp_path / FLOAT_PREDS, datasets={k: logits(m, num_classes) for k, m in maps.items()})
    qnt = write_h5(tmp_path / QUANT_PREDS, datasets={k: logits(m, num_classes) for k, m in quant.items()})
    return samples, flt, qnt


def test_report_files_open_and_show_the_metrics(tmp_path):
    samples, flt, qnt = make_run(tmp_path)
    metrics = evaluate(samples, flt, qnt, 4)
    files = write_report(metrics, samples, flt, qnt, tmp_path / "report")
    assert [p.name for p in files] == ["previews.png", "per_class_iou.png", "index.html"]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(p.name for p in files)
    with Image.open(files[0]) as previews:
        # 5 columns of 16x24 tiles scaled up to at least 160 pixels wide, 4 rows.
        assert previews.width >= 5 * 160 and previews.height >= 4 * 106
    with Image.open(files[1]) as chart:
        assert chart.width > 400
    page = files[2].read_text()
    assert 'src="previews.png"' in page and 'src="per_class_iou.png"' in page
    assert f"{metrics.quantized.miou:.4f}" in page and "agreement" in page
    assert "s3, s1" in page  # the samples where the models disagree most come first


def test_without_labels_no_chart_and_no_label_column(tmp_path):
    samples, flt, qnt = make_run(tmp_path, labels=False)
    metrics = evaluate(samples, flt, qnt, 4)
    files = write_report(metrics, samples, flt, qnt, tmp_path / "report", max_previews=2)
    assert [p.name for p in files] == ["previews.png", "index.html"]
    with Image.open(files[0]) as previews:
        assert previews.width < 5 * 160  # four columns
    assert "No labels" in files[1].read_text()


def test_report_replaces_an_old_one_whole(tmp_path):
    samples, flt, qnt = make_run(tmp_path)
    old = tmp_path / "report"
    old.mkdir()
    (old / "stale.png").write_bytes(b"old")
    write_report(evaluate(samples, flt, qnt, 4), samples, flt, qnt, old)
    assert not (old / "stale.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging left


def test_more_previews_than_samples_and_input_at_another_size(tmp_path):
    samples, flt, qnt = make_run(tmp_path, n=2)
    with h5py.File(samples, "a") as f:  # a model that predicts at the input size while inputs are larger
        for name in list(f["test"]):
            del f["test"][name]
            f["test"].create_dataset(name, data=np.ones((1, 32, 48), np.float32))
    files = write_report(evaluate(samples, flt, qnt, 4), samples, flt, qnt, tmp_path / "report", max_previews=8)
    with Image.open(files[0]) as previews:
        assert 2 * 112 < previews.height < 3 * 112 + 60  # two rows of 112-pixel tiles, header and legend


def test_display_image_undoes_normalization():
    sample = np.stack([np.full((2, 2), -2.0), np.full((2, 2), 0.0), np.array([[1.0, 2.0], [-2.0, 0.0]])])
    picture = display_image(sample.astype(np.float32))
    assert picture.dtype == np.uint8 and picture.shape == (2, 2, 3)
    assert picture.min() == 0 and picture.max() == 255
    grey = display_image(np.zeros((1, 3, 3), np.float32))
    assert grey.shape == (3, 3, 3) and not grey.any()
