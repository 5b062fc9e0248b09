"""The host <-> payload contract: job.json, event lines and result.json.

Standard library only and Python 3.8 compatible: the host imports this module, and so does the payload inside
the Vitis AI image. Every document carries a schema version; a reader refuses a version it does not know
instead of guessing.
"""

import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple

SCHEMA_VERSION = 1
EVENT_PREFIX = "@@hostctl "

BUILTIN_MODEL = "container_payload.models.unet:Unet"
QUANTIZERS = ("auto", "vai", "portable", "hybrid")
EXPORT_FORMATS = ("xmodel", "onnx", "torchscript")
# What each quantizer can export (its backend's supported_exports); the host checks --export against it before
# any work. auto is hybrid or portable, depending on whether pytorch_nndct imports where the payload runs.
SUPPORTED_EXPORTS = {"vai": EXPORT_FORMATS, "hybrid": EXPORT_FORMATS, "portable": ("torchscript",)}
# The quantizers whose backend has a fast finetune (issue 21); the host refuses --fast-finetune with the others.
FINETUNE_QUANTIZERS = ("vai", "portable", "hybrid", "auto")

# Names of the files a run produces inside its run directory (DESIGN.md section 4).
QUANT_INFO = "quant_info.json"
BIAS_CORR = "bias_corr.pth"  # nndct's bias correction, which its test mode reloads
# nndct's fast-finetuned parameters: the quant model's state_dict, which load_ft_param() reloads in test mode
# (nndct_shared/quantization/base_quantizer.py: param_file = output_dir + "/param", saved as param_file + ".pth")
FT_PARAM = "param.pth"
# the portable fast finetune's parameters by nndct's parameter names ({name: tensor}; hybrid writes them as FT_PARAM)
FT_PORTABLE = "fast_finetune_params.pth"
QUANT_PREDS = "quantization_test_preds.h5"
FLOAT_PREDS = "float_test_preds.h5"
RESULT = "result.json"
JOB = "job.json"
SAMPLES = "quantization_samples.h5"
STATE_DICT = "state_dict.pt"
COMPILE_REPORT = "compile.json"
INSPECT_REPORT = "inspect.json"
LAYERS = "layers.json"  # portable and hybrid: where quantization loses accuracy, tensor by tensor (issue 21)
COMPILER = "vai_c_xir"
ARCH_ROOT = "/opt/vitis_ai/compiler/arch"
# --board -> the arch.json directory under ARCH_ROOT in the Vitis AI image (DPU family/board).
BOARDS = {"kv260": "DPUCZDX8G/KV260", "zcu102": "DPUCZDX8G/ZCU102", "zcu104": "DPUCZDX8G/ZCU104",
          "vck190": "DPUCVDX8G/VCK190", "vek280": "DPUCV2DX8G/VEK280", "v70": "DPUCV2DX8G/V70"}
# Exit codes of the payload; the host also reads the error event's kind.
EXIT_FAILED = 1
EXIT_BAD_JOB = 2
EXIT_ENVIRONMENT = 3


class SchemaError(ValueError):
    """A job, event or result document that this version cannot read."""


@dataclass(frozen=True)
class CompileStep:
    """Run the compiler on a quantized xmodel: `vai_c_xir -x XMODEL -a ARCH -o OUTPUT_DIR -n NET_NAME`."""

    arch: str  # arch.json as the payload sees it
    output_dir: str  # where the compiler writes, as the payload sees it
    net_name: Optional[str] = None  # None: the model class (the xmodel's name without _int)
    board: Optional[str] = None  # for the record only

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "CompileStep":
        _refuse_unknown(cls, data, "compile step")
        return cls(**data)


@dataclass(frozen=True)
class CompileJob:
    """hostctl compile: the compile step alone, on an xmodel that an earlier quantize run exported."""

    xmodel: str
    run_dir: str
    compile: CompileStep
    task: str = "compile"
    version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CompileJob":
        data = _load_versioned(text, "job")
        _refuse_unknown(cls, data, "compile job")
        data["compile"] = CompileStep.from_dict(data.get("compile") or {})
        return cls(**data)


@dataclass(frozen=True)
class InspectJob:
    """hostctl inspect: where each op of the model would run on a DPU target, before any quantization."""

    run_dir: str
    target: str  # a target name, a fingerprint "0x...", or an arch.json as the payload sees it
    input_size: Tuple[int, int, int] = (3, 512, 512)
    num_classes: int = 7
    model: str = BUILTIN_MODEL
    model_path: Optional[str] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    # "rules": hostctl's emulation of vai_q_pytorch's rule-based Inspector; "nndct": vai_q_pytorch's own default
    # (compiler-backed) Inspector, in the Vitis AI image
    engine: str = "rules"
    task: str = "inspect"
    version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "InspectJob":
        data = _load_versioned(text, "job")
        _refuse_unknown(cls, data, "inspect job")
        data["input_size"] = tuple(data.get("input_size", (3, 512, 512)))
        job = cls(**data)
        if len(job.input_size) != 3 or any(int(d) <= 0 for d in job.input_size):
            raise SchemaError("input_size must be three positive integers, got {}".format(job.input_size))
        if ":" not in job.model:
            raise SchemaError("model must be MODULE:CLASS, got {!r}".format(job.model))
        if job.engine not in ("rules", "nndct"):
            raise SchemaError("engine must be rules or nndct, got {!r}".format(job.engine))
        return job


def job_task(text: str) -> str:
    """Which kind of job a job.json holds: "quantize" (Job), "compile" (CompileJob) or "inspect" (InspectJob)."""
    try:
        data = json.loads(text)
    except ValueError:
        return "quantize"  # Job.from_json reports the problem
    return data.get("task", "quantize") if isinstance(data, dict) else "quantize"


@dataclass(frozen=True)
class Job:
    """Everything the payload needs, with paths as the payload sees them."""

    state_dict: str
    samples: str
    run_dir: str
    input_size: Tuple[int, int, int] = (3, 512, 512)
    num_classes: int = 7
    calib_batch_size: int = 8
    eval_batch_size: int = 8
    calib_limit: Optional[int] = None
    test_limit: Optional[int] = None
    model: str = BUILTIN_MODEL
    model_path: Optional[str] = None
    model_args: Dict[str, Any] = field(default_factory=dict)
    quantizer: str = "auto"
    target: Optional[str] = None
    exports: Optional[Tuple[str, ...]] = None  # None: the backend's default
    quant_opt: int = 3
    float_preds: bool = True
    compile: Optional[CompileStep] = None  # then compile the exported xmodel in the same run
    # Accuracy (issue 21): per-tensor analysis of where quantization loses it (layers.json) on the first
    # analyze_samples test samples (None: all of them, 0: no analysis); fast finetune on finetune_samples
    # of the calibration samples (None: all of them), drawn and ordered by finetune_seed (finetuning.py)
    analyze_samples: Optional[int] = None
    fast_finetune: bool = False
    finetune_samples: Optional[int] = None
    finetune_seed: int = 0
    version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Job":
        data = _load_versioned(text, "job")
        _refuse_unknown(cls, data, "job")
        data["input_size"] = tuple(data.get("input_size", (3, 512, 512)))
        if data.get("exports") is not None:
            data["exports"] = tuple(data["exports"])
        if data.get("compile") is not None:
            data["compile"] = CompileStep.from_dict(data["compile"])
        job = cls(**data)
        job.check()
        return job

    def check(self) -> None:
        """Reject values that no run could use; the host validates files, this validates the document."""
        if len(self.input_size) != 3 or any(int(d) <= 0 for d in self.input_size):
            raise SchemaError("input_size must be three positive integers, got {}".format(self.input_size))
        for name in ("num_classes", "calib_batch_size", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise SchemaError("{} must be positive".format(name))
        for name in ("calib_limit", "test_limit", "finetune_samples"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise SchemaError("{} must be positive".format(name))
        if self.analyze_samples is not None and self.analyze_samples < 0:
            raise SchemaError("analyze_samples must be 0 or more")
        if self.quantizer not in QUANTIZERS:
            raise SchemaError("quantizer must be one of {}".format(", ".join(QUANTIZERS)))
        for fmt in self.exports or ():
            if fmt not in EXPORT_FORMATS:
                raise SchemaError("export format must be one of {}".format(", ".join(EXPORT_FORMATS)))
        if ":" not in self.model:
            raise SchemaError("model must be MODULE:CLASS, got {!r}".format(self.model))
        if not 0 <= self.quant_opt <= 3:
            raise SchemaError("quant_opt must be 0..3")


@dataclass(frozen=True)
class Result:
    """What the payload reports in result.json when it finished its work."""

    status: str  # "succeeded" or "failed"
    backend: str
    model_class: str
    files: List[str]
    num_calibration: int
    num_test: int
    timings: Dict[str, float]
    versions: Dict[str, str]
    warnings: List[str] = field(default_factory=list)
    error: Optional[str] = None
    # --quantizer hybrid: nndct's test mode against the portable outputs (hybrid.Check's fields), and the path
    # taken: backend "hybrid" when it passed, "vai" after the fallback
    check: Optional[Dict[str, Any]] = None
    compile: Optional[Dict[str, Any]] = None  # the compile report, or {"skipped": why}
    # --fast-finetune: its samples, batches, seed, seconds, and (portable, hybrid) the net loss before and after
    # and each layer's epochs
    finetune: Optional[Dict[str, Any]] = None
    version: int = SCHEMA_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Result":
        data = _load_versioned(text, "result")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _refuse_unknown(cls: type, data: Dict[str, Any], what: str) -> None:
    unknown = sorted(set(data) - {f.name for f in fields(cls)})
    if unknown:
        raise SchemaError("{} has unknown fields: {}".format(what, ", ".join(unknown)))


def _load_versioned(text: str, what: str) -> Dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SchemaError("{} is not JSON: {}".format(what, exc)) from exc
    if not isinstance(data, dict):
        raise SchemaError("{} must be a JSON object".format(what))
    version = data.get("version")
    if version != SCHEMA_VERSION:
        raise SchemaError(
            "{} has schema version {!r}; this hostctl reads version {}: use the same hostctl version on both sides"
            .format(what, version, SCHEMA_VERSION)
        )
    return data


# Events ---------------------------------------------------------------------------------------------------------
# phase:    {"event": "phase", "name": "calibrate", "state": "start"|"end", "total": N, "unit": "samples"}
# progress: {"event": "progress", "name": "calibrate", "done": n, "total": N}
# warning:  {"event": "warning", "message": "..."}
# error:    {"event": "error", "message": "...", "kind": "ExceptionName"}
# result:   {"event": "result", "status": "succeeded", "path": "result.json"}
EVENTS = ("phase", "progress", "warning", "error", "result", "log")


def format_event(event: str, **fields_: Any) -> str:
    if event not in EVENTS:
        raise SchemaError("unknown event {!r}".format(event))
    body = {"v": SCHEMA_VERSION, "event": event}
    body.update(fields_)
    return EVENT_PREFIX + json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def parse_event(line: str) -> Optional[Dict[str, Any]]:
    """The event carried by a line, or None for an ordinary log line.

    A line that starts with the prefix but does not hold a valid event is treated as a log line rather than an
    error, so a payload bug can never crash the host's display.
    """
    if not line.startswith(EVENT_PREFIX):
        return None
    try:
        body = json.loads(line[len(EVENT_PREFIX):])
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("v") != SCHEMA_VERSION or body.get("event") not in EVENTS:
        return None
    for key in ("done", "total"):
        value = body.get(key)
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                  or math.isnan(value) or value < 0):
            return None
    return body
