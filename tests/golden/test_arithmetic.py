"""References record the float arithmetic they were made with, and the tier checks them under it (issue 26)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).resolve().parent
sys.path.insert(0, str(GOLDEN))
import arithmetic  # noqa: E402 - needs the path above

AVX2 = {"aten": "avx2", "onednn": "AVX2", "threads": 1}
# A bias-corrected reference that is exact only on its own kernels: under ATen's default kernels and oneDNN's SSE4.1
# or AVX ones, its quantized argmax agrees with nndct's on 99.60% of pixels (tests/golden/check.py, on an AVX2 CPU)
BIAS_CORRECTED = "smp_pspnet_resnet18-q3"


def _current_under(env: dict[str, str]) -> dict:
    """arithmetic.current() as a fresh process of this Python's torch reads it under env."""
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import arithmetic, torch; "
            "torch.set_num_threads(1); print(json.dumps(arithmetic.current(torch)))")
    out = subprocess.run([sys.executable, "-c", code, str(GOLDEN)], env={**os.environ, **env},
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


def _lower_than(record: dict) -> dict:
    """Caps other than record's that every x86-64 CPU this tier runs on has."""
    return {"aten": "default", "onednn": "SSE41" if record["onednn"] != "SSE41" else "AVX", "threads": 1}


def test_cpu_lacks_names_what_is_missing() -> None:
    assert arithmetic.cpu_lacks(AVX2, {"avx", "avx2", "fma", "sse4_1"}) is None
    avx512 = {"aten": "avx512", "onednn": "AVX512_CORE", "threads": 1}
    reason = arithmetic.cpu_lacks(avx512, {"avx", "avx2", "fma", "sse4_1"})
    assert reason == ("this CPU lacks avx512f, avx512bw, avx512vl, avx512dq, which ATen avx512, oneDNN AVX512_CORE, "
                      "1 thread needs")
    assert "avx2" in arithmetic.cpu_lacks(AVX2, {"avx", "sse4_1"})
    assert arithmetic.cpu_lacks({**AVX2, "aten": "avx1024"}, {"avx2", "fma"}) == "unknown ATen capability 'avx1024'"
    assert arithmetic.cpu_lacks({**AVX2, "onednn": None}, {"avx2", "fma"}) is None  # a torch without oneDNN


def test_caps_env_caps_each_knob() -> None:
    assert arithmetic.caps_env(AVX2) == {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1",
                                         "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2"}
    assert "ONEDNN_MAX_CPU_ISA" not in arithmetic.caps_env({**AVX2, "onednn": None})


def test_caps_env_points_at_the_recorded_system_blas(tmp_path: Path) -> None:
    """Debian's torch takes whichever libblas.so.3 the alternatives name; a worker gets the recorded one's directory
    first on its library path. A BLAS bundled in a wheel (scipy's) is not torch's and is left alone."""
    blas = tmp_path / "blas" / "libblas.so.3.11.0"
    blas.parent.mkdir()
    blas.write_bytes(b"")
    record = {**AVX2, "blas": ["/v/lib/python3.11/site-packages/scipy.libs/libopenblasp-r0.so", str(blas)]}
    assert arithmetic.caps_env(record, {})["LD_LIBRARY_PATH"] == str(blas.parent)
    assert arithmetic.caps_env(record, {"LD_LIBRARY_PATH": "/a"})["LD_LIBRARY_PATH"] == f"{blas.parent}{os.pathsep}/a"
    assert arithmetic.cpu_lacks(record, {"avx2", "fma"}) is None
    gone = {**AVX2, "blas": [str(tmp_path / "openblas" / "libblas.so.3")]}
    assert "LD_LIBRARY_PATH" not in arithmetic.caps_env(gone, {})
    assert arithmetic.cpu_lacks(gone, {"avx2", "fma"}).endswith("is not on this machine")


@pytest.mark.slow  # two fresh torch imports
def test_current_reads_what_the_caps_set() -> None:
    this = _current_under({})
    assert this["threads"] == 1 and this["aten"] in ("default", "avx2", "avx512")
    if arithmetic.cpu_lacks(this) is not None:
        pytest.skip(f"this machine: {arithmetic.cpu_lacks(this)}")
    lower = _lower_than(this) if this["onednn"] else {**_lower_than(this), "onednn": None}
    capped = _current_under(arithmetic.caps_env(lower))
    assert {k: capped[k] for k in arithmetic.KEYS} == lower
    assert not arithmetic.differs(lower, capped)
    assert arithmetic.differs(this, capped)  # the caps moved it, so reading it tells something


def _golden_python() -> str:
    python = os.environ.get("HOSTCTL_GOLDEN_PYTHON", "")
    if not python or not os.access(python, os.X_OK):
        if os.environ.get("HOSTCTL_REQUIRE_GOLDEN") == "1":
            pytest.fail("HOSTCTL_GOLDEN_PYTHON is not an executable (HOSTCTL_REQUIRE_GOLDEN=1)")
        pytest.skip("HOSTCTL_GOLDEN_PYTHON is not set; scripts/golden-env.sh makes the golden Python")
    return python


def _check(python: str, refs: Path, env: dict[str, str]) -> list[dict]:
    proc = subprocess.run([python, str(GOLDEN / "check.py"), "--refs", str(refs)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.golden
def test_check_applies_the_recorded_arithmetic_not_the_callers(tmp_path: Path) -> None:
    python = _golden_python()
    ref = json.loads((GOLDEN / "refs" / f"{BIAS_CORRECTED}.json").read_text())
    recorded = ref["arithmetic"]
    assert recorded["onednn"], "the committed references were made with oneDNN"
    if arithmetic.cpu_lacks(recorded):
        pytest.skip(f"this machine cannot check {BIAS_CORRECTED}: {arithmetic.cpu_lacks(recorded)}")
    lower = _lower_than(recorded)
    (tmp_path / f"{BIAS_CORRECTED}.json").write_text(json.dumps(ref))
    # The same reference relabelled as made with other kernels: what an uncapped check on another CPU computes
    (tmp_path / "relabelled-q3.json").write_text(json.dumps({**ref, "arithmetic": lower}))
    # The caller asks for other kernels (as a machine with AVX-512 picks others by itself); check.py must not use them
    lines = {line["ref"]: line for line in _check(python, tmp_path, arithmetic.caps_env(lower))}
    exact, other = lines[BIAS_CORRECTED], lines["relabelled-q3"]
    assert not arithmetic.differs(recorded, exact["arithmetic"])
    # the BLAS too, whichever libblas.so.3 this machine's alternatives name (OpenBLAS moves the 1x1 convs' bits)
    assert arithmetic.system_blas(recorded) in exact["arithmetic"]["blas"], exact["arithmetic"]["blas"]
    assert not arithmetic.differs(lower, other["arithmetic"])
    assert exact["float_logits_max_abs"] == 0.0 and exact["logits_max_abs"] == 0.0, exact
    assert exact["params"][0] == exact["params"][1] and exact["argmax"] == 1.0, exact
    # and the caps matter: under the other kernels the float model itself no longer matches the reference's
    assert other["float_logits_max_abs"] > 0.0, other


@pytest.mark.golden
def test_check_reports_arithmetic_this_machine_cannot_compute(tmp_path: Path) -> None:
    python = _golden_python()
    ref = json.loads((GOLDEN / "refs" / f"{BIAS_CORRECTED}.json").read_text())
    ref["arithmetic"] = {**ref["arithmetic"], "aten": "avx1024"}
    (tmp_path / f"{BIAS_CORRECTED}.json").write_text(json.dumps(ref))
    assert _check(python, tmp_path, {}) == [{"ref": BIAS_CORRECTED, "unavailable": "unknown ATen capability 'avx1024'"}]
