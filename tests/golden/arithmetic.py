"""The float arithmetic a golden reference was made with, and how to run its check under the same (issue 26).

"Exact" means bit-identical to vai_q_pytorch on the same float kernels. Those are picked at run time from the
CPU: with bias correction, nndct runs a float conv beside each quantized one and the difference becomes the
corrected bias, so a last-bit difference in a float conv can move a bias by one step and a class with it. What
picks the kernels, and so what a reference records under "arithmetic":

  aten      ATen's vectorised kernels (element-wise ops, depthwise convs, reductions): ATEN_CPU_CAPABILITY
            ("default", "avx2", "avx512"). torch 1.13 takes the variable without asking the CPU, so a cap above
            the CPU's would crash: `cpu_lacks` checks /proc/cpuinfo first.
  onednn    oneDNN's convolutions: ONEDNN_MAX_CPU_ISA (DNNL_MAX_CPU_ISA for oneDNN 1.x), its names ("AVX2",
            "AVX512_CORE", ...); a cap, so oneDNN never goes above what the CPU has. None where torch has no oneDNN.
  threads   torch's intra-op threads: torch 1.13 chooses between oneDNN and its own conv for small inputs by it.
  blas      the BLAS libraries the process mapped (paths). torch 1.13 at one thread runs 1x1 convolutions of a
            small batch through im2col and the BLAS, so its last bits are the BLAS's: Debian's torch takes
            whichever libblas.so.3 the system's alternatives name (the reference BLAS by default, OpenBLAS once
            installed). A worker is pointed at the recorded system BLAS's directory (LD_LIBRARY_PATH); a BLAS
            bundled in a wheel (scipy's) is for the record only.

`current(torch)` reads them in the running process; `caps_env(record)` is the environment that makes a new
process use them; `cpu_lacks(record)` says why this machine cannot. Standard library only, but `current`.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import sys
import tempfile
from pathlib import Path

# The keys that must match for a check to mean anything; "blas" and "onednn_text" only inform.
KEYS = ("aten", "onednn", "threads")

# ATen's capability -> the CPU flags (as /proc/cpuinfo names them) torch 1.13-2.x require for it.
_ATEN_FLAGS = {
    "default": (),
    "avx2": ("avx2", "fma"),
    "avx512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma"),
}
# oneDNN's ISA names, most specific first: (name, words of its verbose "isa:" text, CPU flags it needs).
_ONEDNN = (
    ("AVX512_CORE_AMX", ("AMX",), ("avx512f", "avx512bw", "avx512vl", "avx512dq", "amx_tile", "amx_int8")),
    ("AVX512_CORE_BF16", ("AVX-512", "bfloat16"), ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16")),
    ("AVX512_CORE_VNNI", ("AVX-512", "DL Boost"), ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni")),
    ("AVX512_CORE", ("AVX-512",), ("avx512f", "avx512bw", "avx512vl", "avx512dq")),
    ("AVX2_VNNI", ("AVX2", "DL Boost"), ("avx2", "avx_vnni")),
    ("AVX2", ("AVX2",), ("avx2",)),
    ("AVX", ("AVX",), ("avx",)),
    ("SSE41", ("SSE4.1",), ("sse4_1",)),
)


def current(torch) -> dict:  # torch is passed in, so that this module imports without it
    """The arithmetic of this process, as a reference records it. Call after torch.set_num_threads."""
    text = _onednn_text(torch)
    return {
        "aten": _aten_capability(torch),
        "onednn": _onednn_name(text) if text else None,
        "threads": torch.get_num_threads(),
        "onednn_text": text,
        "blas": _mapped_blas(),
    }


def caps_env(record: dict, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that make a fresh process compute with record's kernels (where the CPU has them)."""
    env = {"ATEN_CPU_CAPABILITY": record["aten"], "OMP_NUM_THREADS": str(record["threads"])}
    if record.get("onednn"):
        env["ONEDNN_MAX_CPU_ISA"] = env["DNNL_MAX_CPU_ISA"] = record["onednn"]
    blas = system_blas(record)
    if blas is not None and os.path.exists(blas):
        before = (os.environ if environ is None else environ).get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = os.path.dirname(blas) + (os.pathsep + before if before else "")
    return env


def system_blas(record: dict) -> str | None:
    """The system BLAS (libblas.so.3 of an alternatives directory) the record's process computed with, or None."""
    for path in record.get("blas") or ():
        if "site-packages" not in path and re.match(r"libblas\.so\.3", os.path.basename(path)):
            return path
    return None


def cpu_lacks(record: dict, flags: set[str] | None = None) -> str | None:
    """Why this machine cannot compute with record's kernels, or None when it can."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return "cannot read the CPU's flags (/proc/cpuinfo) to tell whether it has " + describe(record)
    needs = _ATEN_FLAGS.get(record["aten"])
    if needs is None:
        return f"unknown ATen capability {record['aten']!r}"
    missing = [f for f in needs if f not in flags]
    if record.get("onednn"):
        onednn = {name: need for name, _, need in _ONEDNN}.get(record["onednn"])
        if onednn is None:
            return f"unknown oneDNN ISA {record['onednn']!r}"
        missing += [f for f in onednn if f not in flags and f not in missing]
    if missing:
        return f"this CPU lacks {', '.join(missing)}, which {describe(record)} needs"
    blas = system_blas(record)
    if blas is not None and not os.path.exists(blas):
        return f"{blas} (the BLAS the reference computed with) is not on this machine"
    return None


def describe(record: dict) -> str:
    onednn = f"oneDNN {record['onednn']}" if record.get("onednn") else "no oneDNN"
    threads = record["threads"]
    return f"ATen {record['aten']}, {onednn}, {threads} thread{'s' if threads != 1 else ''}"


def differs(recorded: dict, used: dict) -> list[str]:
    """The KEYS on which two records disagree, as 'key: recorded -> used'."""
    return [f"{k}: {recorded.get(k)} -> {used.get(k)}" for k in KEYS if recorded.get(k) != used.get(k)]


def key(record: dict) -> tuple:
    return tuple(record.get(k) for k in KEYS)


def cpu_flags() -> set[str] | None:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def _aten_capability(torch) -> str:
    # torch.backends.cpu.get_cpu_capability() exists from torch 2.0 only; the build summary has it in 1.13 too.
    for line in torch.__config__.show().splitlines():
        if "CPU capability usage:" in line:
            value = line.split(":", 1)[1].strip().lower()
            return "default" if value in ("no avx", "default") else value
    return "unknown"


@functools.lru_cache(maxsize=1)
def _onednn_text(torch) -> str | None:
    """The ISA line oneDNN prints once per process when verbose: caught from file descriptor 1 around one conv."""
    if not torch.backends.mkldnn.is_available():
        return None
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                # batch 2 and a 3x3 kernel: torch sends this conv to oneDNN at any thread count
                torch.nn.functional.conv2d(torch.zeros(2, 8, 16, 16), torch.zeros(8, 8, 3, 3))
            ctypes.CDLL(None).fflush(None)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode(errors="replace")
    for line in text.splitlines():
        if ",isa:" in line:
            return line.split(",isa:", 1)[1].strip()
    return None


def _onednn_name(text: str) -> str | None:
    for name, words, _ in _ONEDNN:
        if all(w in text for w in words):
            return name
    return None


def _mapped_blas() -> list[str]:
    """The BLAS libraries this process has mapped (torch's, and any a package bundles, as scipy's wheels do)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return []
    found = set()
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) >= 6 and re.match(r"lib(open)?blas|libmkl_rt|libblis", Path(fields[-1]).name):
            found.add(os.path.realpath(fields[-1]))
    return sorted(found)
