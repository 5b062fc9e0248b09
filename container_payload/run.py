"""The payload's work: float predictions, calibration, quantized predictions, exports, result.json."""

import contextlib
import copy
import ctypes
import importlib.util
import os
import platform
import time
from typing import Any, Callable, Dict, List

import h5py
import numpy as np
import torch

from container_payload import backends, compiler
from container_payload.data import Batch, PredictionWriter, SampleReader
from container_payload.events import Phase, log, run_job_file, warn
from container_payload.finetuning import fast_finetune
from container_payload.job import BIAS_CORR, FLOAT_PREDS, FT_PARAM, FT_PORTABLE, QUANT_PREDS, RESULT, Job, Result
from container_payload.loading import build_model, check_finite, load_weights, read_state_dict


def _batch_size(batch: Batch) -> int:
    return len(batch[0])


def predict(model: Callable[[torch.Tensor], torch.Tensor], reader: SampleReader, batch_size: int,
            out_path: str, phase: str) -> None:
    with Phase(phase, len(reader)) as progress, PredictionWriter(out_path) as writer, torch.no_grad():
        for names, array in progress.track(reader.batches(batch_size), _batch_size):
            output = model(torch.from_numpy(array))
            writer.write(names, output.detach().cpu().numpy())


def versions() -> Dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "h5py": h5py.__version__, "torch_threads": str(torch.get_num_threads()),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "")}


def use_all_cpus() -> None:
    """The threads hostctl planned (OMP_NUM_THREADS, hostctl/threads.py), set for torch too: some torch builds
    (Debian's among them) default to one thread whatever the variable says. Without it, what this process may
    run on."""
    planned = os.environ.get("OMP_NUM_THREADS", "")
    if planned:
        if planned.isdigit() and int(planned) > 0 and torch.get_num_threads() != int(planned):
            torch.set_num_threads(int(planned))
        return
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        available = os.cpu_count() or 1
    if torch.get_num_threads() < available:
        torch.set_num_threads(available)


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the kernel at once.

    By default glibc maps every large buffer (from 128 KB up to 32 MB as it adapts, and always above) fresh from
    the kernel and unmaps it on free, so each activation tensor of every batch page-faults its memory in again; on
    a VM a fault costs microseconds (measured on these machines: filling a fresh 33 MB tensor takes 22 ms, 3 ms
    when its memory is reused; a 1x1 convolution into it 35 ms, 7 ms). Inference allocates and frees tensors
    of the same sizes batch after batch, so large buffers come from the heap (M_MMAP_MAX 0) and free memory
    stays there (M_TRIM_THRESHOLD 2 GB). The price is peak memory: the heap fragments (scripts/bench_payload.py,
    2 threads: 1068 -> 1690 MB on MobileNetV3 when first measured, 1287 MB after later changes; flat in the
    number of samples), and nothing is given back before the process ends. Threads other than the main one
    still map what their arenas cannot hold. Returns whether it took (glibc only: elsewhere nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2 ** 31 - 1))


def xmodel_export_would_fail() -> bool:
    """vai_q_pytorch imports the XIR bindings only inside export_xmodel (nndct_shared/compile/xgraph.py raises
    "please install xir package"): a run without them would calibrate and predict for nothing, then fail with
    nndct's traceback. Asked only where nndct_shared is (vai_q_pytorch's own tree), so that a pytorch_nndct that
    exports without XIR is taken at its word."""
    return importlib.util.find_spec("nndct_shared") is not None and importlib.util.find_spec("xir") is None


def execute(job: Job) -> Result:
    use_all_cpus()
    keep_freed_memory()
    timings = {}  # type: Dict[str, float]
    warnings = []  # type: List[str]

    def on_warning(message: str) -> None:
        warnings.append(message)
        warn(message)

    start = time.perf_counter()
    backends.set_nndct_options(job.quant_opt)  # before auto-detection imports pytorch_nndct
    backend_name = backends.resolve(job.quantizer, on_warning)
    calib = SampleReader(job.samples, "calibration", job.calib_limit)
    test = SampleReader(job.samples, "test", job.test_limit)
    model = build_model(job.model, job.model_path, job.model_args, job.num_classes)
    state = read_state_dict(job.state_dict)
    check_finite(state)
    load_weights(model, state)
    model.eval()
    model_class = type(model).__name__
    log("model {} ({:,} parameters), quantizer {}, {} calibration and {} test samples".format(
        model_class, sum(p.numel() for p in model.parameters()), backend_name, len(calib), len(test)))
    timings["load"] = time.perf_counter() - start
    files = []  # type: List[str]

    backend_cls = backends.load(backend_name)
    exports = backend_cls.default_exports if job.exports is None else job.exports
    unsupported = [fmt for fmt in exports if fmt not in backend_cls.supported_exports]
    if unsupported:
        raise backends.BackendError("the {} quantizer cannot export {}; it supports: {}".format(
            backend_name, ", ".join(unsupported), ", ".join(backend_cls.supported_exports) or "nothing"))
    if "xmodel" in exports and xmodel_export_would_fail():
        raise backends.MissingInEnvironment(
            "xmodel export needs the xir package, which this Python lacks (Vitis AI images ship it): use an "
            "image that has it, or pass --export none (or onnx, torchscript) to quantize without an xmodel")

    if job.float_preds:
        start = time.perf_counter()
        predict(model, test, job.eval_batch_size, os.path.join(job.run_dir, FLOAT_PREDS), "float")
        files.append(FLOAT_PREDS)
        timings["float"] = time.perf_counter() - start

    finetuned = {}  # type: Dict[str, Any]

    def quantize(name: str, prefix: str = ""):
        backend = backends.load(name)(copy.deepcopy(model), job.run_dir, job.input_size, target=job.target,
                                      quant_opt=job.quant_opt, warn=on_warning)
        if job.fast_finetune:
            tuned = fast_finetune(backend, calib, job, prefix + "finetune", on_warning)
            timings[prefix + "finetune"] = tuned["seconds"]
            report = getattr(getattr(backend, "portable", backend), "finetune_report", None)
            finetuned.clear()
            finetuned.update(tuned, **(report or {}))
        start = time.perf_counter()
        with Phase(prefix + "calibrate", len(calib)) as progress:
            batches = progress.track(calib.batches(job.calib_batch_size), _batch_size)
            backend.calibrate((torch.from_numpy(array) for _, array in batches),
                              count=calib.batch_count(job.calib_batch_size))
        timings[prefix + "calibrate"] = time.perf_counter() - start
        start = time.perf_counter()
        predict(backend.quantized(), test, job.eval_batch_size, os.path.join(job.run_dir, QUANT_PREDS),
                prefix + "test")
        timings[prefix + "test"] = time.perf_counter() - start
        return backend

    backend = quantize(backend_name)
    check = None
    if backend_name == "hybrid":
        start = time.perf_counter()
        check = hybrid_check(backend, test, job.run_dir)
        timings["check"] = time.perf_counter() - start
        log("hybrid check against pytorch_nndct's test mode: {} ({} samples, max abs diff {}, argmax agreement "
            "{})".format("passed" if check.passed else "failed", check.samples, check.max_abs_diff,
                         check.argmax_agreement))
        if not check.passed:
            on_warning("hybrid quantizer: {}; falling back to vai_q_pytorch's own calibration and test mode "
                       "(--quantizer vai), so these results are nndct's own".format(check.reason))
            backend_name = "vai"
            backend = quantize(backend_name, "vai_")

    if job.analyze_samples != 0 and backend_name in ("portable", "hybrid"):
        from container_payload.backends.portable.analysis import analyze_run

        start = time.perf_counter()
        per_sample = timings["float"] / len(test) if "float" in timings and len(test) else None
        files.append(analyze_run(job, getattr(backend, "portable", backend), backend_name, model_class, per_sample))
        timings["analyze"] = time.perf_counter() - start

    if exports:
        start = time.perf_counter()
        with Phase("export", len(exports), unit="files"):
            names, first = next(test.batches(1))
            files.extend(backend.export(exports, torch.from_numpy(first)))
        timings["export"] = time.perf_counter() - start

    compiled = None
    if job.compile is not None:
        start = time.perf_counter()
        compiled = compile_export(job, [f for f in files if f.endswith("_int.xmodel")], on_warning)
        timings["compile"] = time.perf_counter() - start

    files = ["quant_info.json", QUANT_PREDS] + [f for f in files if f != QUANT_PREDS]
    for name in (BIAS_CORR, FT_PARAM, FT_PORTABLE):
        if os.path.isfile(os.path.join(job.run_dir, name)):
            files.append(name)
    return Result(status="succeeded", backend=backend_name, model_class=model_class, files=files,
                  num_calibration=len(calib), num_test=len(test), timings=timings, versions=versions(),
                  warnings=warnings, check=None if check is None else check.as_dict(), compile=compiled,
                  finetune=finetuned or None)


def hybrid_check(backend, test: SampleReader, run_dir: str):
    """nndct's test mode (batch 1) on the first test samples against the portable predictions written for them."""
    from container_payload.backends.hybrid import CHECK_SAMPLES

    n = min(CHECK_SAMPLES, len(test))
    samples, expected = [], []
    with Phase("check", n) as progress, h5py.File(os.path.join(run_dir, QUANT_PREDS), "r") as preds:
        for names, array in test.batches(1):
            if len(samples) == n:
                break
            samples.append(torch.from_numpy(array))
            expected.append(preds[names[0]][()])
        check = backend.check(samples, expected)
        progress.advance(n)
    return check


def compile_export(job: Job, xmodels: List[str], on_warning: Callable[[str], None]) -> Dict[str, Any]:
    """quantize --compile: the exported xmodel through the compiler, or the reason why there was none."""
    if not xmodels:
        why = "no xmodel was exported (the xmodel comes from pytorch_nndct: the vai or hybrid quantizer)"
        on_warning("--compile skipped: " + why)
        return {"skipped": why}
    return compiler.run_compiler(os.path.join(job.run_dir, xmodels[0]), job.compile, on_warning)


def main(job_path: str) -> int:
    def work(job: Job) -> Dict[str, Any]:
        result = execute(job)
        path = os.path.join(job.run_dir, RESULT)
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(result.to_json())
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return {"status": result.status, "path": RESULT}

    return run_job_file(job_path, Job.from_json, work)
