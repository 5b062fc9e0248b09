"""The layer analysis on the host: the terminal's five worst at 80 columns, run.json's summary, the report's plot,
read from a layers.json that a real analysis of the deliberately bad model wrote."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers import USER_MODELS
from PIL import Image
from test_report import make_run

from container_payload.backends.portable import PortableBackend
from container_payload.backends.portable.analysis import analyze, reference, write
from container_payload.job import LAYERS
from hostctl.errors import RunFailed
from hostctl.evaluate import evaluate
from hostctl.layers import SQNR_PLOT, expected, read_layers, render_unavailable, render_worst, summary, where, worst
from hostctl.report import write_report
from hostctl.ui import Reporter

sys.path.insert(0, str(USER_MODELS))
from badchannel import BadChannel  # noqa: E402 - the user model directory goes on the path first


@pytest.fixture(scope="module")
def layers_file(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("layers")
    torch.manual_seed(0)
    model = BadChannel().eval()
    b = PortableBackend(model, str(tmp), (3, 32, 32), warn=lambda m: None)
    g = torch.Generator().manual_seed(1)
    b.calibrate([torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)], count=2)
    test = [torch.randn(4, 3, 32, 32, generator=g) for _ in range(2)]
    modules, float_params = reference(model, test[0], b._graph, True)
    a = analyze(b._graph, b._test, test, 8, modules, float_params=float_params)
    write(a.result("BadChannel", "portable"), str(tmp / LAYERS))
    return tmp / LAYERS


def _terminal(doc: dict) -> str:
    buffer = io.StringIO()
    reporter = Reporter(stream=buffer)
    reporter.console.width = 80
    render_worst(doc, reporter)
    return buffer.getvalue()


def test_the_terminal_names_the_five_worst_with_their_module_at_80_columns(layers_file):
    doc = read_layers(layers_file)
    text = _terminal(doc)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    rows = [line for line in lines if line.startswith("│")]
    assert len(rows) == 5
    assert "bad" in rows[0] and "nndct_" in rows[0] or "bad.weight" in rows[0]
    assert f"{len(doc['tensors'])} tensors, 8 samples" in text and "float passes" in text and LAYERS in text
    assert "(each alone, on " in text


def test_run_json_keeps_a_summary_with_the_five_worst(layers_file):
    doc = read_layers(layers_file)
    s = summary(doc)
    assert s["file"] == LAYERS and s["tensors"] == len(doc["tensors"]) and s["samples"] == 8
    assert [w["name"] for w in s["worst"]] == doc["worst"] == [t["name"] for t in worst(doc)]
    assert s["worst"][0]["module"] == "bad"
    assert s["cost"]["seconds"] > 0 and s["output_sqnr_db"] == doc["output"]["sqnr_db"]
    json.dumps(s, allow_nan=False)


def test_where_falls_back_to_the_line_of_code():
    assert where({"module": "enc.0", "source": "/x/net.py:3"}) == "enc.0"
    assert where({"module": "", "source": "/x/net.py:3"}) == "net.py:3"
    assert where({"module": "", "source": None}) == "(model)"


def test_the_report_plots_sqnr_along_the_depth_and_names_the_worst(layers_file, tmp_path):
    doc = read_layers(layers_file)
    samples, flt, qnt = make_run(tmp_path)
    metrics = evaluate(samples, flt, qnt, 4)
    files = write_report(metrics, samples, flt, qnt, tmp_path / "report", layers=doc)
    assert [p.name for p in files] == ["previews.png", "per_class_iou.png", SQNR_PLOT, "index.html"]
    with Image.open(tmp_path / "report" / SQNR_PLOT) as plot:
        assert plot.width > 600 and plot.height > 300
    page = (tmp_path / "report" / "index.html").read_text()
    assert f'src="{SQNR_PLOT}"' in page and "Where quantization loses accuracy" in page
    first = worst(doc)[0]
    assert first["name"].split("::")[1] in page and first["module"] in page
    # without an analysis the report is as before
    files = write_report(metrics, samples, flt, qnt, tmp_path / "plain")
    assert SQNR_PLOT not in [p.name for p in files]


def test_which_runs_have_an_analysis_and_the_vai_note(tmp_path):
    assert expected(None, "portable") and expected(3, "hybrid")
    assert not expected(0, "portable") and not expected(None, "vai")
    buffer = io.StringIO()
    reporter = Reporter(stream=buffer)
    reporter.console.width = 80
    render_unavailable("vai", reporter)
    text = buffer.getvalue()
    assert text.count("\n") == 1 and len(text.rstrip("\n")) <= 80 and "--quantizer portable" in text


def test_an_unreadable_layers_json_is_one_line(tmp_path):
    path = tmp_path / LAYERS
    path.write_text("{not json")
    with pytest.raises(RunFailed) as err:
        read_layers(path)
    assert LAYERS in err.value.message and "--analyze-samples 0" in (err.value.hint or "")


def test_source_lines_seen_in_a_container_are_given_as_this_machine_names_them(tmp_path):
    from hostctl.layers import sources_on_the_host

    doc = {"tensors": [{"source": "/hostctl/model/net.py:12"}, {"source": "/opt/other.py:3"}, {"source": None}]}
    assert sources_on_the_host(doc, "/hostctl/model", tmp_path / "src")
    assert [t["source"] for t in doc["tensors"]] == [f"{tmp_path}/src/net.py:12", "/opt/other.py:3", None]
    # the local runtime sees the directory where it is: nothing to change
    local = {"tensors": [{"source": f"{tmp_path}/net.py:1"}]}
    assert not sources_on_the_host(local, str(tmp_path), tmp_path)
