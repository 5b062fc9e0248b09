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

Every function here is pure and works on whole tensors. Only diffs_fix_pos looks for inf/nan, in the min and max
it computes anyway (vai_q_pytorch skips such a tensor); nothing else checks (vai_q_pytorch's per-tensor checks
are what makes it slow, and a non-finite activation is a broken model, not a quantization question).
"""

import math
import threading
from collections import Counter
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

BIT_WIDTH = 8
QMIN = -(1 << (BIT_WIDTH - 1))
QMAX = (1 << (BIT_WIDTH - 1)) - 1
MAX_FIX_POS = 12  # nndct_max_fix_position's default, applied to parameters and activations alike
DIFFS_SCOPE = 5  # nndct_diffs_mode "mse": fp0 .. fp0 + 4
CHUNK = 1 << 18  # elements per piece of work (1 MiB of float32; see sse_candidates)
# elements per piece when quantizing in place: each pass of the four or five over a piece finds it in the cache
QCHUNK = 1 << 19
_FLT_MIN = np.float32(np.finfo(np.float32).tiny)
_FIX_LB = np.float32(QMIN - 0.5)  # -128.5
_FIX_UB = np.float32(QMAX + 0.5)  # 127.5
_BELOW_HALF = 0.5 - 2.0 ** -25  # the float just below 0.5


class Scratch:
    """Two float32 buffers of CHUNK elements, reused across calls."""

    def __init__(self) -> None:
        self._a = torch.empty(CHUNK)
        self._b = torch.empty(CHUNK)

    def get(self, n: int):
        return self._a[:n], self._b[:n]


_LOCAL = threading.local()


def _scratch() -> Scratch:
    """This thread's scratch buffers."""
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None:
        scratch = _LOCAL.scratch = Scratch()
    return scratch


_CONSTS: Dict[float, torch.Tensor] = {}


def const(value: float) -> torch.Tensor:
    """value as a 0-dim float32 tensor, made once. Passed to torch ops in place of the Python float it equals,
    it spares each call the conversion of a Python number into a tensor (about 2 us; a calibration makes tens
    of thousands of such calls). The results are the same: an operand that is a 0-dim tensor of the same
    category does not change the result's dtype, and a float32 argument is what the kernel casts a float to."""
    t = _CONSTS.get(value)
    if t is None:
        t = _CONSTS[value] = torch.tensor(value, dtype=torch.float32)
    return t


def _chunks(n: int, size: int = CHUNK) -> List[slice]:
    """n elements in pieces of at most size, of near-equal size.

    The pieces are worked through one after the other, each op on a piece using torch's own intra-op threads.
    Never torch.set_num_threads around them: in builds whose oneDNN caches kernels per thread count (Debian's
    torch 1.13, measured) every change makes the next convolution 5x slower (22 ms instead of 4)."""
    pieces = -(-n // size)
    bounds = [n * k // pieces for k in range(pieces + 1)] if pieces else [0, 0]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


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

    def chunk(s: slice) -> float:
        t = flat[s]
        r = torch.round(t)  # halves to even; the halves that went toward zero move one step out
        d = t - r
        r += ((d == 0.5) & (r >= 0)).to(r.dtype)
        r -= ((d == -0.5) & (r <= 0)).to(r.dtype)
        t.copy_(r.clamp_(QMIN, QMAX)).mul_(1.0 / scale)
        return 0.0

    for piece in _chunks(flat.numel()):
        chunk(piece)
    return out


Activation = Optional[Callable[[torch.Tensor], torch.Tensor]]


def relu6_(t: torch.Tensor) -> torch.Tensor:
    return F.relu6(t, inplace=True)


# activations after which every value is >= 0, with their upper bound
NONNEG: Dict[Callable, float] = {torch.relu_: math.inf, relu6_: 6.0}


def _quantize_chunk_(t: torch.Tensor, fp: int, act: Activation = None, exact_half: bool = True, in_exp: int = 0,
                     unscale: bool = True, nonneg: bool = False) -> None:
    """Quantize a contiguous piece of an activation in place (round half up), applying act first. The piece
    holds the activation times 2^in_exp; it is left as the activation's value on the grid, or with unscale=False
    as the integers themselves (the value times 2^fp). nonneg promises t >= 0 (an activation already applied)."""
    # floor(t + 0.5), t = x * 2^fp. Scaling by 2^fp is exact, so t + 0.5 rounds at most once, and it can only
    # round across an integer for t = 0.5 - 2^-25 (the one float whose sum, 1 - 2^-25, lies in the next
    # binade), which must give 0 as the kernel's std::round gives. It is not rare: a bilinear resize of
    # quantized values makes it. hardshrink at that value first sends every |t| <= 0.5 - 2^-25 to 0, whose
    # half-up rounding they all share, in one pass (checking for the value costs three); after a ReLU,
    # threshold does both in that pass. It runs on x, at the threshold scaled back to x's units (exact, as is
    # every comparison under a power-of-two scale), and the scaling joins the add: 0.5 + 2^fp * x rounds once,
    # as t + 0.5 does. Without exact_half (the caller knows that x holds multiples of 2^-(fp + 24), which that
    # one float is not) the hardshrink is left out. Every pass writes into t: no second buffer to fill and read.
    scale = 2.0 ** (fp - in_exp)  # from t to the integers' units
    top = NONNEG.get(act) if act is not None else (math.inf if nonneg else None)
    if top is not None:
        # t >= 0 after act: floor(t + 0.5 - 2^-25) is floor(t + 0.5) for every float t >= 0 (the add rounds a
        # tie k + 0.5 up to k + 1, and nothing else across an integer), so no exact-half pass; and hardtanh
        # applies the ReLU (or ReLU6) and the clamp at 127 in one pass (floor(127 + 0.5 - 2^-25) = 127)
        F.hardtanh(t, 0.0, min(top * 2.0 ** in_exp, QMAX / scale), inplace=True)
        torch.add(const(_BELOW_HALF), t, alpha=scale, out=t).floor_()
        if unscale:
            t.mul_(const(2.0 ** -fp))
        return
    if exact_half and act is torch.relu_:
        torch.threshold_(t, _BELOW_HALF / scale, 0.0)  # relu, then hardshrink of what is left, in one pass
    else:
        if act is not None:
            act(t)
        if exact_half:
            torch.ops.aten.hardshrink.out(t, _BELOW_HALF / scale, out=t)
    torch.add(const(0.5), t, alpha=scale, out=t).floor_().clamp_(QMIN, QMAX)
    if unscale:
        t.mul_(const(2.0 ** -fp))


def flat_view(x: torch.Tensor) -> Optional[torch.Tensor]:
    """x's memory as a 1-D view, when x fills it densely in some order of its dims (contiguous, or channels-last
    as the test-mode model lays images out); else None. Elementwise work on that view is work on x."""
    if x.is_contiguous():
        return x.view(-1)
    order = sorted(range(x.dim()), key=lambda d: -x.stride(d))
    permuted = x.permute(order)
    return permuted.view(-1) if permuted.is_contiguous() else None


def is_dense(x: torch.Tensor) -> bool:
    return flat_view(x) is not None


def _flat(x: torch.Tensor) -> torch.Tensor:
    """x's elements in one dimension: its memory where dense (in-place work reaches x), else a copy."""
    flat = flat_view(x)
    return x.reshape(-1) if flat is None else flat


def quantize_act_(x: torch.Tensor, fp: int, act: Activation = None, exact_half: bool = True, in_exp: int = 0,
                  unscale: bool = True, nonneg: bool = False) -> torch.Tensor:
    """Quantize a dense float32 activation (flat_view) in place (round half up); returns x. act, an in-place op
    such as torch.relu_, is applied first, piece by piece, saving a pass over memory. exact_half=False promises
    that x holds multiples of 2^-(fp + 24) (products and sums of values on the DPU grid do), which saves a pass.
    x may hold the activation times 2^in_exp; unscale=False leaves the integers (the value times 2^fp), for a
    reader that takes the scale into its own weights, which saves a pass. After a ReLU or ReLU6, as act or
    already applied (nonneg=True), a rounding that needs no exact-half pass saves one too."""
    flat = flat_view(x)
    for piece in _chunks(flat.numel(), QCHUNK):
        _quantize_chunk_(flat[piece], fp, act, exact_half, in_exp, unscale, nonneg)
    return x


def own_copy(x: torch.Tensor) -> torch.Tensor:
    """x as a new contiguous float32 tensor (channels-last if x is), for the in-place functions here to change."""
    x = x.detach().float()
    last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return x.clone(memory_format=torch.channels_last if last else torch.contiguous_format)


def quantize_act(x: torch.Tensor, fp: int) -> torch.Tensor:
    """An activation on the DPU grid (round half up), as float, into a new tensor."""
    return quantize_act_(own_copy(x), fp)


def overflow_free_fp(x_min: float, x_max: float) -> int:
    """fp0: the largest fix position at which min and max do not overflow (float32 as the kernel computes it)."""
    step = max(np.float32(x_min) / _FIX_LB, np.float32(x_max) / _FIX_UB)
    if step <= _FLT_MIN:
        return 18
    return int(np.floor(np.log2(np.float32(1.0) / np.float32(step))))


def sse_candidates(x: torch.Tensor, fps: Sequence[int], then_fp: Optional[int] = None,
                   extremes: Optional[Tuple[float, float]] = None, nonneg: bool = False) -> List[float]:
    """Sum of squared quantization error of x at each fix position, in units of x squared. With then_fp, x (a
    dense float32 activation) is also quantized in place at then_fp, each piece while it is in cache.

    Ties round to even here: a tie's error is half a step whichever way it goes, so the sums equal those of
    the tensor's own rounding (half up, or half away from zero), with cheaper kernels. Clamping to
    [-128, 127] before rounding gives the same integers as rounding then clamping, since the bounds are integers.
    The tensor is walked in chunks of at most CHUNK elements (1 MiB), every candidate on a chunk before the
    next, so that the chunk is read from memory once and the other passes over it hit the cache (about 10x
    faster than whole-tensor passes); larger chunks than the L2 cache still win, by spending less on the ~5 us
    each call costs (measured on 2 cores: 2.2 ns per element at 256K elements, 3.5 ns at 128K, 5.3 ns at 32K).
    Sums accumulate in float64.

    With extremes (x's min and max), only the least sum is worked out: every error is at most half a step, or
    the distance from the extremes to the clamped range, so a candidate whose partial sum already exceeds what
    another can reach at most cannot be the least; it is dropped and comes back as inf. Once one candidate is
    left, the sums stop (the one left comes back with a partial sum). The least is found exactly as without.
    """
    flat = _flat(x)
    scales = [2.0 ** fp for fp in fps]
    if flat.numel() * len(scales) <= CHUNK:
        # a small tensor (squeeze-excitation vectors, deep layers): all candidates in one pass each of the
        # five ops, rows of a [candidates, n] matrix, instead of five calls per candidate
        t = flat.unsqueeze(0) * torch.tensor(scales, dtype=flat.dtype).unsqueeze(1)
        q = torch.clamp(t, QMIN, QMAX).round_()
        t.sub_(q)
        sums = t.mul_(t).sum(1).tolist()
        if then_fp is not None:
            quantize_act_(x, then_fp, nonneg=nonneg)
        return [v / (sc * sc) for v, sc in zip(sums, scales)]

    n = flat.numel()
    sums = [0.0] * len(scales)  # in units of the candidate's step squared
    alive = list(range(len(scales)))
    worst = None  # per candidate, the most one element can add (in units of x squared), with a margin for the
    in_range = [False] * len(scales)  # float32 rounding of the pieces' sums
    if extremes is not None:
        lo, hi = extremes
        worst = [max(0.5 / sc, hi - QMAX / sc, QMIN / sc - lo) ** 2 * (1 + 1e-4) for sc in scales]
        # where x * scale stays within [-128.5, 127.5] (fp0 by its definition), clamping cannot change an error:
        # only 127.5 and -128.5 could round out of range, and both lie half a step from the bound they clamp to
        in_range = [lo * sc >= _FIX_LB and hi * sc <= _FIX_UB for sc in scales]
    done = 0
    for piece in _chunks(n):
        xs = flat[piece]
        if len(alive) > 1:
            t, q = _scratch().get(xs.numel())
            for i in alive:
                torch.mul(xs, const(scales[i]), out=t)  # exact: a power of two
                if in_range[i]:
                    torch.round(t, out=q)
                else:
                    torch.clamp(t, QMIN, QMAX, out=q).round_()
                sums[i] += sum_of_squares(t.sub_(q))
            done += xs.numel()
            if worst is not None:
                reach = min(sums[j] / scales[j] ** 2 + (n - done) * worst[j] for j in alive)
                alive = [i for i in alive if not sums[i] / scales[i] ** 2 > reach]
        if then_fp is not None:
            _quantize_chunk_(xs, then_fp, nonneg=nonneg)
    return [sums[i] / scales[i] ** 2 if i in alive else math.inf for i in range(len(scales))]


def _dot_is_fast() -> bool:
    """Whether torch.dot runs on an optimised BLAS (MKL, OpenBLAS): there it sums squares in one pass, 40% faster
    than square-then-sum; on the reference BLAS (Debian's torch) it is 5x slower than that pair (measured)."""
    config = torch.__config__.show()
    return any(("BLAS_INFO=" + name) in config for name in ("mkl", "open", "flexi", "accelerate"))


_FAST_DOT = _dot_is_fast()


def sum_of_squares(t: torch.Tensor) -> float:
    """The sum of t's squared elements, as a float; t (a contiguous float32 scratch tensor) may be overwritten."""
    if _FAST_DOT:
        return float(torch.dot(t, t))
    return float(t.square_().sum())


def min_max_(x: torch.Tensor, act: Activation = None) -> Tuple[float, float]:
    """x's least and greatest element, after applying act (an in-place op such as torch.relu_) to x."""
    flat = _flat(x)

    def chunk(s: slice) -> Tuple[float, float]:
        t = flat[s]
        if act is not None:
            act(t)
        mn, mx = torch.aminmax(t)
        return float(mn), float(mx)

    parts = [chunk(piece) for piece in _chunks(flat.numel())]
    return min(p[0] for p in parts), max(p[1] for p in parts)


def diffs_fix_pos(x: torch.Tensor, scope: int = DIFFS_SCOPE, act: Activation = None,
                  then_fp: Optional[int] = None) -> Optional[int]:
    """The fix position vai_q_pytorch's diffs method picks for x (uncapped); None when x holds an inf or a nan,
    which nndct does not quantize (torchquantizer.py `quantize`: is_valid_tensor_for_quantizer, "the quantization
    for this tensor is ignored"): x is then left as it is (act applied), even with then_fp.

    For an activation (dense float32, the caller's to change) two passes over memory can be saved: act
    (an in-place op such as torch.relu_) is applied to x first, within the min/max pass, and x is quantized in
    place at then_fp within the error pass, when the caller knows that fix position beforehand."""
    if act is not None or then_fp is not None:
        assert x.dtype == torch.float32 and is_dense(x), "in-place work needs a dense float32 tensor"
    else:
        x = x.detach().float()
    mn, mx = min_max_(x, act)
    if not (math.isfinite(mn) and math.isfinite(mx)):  # torch's min and max propagate nan
        return None
    fp0 = overflow_free_fp(mn, mx)
    if scope <= 1:
        if then_fp is not None:
            quantize_act_(x, then_fp, nonneg=mn >= 0)
        return fp0
    return fp0 + first_least(sse_candidates(x, range(fp0, fp0 + scope), then_fp, (mn, mx), nonneg=mn >= 0))


def first_least(errs: Sequence[float]) -> int:
    """The index of the least error; of equal ones, the first (nndct compares with strictly less)."""
    best = 0
    for k in range(1, len(errs)):
        if errs[k] < errs[best]:
            best = k
    return best


def capped(fp: int) -> int:
    return min(MAX_FIX_POS, fp)


def settled_mode(history: Sequence[int], more: int = 1) -> Optional[int]:
    """The mode of history if `more` further entries, whatever they are, cannot change it; else None.

    The worst case for the mode is every further entry going to one rival: a position already in the history
    with n entries reaches n + more, one not yet seen reaches more, and either one could be smaller than the
    mode, which wins ties."""
    if not history:
        return None
    counts = Counter(history)
    mode = modal_fp(history)
    top = counts[mode]
    if top <= more:
        return None
    for fp, n in counts.items():
        # a rival fp ends with n + more: the mode stays unless top is still greater, or equal with mode smaller
        if fp != mode and not (top > n + more or (top == n + more and mode < fp)):
            return None
    return mode


def modal_fp(history: Iterable[int]) -> int:
    """The most frequent fix position; ties go to the smallest (scipy.stats.mode, as nndct uses it)."""
    counts = Counter(history)
    top = max(counts.values())
    return min(fp for fp, n in counts.items() if n == top)
