"""The DPU's int8 fix-point arithmetic: rounding, quantization and the choice of fix positions ("diffs").

Rules as vai_q_pytorch computes them (DESIGN.md section 9; checked in Xilinx/Vitis-AI
src/vai_quantizer/vai_q_pytorch: csrc/cpu/nndct_fix_kernels_cpu.cc `cpu_diff_S`, and
pytorch_nndct/quantization/torchquantizer.py `do_scan`):

- int8, signed, symmetric, per tensor, scale 2^-fp: q = clamp(round(x * 2^fp), -128, 127), value q * 2^-fp.
- parameters round half away from zero (kernel method 3); activations and the network input round half up,
  halves toward +inf (method 2).
- diffs: step = max(min(x) / -128.5, max(x) / 127.5) in float32; fp0 = floor(log2(1 / step)), 18 when step is
  not above FLT_MIN; try fp0 .. fp0 + 4 and keep the first with the strictly least sum of squared error. The
  network input uses fp0 only. The result is capped at 12.

Every function here is pure and works on whole tensors; nothing checks for inf/nan (vai_q_pytorch's checks are
what makes it slow, and a non-finite activation is a broken model, not a quantization question).
"""

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, List, Sequence, TypeVar

import numpy as np
import torch

BIT_WIDTH = 8
QMIN = -(1 << (BIT_WIDTH - 1))
QMAX = (1 << (BIT_WIDTH - 1)) - 1
MAX_FIX_POS = 12  # nndct_max_fix_position's default, applied to parameters and activations alike
DIFFS_SCOPE = 5  # nndct_diffs_mode "mse": fp0 .. fp0 + 4
CHUNK = 1 << 17  # elements per cache-sized piece of work (512 KiB of float32)
_FLT_MIN = np.float32(np.finfo(np.float32).tiny)
_FIX_LB = np.float32(QMIN - 0.5)  # -128.5
_FIX_UB = np.float32(QMAX + 0.5)  # 127.5
_BELOW_HALF = 0.5 - 2.0 ** -25  # the float just below 0.5


class Scratch:
    """Two cache-sized float32 buffers reused across calls."""

    def __init__(self) -> None:
        self._a = torch.empty(CHUNK)
        self._b = torch.empty(CHUNK)

    def get(self, n: int):
        return self._a[:n], self._b[:n]


_LOCAL = threading.local()
T = TypeVar("T")
R = TypeVar("R")


def _scratch() -> Scratch:
    """This thread's scratch buffers (the chunk workers run on several threads)."""
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None:
        scratch = _LOCAL.scratch = Scratch()
    return scratch


class _one_thread:
    """Run the chunk loops on one intra-op thread: a cache-sized op split over threads spends more on the
    hand-off than it gains, badly so on a loaded machine (measured: 16 ms single vs 26 ms on two threads for
    five candidates over 8M elements, with other processes running). The cores are used instead by giving
    each worker of in_order() its own run of chunks."""

    def __enter__(self) -> int:
        self.n = torch.get_num_threads()
        if self.n != 1:
            torch.set_num_threads(1)
        return self.n

    def __exit__(self, *exc) -> None:
        if self.n != 1:
            torch.set_num_threads(self.n)


_POOL = None  # type: Optional[ThreadPoolExecutor]
_POOL_LOCK = threading.Lock()


def in_order(items: Sequence[T], work: Callable[[T], R], workers: int) -> List[R]:
    """[work(item) for item in items], split into `workers` contiguous runs on threads (torch releases the GIL).

    Results come back in the items' order, so whatever the caller sums from them is summed in the same order
    as a single-threaded loop would: the numbers do not depend on the number of threads.
    """
    global _POOL
    if workers <= 1 or len(items) < 2 * workers or threading.current_thread().name.startswith("hostctl-fxp"):
        return [work(item) for item in items]
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hostctl-fxp")
    bounds = [len(items) * k // workers for k in range(workers + 1)]
    runs = [items[bounds[k]:bounds[k + 1]] for k in range(workers)]
    futures = [_POOL.submit(lambda run=run: [work(item) for item in run]) for run in runs[1:]]
    results = [work(item) for item in runs[0]]
    for future in futures:
        results.extend(future.result())
    return results


def _chunks(n: int) -> List[int]:
    return list(range(0, n, CHUNK))


def round_half_up(t: torch.Tensor) -> torch.Tensor:
    """Round halves toward +inf (-2.5 -> -2, 2.5 -> 3), exactly, into a new tensor."""
    r = torch.round(t)  # halves to even: wrong only for the ties k + 0.5 with k even
    return r + ((r - t) == -0.5).to(t.dtype)


def round_half_away(t: torch.Tensor) -> torch.Tensor:
    """Round halves away from zero (-2.5 -> -3, 2.5 -> 3), exactly (C's round(); kernel method 3)."""
    r = torch.round(t)  # halves to even; the others are already right
    trunc = torch.trunc(t)
    tie = (t - trunc).abs() == 0.5
    return torch.where(tie, trunc + torch.sign(t), r)


def quantize_param(x: torch.Tensor, fp: int) -> torch.Tensor:
    """A parameter on the DPU grid (round half away from zero), as a new float tensor."""
    scale = 2.0 ** fp
    out = x.detach().float().mul(scale).contiguous()  # exact: a power of two
    flat = out.view(-1)

    def chunk(s: int) -> float:
        t = flat[s:s + CHUNK]
        r = torch.round(t)  # halves to even; the halves that went toward zero move one step out
        d = t - r
        r += ((d == 0.5) & (r >= 0)).to(r.dtype)
        r -= ((d == -0.5) & (r <= 0)).to(r.dtype)
        t.copy_(r.clamp_(QMIN, QMAX)).mul_(1.0 / scale)
        return 0.0

    with _one_thread() as threads:
        in_order(_chunks(flat.numel()), chunk, threads)
    return out


def quantize_act_(x: torch.Tensor, fp: int) -> torch.Tensor:
    """Quantize a contiguous float32 activation in place (round half up); returns x."""
    # floor(t + 0.5), t = x * 2^fp, in cache-sized chunks. Scaling by 2^fp is exact, so t + 0.5 rounds at most
    # once, and it can only round across an integer for t = 0.5 - 2^-25 (the one float whose sum, 1 - 2^-25,
    # lies in the next binade), which must give 0 as the kernel's std::round gives. It is not rare: a bilinear
    # resize of quantized values makes it. hardshrink at that value first sends every |t| <= 0.5 - 2^-25 to 0,
    # whose half-up rounding they all share, in one pass (checking for the value costs three).
    scale = 2.0 ** fp
    inv = 1.0 / scale
    flat = x.view(-1)

    def chunk(s: int) -> float:
        t = flat[s:s + CHUNK]
        buf = _scratch().get(t.numel())[0]
        torch.ops.aten.hardshrink.out(t.mul_(scale), _BELOW_HALF, out=buf)
        torch.add(buf, 0.5, out=t).floor_().clamp_(QMIN, QMAX).mul_(inv)
        return 0.0

    with _one_thread() as threads:
        in_order(_chunks(flat.numel()), chunk, threads)
    return x


def quantize_act(x: torch.Tensor, fp: int) -> torch.Tensor:
    """An activation on the DPU grid (round half up), as float, into a new tensor."""
    return quantize_act_(x.detach().float().clone(memory_format=torch.contiguous_format), fp)


def overflow_free_fp(x_min: float, x_max: float) -> int:
    """fp0: the largest fix position at which min and max do not overflow (float32 as the kernel computes it)."""
    step = max(np.float32(x_min) / _FIX_LB, np.float32(x_max) / _FIX_UB)
    if step <= _FLT_MIN:
        return 18
    return int(np.floor(np.log2(np.float32(1.0) / np.float32(step))))


def sse_candidates(x: torch.Tensor, fps: Sequence[int]) -> List[float]:
    """Sum of squared quantization error of x at each fix position, in units of x squared.

    Ties round to even here: a tie's error is half a step whichever way it goes, so the sums equal those of
    the tensor's own rounding (half up, or half away from zero), with cheaper kernels. Clamping to
    [-128, 127] before rounding gives the same integers as rounding then clamping, since the bounds are integers.
    The tensor is walked in cache-sized chunks, every candidate on a chunk before the next: memory traffic,
    not arithmetic, is what costs here (about 10x over whole-tensor passes). Sums accumulate in float64.
    """
    flat = x.reshape(-1)
    scales = [2.0 ** fp for fp in fps]

    def chunk(s: int) -> List[float]:
        xs = flat[s:s + CHUNK]
        t, q = _scratch().get(xs.numel())
        out = []
        for scale in scales:
            torch.mul(xs, scale, out=t)  # exact: a power of two
            torch.clamp(t, QMIN, QMAX, out=q)
            q.round_()
            t.sub_(q)
            out.append(float(torch.dot(t, t)))
        return out

    with _one_thread() as threads:
        per_chunk = in_order(_chunks(flat.numel()), chunk, threads)
    sums = [0.0] * len(fps)
    for values in per_chunk:  # in chunk order, whatever the threads: the same float64 sums every time
        for i, v in enumerate(values):
            sums[i] += v
    return [v / (sc * sc) for v, sc in zip(sums, scales)]


def diffs_fix_pos(x: torch.Tensor, scope: int = DIFFS_SCOPE) -> int:
    """The fix position vai_q_pytorch's diffs method picks for x (uncapped)."""
    x = x.detach().float()
    with _one_thread():
        mn, mx = torch.aminmax(x)
    fp0 = overflow_free_fp(float(mn), float(mx))
    if scope <= 1:
        return fp0
    errs = sse_candidates(x, range(fp0, fp0 + scope))
    best = 0
    for k in range(1, len(errs)):
        if errs[k] < errs[best]:  # strictly less: the first of equal candidates wins
            best = k
    return fp0 + best


def capped(fp: int) -> int:
    return min(MAX_FIX_POS, fp)


def modal_fp(history: Iterable[int]) -> int:
    """The most frequent fix position; ties go to the smallest (scipy.stats.mode, as nndct uses it)."""
    counts = Counter(history)
    top = max(counts.values())
    return min(fp for fp, n in counts.items() if n == top)
