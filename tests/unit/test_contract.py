"""The host/payload contract: job.json, event lines, result.json, and the line splitter that carries them."""

from __future__ import annotations

import json

import pytest

from container_payload.job import EVENT_PREFIX, Job, Result, SchemaError, format_event, parse_event
from hostctl.runtime.lines import LineSplitter


def job(**overrides):
    return Job(state_dict="/in/state_dict.pt", samples="/in/s.h5", run_dir="/run", **overrides)


def test_job_round_trips_through_json():
    original = job(input_size=(3, 64, 48), model_args={"width": 8, "name": "é"}, exports=("onnx",), test_limit=5)
    assert Job.from_json(original.to_json()) == original


@pytest.mark.parametrize("version", [None, 0, 2, "1"])
def test_job_with_another_schema_version_is_refused(version):
    data = json.loads(job().to_json())
    data["version"] = version
    with pytest.raises(SchemaError, match="schema version"):
        Job.from_json(json.dumps(data))


@pytest.mark.parametrize("field,value,message", [
    ("input_size", [3, 0, 4], "input_size"),
    ("input_size", [3, 4], "input_size"),
    ("quantizer", "int4", "quantizer"),
    ("exports", ["tflite"], "export format"),
    ("calib_batch_size", 0, "calib_batch_size"),
    ("test_limit", -1, "test_limit"),
    ("model", "nocolon", "MODULE:CLASS"),
    ("quant_opt", 7, "quant_opt"),
    ("surprise", 1, "unknown fields"),
])
def test_job_rejects_invalid_documents(field, value, message):
    data = json.loads(job().to_json())
    data[field] = value
    with pytest.raises(SchemaError, match=message):
        Job.from_json(json.dumps(data))


def test_job_rejects_non_json():
    with pytest.raises(SchemaError, match="not JSON"):
        Job.from_json("{nope")


def test_result_round_trips_and_ignores_fields_from_newer_payloads():
    result = Result(status="succeeded", backend="portable", model_class="Unet", files=["a"], num_calibration=2,
                    num_test=1, timings={"calibrate": 1.5}, versions={"torch": "1.13.1"})
    data = json.loads(result.to_json())
    data["extra"] = 1
    assert Result.from_json(json.dumps(data)) == result


def test_event_lines_round_trip_with_unicode():
    line = format_event("progress", name="calibrate", done=3, total=10, note="ünïcode ✓")
    assert line.startswith(EVENT_PREFIX) and "\n" not in line
    assert parse_event(line) == {"v": 1, "event": "progress", "name": "calibrate", "done": 3, "total": 10,
                                 "note": "ünïcode ✓"}


@pytest.mark.parametrize("line", [
    "plain log line",
    "@@hostctl not json",
    '@@hostctl {"v": 2, "event": "phase"}',
    '@@hostctl {"v": 1, "event": "nonsense"}',
    '@@hostctl {"v": 1, "event": "progress", "done": -1}',
    '@@hostctl {"v": 1, "event": "progress", "done": "3"}',
    '@@hostctl [1, 2]',
    ' @@hostctl {"v": 1, "event": "phase"}',
])
def test_anything_but_a_valid_event_is_a_log_line(line):
    assert parse_event(line) is None


def test_format_event_refuses_unknown_events_and_nan():
    with pytest.raises(SchemaError):
        format_event("bogus")
    with pytest.raises(ValueError):
        format_event("progress", done=float("nan"))


def split(chunks: list[bytes]) -> tuple[list[str], list[str]]:
    lines: list[str] = []
    status: list[str] = []
    splitter = LineSplitter(lines.append, status.append)
    for chunk in chunks:
        splitter.feed(chunk)
    splitter.close()
    return lines, status


def test_utf8_split_across_chunks_survives():
    text = "naïve ✓ 日本\nsecond\n".encode()
    for cut in range(1, len(text)):
        assert split([text[:cut], text[cut:]])[0] == ["naïve ✓ 日本", "second"]
    assert split([bytes([b]) for b in text])[0] == ["naïve ✓ 日本", "second"]


def test_last_line_without_newline_is_flushed():
    assert split([b"one\ntw", b"o"])[0] == ["one", "two"]


def test_carriage_return_updates_are_status_and_the_final_text_is_the_line():
    lines, status = split([b"10%\r50%\r100%\n", b"crlf line\r\n"])
    assert lines == ["100%", "crlf line"]
    assert status == ["10%", "50%"]


def test_invalid_utf8_is_replaced_not_fatal():
    assert split([b"bad \xff byte\n"])[0] == ["bad \ufffd byte"]
