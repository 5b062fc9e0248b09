"""The compile step without Docker: log parsing, XIR inspection, the payload step with the stand-in compiler on
the PATH, option resolution and usage errors (exit 2 before anything runs)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from helpers import ROOT, hostctl_inprocess

from container_payload import compiler
from container_payload.job import CompileJob, CompileStep, Job, job_task

STAND_IN_BIN = ROOT / "scripts" / "stand-in-image"

REAL_LOOKING_LOG = [
    "[UNILOG][INFO] Compile mode: dpu",
    "\x1b[32m[UNILOG][INFO] Target architecture: DPUCZDX8G_ISA1_B4096\x1b[0m",
    "[UNILOG][INFO] Graph name: Unet, with op num: 1392",
    "[UNILOG][INFO] Begin to compile...",
    "[UNILOG][WARNING] xir::Op{name = Unet__Unet_Upsample_up1__input_3, type = upsample-fix} has been assigned to "
    "CPU: [upsample-fix] mode is not supported.",
    "[UNILOG][WARNING] xir::Op{name = Unet__Unet_Softmax_out, type = softmax} has been assigned to CPU.",
    "[UNILOG][INFO] Total device subgraph number 83, DPU subgraph number 20",
    "[UNILOG][INFO] Compile done.",
]


def test_parse_log_reads_target_graph_counts_and_cpu_ops():
    report = compiler.parse_log(REAL_LOOKING_LOG)
    assert report["target"] == "DPUCZDX8G_ISA1_B4096"
    assert (report["graph"], report["op_num"]) == ("Unet", 1392)
    assert (report["device_subgraphs"], report["dpu_subgraphs"]) == (83, 20)
    assert report["cpu_ops"] == ["Unet__Unet_Upsample_up1__input_3", "Unet__Unet_Softmax_out"]
    assert report["cpu_op_details"][0] == {"name": "Unet__Unet_Upsample_up1__input_3", "type": "upsample-fix",
                                           "reason": "[upsample-fix] mode is not supported."}
    assert report["cpu_op_details"][1]["reason"] == ""


def test_multi_dpu_warning_is_one_line_and_only_above_one():
    assert compiler.multi_dpu_warning(1, []) is None and compiler.multi_dpu_warning(None, []) is None
    text = compiler.multi_dpu_warning(20, [f"op{i}" for i in range(5)])
    assert "\n" not in text and "20 DPU subgraphs" in text and "op0, op1, op2, ..." in text


def fake_xir(monkeypatch):
    """An `xir` module reading the stand-in compiler's JSON 'xmodel' through the real bindings' API."""
    module = types.ModuleType("xir")

    class Op:
        def __init__(self, name, kind):
            self.name, self.kind = name, kind

        def get_name(self):
            return self.name

        def get_type(self):
            return self.kind

    class Subgraph:
        def __init__(self, data):
            self.data = data

        def get_name(self):
            return self.data["name"]

        def has_attr(self, key):
            return key == "device"

        def get_attr(self, key):
            return self.data[key]

        def get_ops(self):
            names = self.data.get("op_names") or [f"{self.data['name']}_op{i}" for i in range(self.data["ops"])]
            types_ = self.data.get("op_types") or ["fix"] * len(names)
            return [Op(n, t) for n, t in zip(names, types_, strict=True)]

    class Graph:
        def __init__(self, data):
            self.data = data

        @staticmethod
        def deserialize(path):
            return Graph(json.loads(Path(path).read_text()))

        def get_root_subgraph(self):
            return types.SimpleNamespace(toposort_child_subgraph=lambda: [Subgraph(s) for s in self.data["subgraphs"]])

    module.Graph = Graph
    monkeypatch.setitem(sys.modules, "xir", module)


@pytest.fixture
def stand_in_compiler(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STAND_IN_BIN}:{__import__('os').environ['PATH']}")
    arch = tmp_path / "arch.json"
    arch.write_text('{"target": "DPUCZDX8G_ISA1_B4096"}')
    return arch


def xmodel(tmp_path: Path, *marks: str) -> str:
    path = tmp_path / "Unet_int.xmodel"
    path.write_bytes(b"FAKE " + " ".join(marks).encode())
    return str(path)


@pytest.mark.parametrize("with_xir", [False, True])
def test_payload_step_with_the_stand_in_compiler(tmp_path, monkeypatch, stand_in_compiler, with_xir, capsys):
    if with_xir:
        fake_xir(monkeypatch)
    warnings: list[str] = []
    step = CompileStep(arch=str(stand_in_compiler), output_dir=str(tmp_path / "out"), board="kv260")
    report = compiler.run_compiler(xmodel(tmp_path, "stand-in:dpu_subgraphs=2"), step, warnings.append)
    assert (report["target"], report["dpu_subgraphs"], report["device_subgraphs"]) == ("DPUCZDX8G_ISA1_B4096", 2, 4)
    assert report["net_name"] == "Unet" and report["cpu_ops"] == ["Unet__Unet__Upsample_up1__input_1"]
    assert json.loads((tmp_path / "out" / "compile.json").read_text()) == report
    assert report["source"] == ("log+xmodel" if with_xir else "log")
    if with_xir:
        assert [s["device"] for s in report["subgraphs"]] == ["USER", "DPU", "CPU", "DPU"]
        assert report["subgraphs"][2]["op_types"] == ["upsample-fix"]
        assert [s["ops"] for s in report["subgraphs"]] == [1, 10, 1, 10]
    assert warnings == [] and len(report["warnings"]) == 1
    assert "Total device subgraph number 4, DPU subgraph number 2" in capsys.readouterr().out


def test_payload_step_failures(tmp_path, monkeypatch, stand_in_compiler):
    step = CompileStep(arch=str(stand_in_compiler), output_dir=str(tmp_path / "out"))
    with pytest.raises(compiler.CompileFailed, match=r"(?s)exited with status 1.*XCOM_PM_FAIL"):
        compiler.run_compiler(xmodel(tmp_path, "stand-in:fail=1"), step, print)
    with pytest.raises(compiler.ArchMissing, match="no arch file"):
        compiler.run_compiler(xmodel(tmp_path), CompileStep(arch="/nope/arch.json", output_dir=str(tmp_path)), print)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(compiler.CompilerMissing, match="vai_c_xir is not on the PATH"):
        compiler.run_compiler(xmodel(tmp_path), step, print)



@pytest.mark.parametrize("raised, code, traceback", [
    (compiler.ArchMissing("no arch file at /a"), 3, False),
    (compiler.CompileFailed("vai_c_xir exited with status 1"), 1, False),
    (ValueError("unexpected"), 1, True),
    (OSError(28, "No space left on device", "/r/x.xmodel"), 1, False),
])
def test_payload_frame_reports_one_error_event_with_the_right_exit(tmp_path, capsys, raised, code, traceback):
    from container_payload.events import run_job_file
    from container_payload.job import parse_event

    job = tmp_path / "job.json"
    job.write_text("{}")

    def work(_job):
        try:
            raise raised
        except OSError as exc:  # as h5py does: a second error while closing the full file
            raise RuntimeError("closing failed") from exc

    assert run_job_file(str(job), lambda text: text, work) == code
    out, err = capsys.readouterr()
    events = [e for e in map(parse_event, out.splitlines()) if e]
    assert [e["event"] for e in events] == ["error"]
    assert ("Traceback" in err) == traceback
    if isinstance(raised, OSError):
        assert events[0]["errno"] == 28 and events[0]["filename"] == "/r/x.xmodel"
    assert run_job_file(str(tmp_path / "missing.json"), lambda text: text, work) == 2


def test_jobs_round_trip_and_name_their_task():
    step = CompileStep(arch="/a/arch.json", output_dir="/r/compiled_kv260", board="kv260")
    job = Job(state_dict="/i/s.pt", samples="/i/q.h5", run_dir="/r", compile=step)
    assert Job.from_json(job.to_json()) == job and job_task(job.to_json()) == "quantize"
    cjob = CompileJob(xmodel="/i/Unet_int.xmodel", run_dir="/r", compile=step)
    assert CompileJob.from_json(cjob.to_json()) == cjob and job_task(cjob.to_json()) == "compile"


@pytest.fixture
def quant_dir(tmp_path):
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "Unet_int.xmodel").write_bytes(b"x")
    return tmp_path / "q"


@pytest.mark.parametrize("extra,message", [
    (["--board", "kv999"], "--board 'kv999' is not one of: kv260, zcu102"),
    (["--board", "kv260", "--fingerprint", "0x1"], "--board and --fingerprint both name the DPU"),
    (["--fingerprint", "12ab"], "is not a hexadecimal DPU fingerprint"),
    (["--arch", "ARCH_NO_TARGET"], "names no DPU"),
    (["--arch", "/nonexistent/arch.json"], "arch file not found"),
    (["--input-dir", "EMPTY"], "holds no quantized *_int.xmodel"),
    (["--input-dir", "TWO"], "holds 2 quantized xmodels"),
    (["--pull", "sometimes"], "--pull 'sometimes' is not one of"),
])
def test_compile_usage_errors_exit_2_before_any_container(tmp_path, quant_dir, capsys, extra, message):
    (tmp_path / "arch.json").write_text('{"name": "mine"}')
    (tmp_path / "empty").mkdir()
    (tmp_path / "two").mkdir()
    for name in ("A_int.xmodel", "B_int.xmodel"):
        (tmp_path / "two" / name).write_bytes(b"x")
    subst = {"ARCH_NO_TARGET": str(tmp_path / "arch.json"), "EMPTY": str(tmp_path / "empty"),
             "TWO": str(tmp_path / "two")}
    args = ["compile", "--input-dir", str(quant_dir), "--output-dir", str(tmp_path / "out"),
            "--image", "hostctl-never-used:0", *[subst.get(a, a) for a in extra]]
    code, _, err = hostctl_inprocess(args, capsys)
    assert code == 2, err
    assert message in " ".join(err.split())
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra,message", [
    (["--compile", "kv999"], "--compile 'kv999' is not one of"),
    (["--compile", "kv260", "--quantizer", "portable"], "--compile needs the xmodel"),
    (["--compile", "kv260", "--export", "onnx"], "--compile needs the xmodel"),
])
def test_quantize_compile_usage_errors(tmp_path, unet_inputs, capsys, extra, message):
    from helpers import tiny_args

    code, _, err = hostctl_inprocess(tiny_args(unet_inputs, tmp_path / "out", *extra), capsys)
    assert code == 2, err
    assert message in " ".join(err.split())


def test_compile_table_in_hostctl_toml_is_accepted(tmp_path):
    from hostctl.cli import _check_config_key
    from hostctl.config import load_default_map

    (tmp_path / "hostctl.toml").write_text('[compile]\nboard = "zcu104"\nnet-name = "deploy"\n')
    assert load_default_map(_check_config_key, tmp_path)["compile"] == {"board": "zcu104", "net_name": "deploy"}
