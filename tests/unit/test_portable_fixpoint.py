"""The DPU arithmetic of the portable quantizer: rounding, diffs, modal selection."""

import itertools
import math

import numpy as np
import pytest
import torch

from container_payload.backends.portable import fixpoint as fxp

TIES = [-2.5, -0.5, 0.5, 2.5, -1.5, 1.5, 126.5, -127.5, 127.5, -128.5]


def test_round_half_up_on_ties():
    t = torch.tensor(TIES)
    assert fxp.round_half_up(t).tolist() == [-2, 0, 1, 3, -1, 2, 127, -127, 128, -128]


def test_round_half_away_on_ties():
    t = torch.tensor(TIES)
    assert fxp.round_half_away(t).tolist() == [-3, -1, 1, 3, -2, 2, 127, -128, 128, -129]


@pytest.mark.parametrize("fp", [-2, 0, 3, 7, 12])
def test_scaled_ties_activation_and_param(fp):
    x = torch.tensor(TIES) * 2.0 ** -fp
    act = fxp.quantize_act(x, fp) * 2.0 ** fp
    par = fxp.quantize_param(x, fp) * 2.0 ** fp
    assert act.tolist() == [-2, 0, 1, 3, -1, 2, 127, -127, 127, -128]  # clamped to [-128, 127]
    assert par.tolist() == [-3, -1, 1, 3, -2, 2, 127, -128, 127, -128]


def test_quantize_act_matches_exact_half_up_on_random_values():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300_000, generator=g) * 3
    x[::7] = torch.round(x[::7] * 16) / 16 + 1 / 32  # plenty of exact ties at fp 4
    for fp in (-3, 2, 4, 6, 12):
        y = x * 2.0 ** (4 - fp)  # the same values at this fix position's scale, exactly: ties stay ties
        # just below a half (where floor(t + 0.5) would give 1), its negative, the halves next to it, and the
        # halves at and beyond the clamp bounds
        y[3::11] = (0.5 - 2.0 ** -25) * 2.0 ** -fp
        y[5::13] = -(0.5 - 2.0 ** -25) * 2.0 ** -fp
        y[6::17] = torch.tensor([0.5, -0.5, 127.5, -128.5, 126.5, -127.5, 300.0, -300.0]).repeat(100_000)[
            :y[6::17].numel()] * 2.0 ** -fp
        ref = fxp.round_half_up(y * 2.0 ** fp).clamp(-128, 127) * 2.0 ** -fp
        assert torch.equal(fxp.quantize_act(y, fp), ref)


def test_quantize_param_matches_exact_half_away_on_random_values():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300_000, generator=g)
    x[::5] = torch.round(x[::5] * 64) / 64 + 1 / 128  # exact ties at fp 6
    for fp in (3, 6, 9):
        ref = fxp.round_half_away(x * 2.0 ** fp).clamp(-128, 127) * 2.0 ** -fp
        assert torch.equal(fxp.quantize_param(x, fp), ref)


def test_quantize_act_does_not_touch_its_input():
    x = torch.linspace(-3, 3, 101)
    before = x.clone()
    fxp.quantize_act(x, 5)
    assert torch.equal(x, before)


def _reference_diffs(x: np.ndarray, rounding: str, scope: int = 5) -> int:
    """cpu_diff_S, written plainly in float64 with the tensor's own rounding."""
    x32 = x.astype(np.float32)
    step = max(np.float32(x32.min()) / np.float32(-128.5), np.float32(x32.max()) / np.float32(127.5))
    fp0 = 18 if step <= np.finfo(np.float32).tiny else int(np.floor(np.log2(np.float32(1) / np.float32(step))))
    best, best_err = fp0, np.inf
    for fp in range(fp0, fp0 + scope):
        t = x32.astype(np.float64) * 2.0 ** fp
        if rounding == "half_up":
            r = np.floor(t + 0.5)
        else:
            r = np.sign(t) * np.floor(np.abs(t) + 0.5)
        q = np.clip(r, -128, 127) * 2.0 ** -fp
        err = np.sum((x32.astype(np.float64) - q) ** 2)
        if err < best_err:
            best, best_err = fp, err
    return best


@pytest.mark.parametrize("seed", range(12))
def test_diffs_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 40_000))
    kind = seed % 4
    if kind == 0:
        x = rng.normal(0, rng.uniform(0.01, 20), n)
    elif kind == 1:
        x = np.maximum(rng.normal(0, 2, n), 0)  # relu-like, many zeros
    elif kind == 2:
        x = rng.standard_t(2, n) * 0.3  # heavy tails: clamping matters
    else:
        x = rng.uniform(-1, 5, n)
        x[:3] = [40.0, -7.0, 0.0]  # outliers
    t = torch.from_numpy(x.astype(np.float32))
    assert fxp.diffs_fix_pos(t) == _reference_diffs(x, "half_up")
    assert fxp.diffs_fix_pos(t) == _reference_diffs(x, "half_away")
    assert fxp.diffs_fix_pos(t, scope=1) == _reference_diffs(x, "half_up", scope=1)


def test_diffs_on_a_large_tensor_spanning_many_chunks():
    g = torch.Generator().manual_seed(3)
    x = torch.relu(torch.randn(2, 16, 192, 96, generator=g)) * 4
    assert x.numel() > 2 * fxp.CHUNK
    assert fxp.diffs_fix_pos(x) == _reference_diffs(x.numpy().ravel(), "half_up")


def test_overflow_free_position_and_all_zero_tensor():
    assert fxp.overflow_free_fp(-1.0, 1.0) == 6  # 127.5 / 1 -> 2^6 = 64 fits, 128 does not
    assert fxp.overflow_free_fp(0.0, 0.0) == 18
    assert fxp.diffs_fix_pos(torch.zeros(10)) == 18
    assert fxp.capped(fxp.diffs_fix_pos(torch.zeros(10))) == 12


def test_strictly_least_keeps_the_first_of_equal_candidates():
    # values on the fp-3 grid with no overflow until fp 5: fp 3, 4 both give zero error; the first wins
    x = torch.tensor([1.0, -0.5, 0.25, 0.125, 15.0])
    assert fxp.overflow_free_fp(float(x.min()), float(x.max())) == 3
    assert fxp.diffs_fix_pos(x) == 3


@pytest.mark.parametrize("history, more, mode", [
    ([4, 4, 4], 2, 4), ([4, 4, 4], 3, None), ([4, 4, 4, 5], 2, 4), ([4, 4, 4, 3], 2, None), ([4, 4, 4, 4, 5], 3, 4),
    ([3, 3, 3, 4], 1, 3), ([3, 3, 3, 4], 2, 3),  # a 4 reaching 3 ties, and the tie goes to 3
    ([5, 5, 5, 4], 2, None),  # a 4 reaching 3 ties, and the tie goes to 4
])
def test_settled_mode_holds_against_any_further_entries(history, more, mode):
    assert fxp.settled_mode(history, more) == mode
    if mode is not None:
        for tail in itertools.product(range(2, 8), repeat=more):
            assert fxp.modal_fp(history + list(tail)) == mode


@pytest.mark.parametrize("history, expected", [
    ([5], 5), ([3, 4], 3), ([5, 4, 4, 5], 4), ([7, 7, 6], 7), ([6, 7, 7, 6, 8, 8], 6), ([9, 2, 9, 2, 2], 2),
])
def test_modal_fix_position_ties_go_to_the_smallest(history, expected):
    assert fxp.modal_fp(history) == expected


@pytest.mark.parametrize("history, mode", [
    ([], None), ([4], None), ([4, 4], 4), ([4, 4, 5], 4), ([4, 4, 4, 5], 4), ([5, 5, 5, 4], 5), ([5, 5, 5, 4, 4], None),
    ([3, 3, 4], 3),  # a 4 makes a tie, which the smaller position wins: still 3; a 5 or a 2 cannot reach it
    ([5, 5, 4], None),  # a 4 ties at 2, and the tie goes to 4
])
def test_settled_mode_is_the_mode_no_next_entry_can_move(history, mode):
    assert fxp.settled_mode(history) == mode
    if mode is not None:
        for new in range(0, 10):
            assert fxp.modal_fp(history + [new]) == mode


@pytest.mark.parametrize("act", [torch.relu_, lambda t: torch.nn.functional.relu6(t, inplace=True),
                                 lambda t: torch.nn.functional.leaky_relu(t, 0.1015625, inplace=True)])
@pytest.mark.parametrize("numel", [1000, 3 * fxp.CHUNK + 17])
def test_activation_fused_into_the_passes_gives_the_same_bits(act, numel):
    x = torch.randn(numel, generator=torch.Generator().manual_seed(numel)) * 5
    expected_fp = fxp.diffs_fix_pos(act(x.clone()))
    expected = fxp.quantize_act(act(x.clone()), 3)
    a = x.clone()
    assert fxp.diffs_fix_pos(a, act=act) == expected_fp and torch.equal(a, act(x.clone()))
    b = x.clone()
    assert fxp.diffs_fix_pos(b, act=act, then_fp=3) == expected_fp and torch.equal(b, expected)
    assert torch.equal(fxp.quantize_act_(x.clone(), 3, act), expected)


@pytest.mark.parametrize("fp", [-3, 0, 4, 12])
def test_relu_fused_into_the_quantizer_keeps_the_value_just_below_a_half_at_zero(fp):
    # after a ReLU the hardshrink and the ReLU are one threshold pass: 0.5 - 2^-25 (at this scale) must still
    # go to 0, a half to 1, and negatives to 0
    special = torch.tensor([0.5 - 2.0 ** -25, 0.5, -(0.5 - 2.0 ** -25), -0.5, 1.5, 2.5, 127.5, 300.0, -3.0, 0.0])
    x = torch.cat([special, torch.randn(5000, generator=torch.Generator().manual_seed(fp)) * 40]) * 2.0 ** -fp
    ref = fxp.round_half_up(x.relu() * 2.0 ** fp).clamp(-128, 127) * 2.0 ** -fp
    out = fxp.quantize_act_(x.clone(), fp, torch.relu_)
    assert torch.equal(out, ref)
    assert out[:8].mul(2.0 ** fp).tolist() == [0, 1, 0, 0, 2, 3, 127, 127]


def test_quantizing_values_on_a_coarse_grid_without_the_exact_half_pass_gives_the_same_bits():
    # products of two quantized tensors (fix positions 6 and 7) quantized at 2: multiples of 2^-13, ties
    # included, which is the promise exact_half=False asks for
    gen = torch.Generator().manual_seed(3)
    a = torch.randint(-128, 128, (200_000,), generator=gen).float() * 2.0 ** -6
    b = torch.randint(-128, 128, (200_000,), generator=gen).float() * 2.0 ** -7
    for fp in (-2, 2, 6, 12):
        y = a * b
        ties = (y * 2.0 ** fp - 0.5) == torch.floor(y * 2.0 ** fp)
        assert fp > 2 or ties.any()  # plenty of exact halves at the coarse positions
        ref = fxp.quantize_act(y, fp)
        assert torch.equal(fxp.quantize_act_(y.clone(), fp, exact_half=False), ref)
    # and it is the hardshrink that makes the difference where the promise does not hold
    bad = torch.full((10,), (0.5 - 2.0 ** -25) * 2.0 ** -3)
    assert fxp.quantize_act(bad, 3).eq(0).all()
    assert fxp.quantize_act_(bad.clone(), 3, exact_half=False).eq(2.0 ** -3).all()


def test_pieces_are_near_equal_and_cover_the_tensor():
    for n in (0, 1, fxp.CHUNK, fxp.CHUNK + 1, 5 * fxp.CHUNK + 3):
        pieces = fxp._chunks(n)
        assert pieces[0].start == 0 and pieces[-1].stop == n
        assert all(a.stop == b.start for a, b in zip(pieces, pieces[1:], strict=False))
        sizes = [p.stop - p.start for p in pieces]
        assert max(sizes) <= fxp.CHUNK and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("kind", ["gauss", "relu", "laplace", "uniform", "outliers", "on_grid", "constant"])
def test_dropping_candidates_that_cannot_win_picks_what_the_full_sums_pick(kind):
    gen = torch.Generator().manual_seed(len(kind))
    for trial in range(4):
        n = fxp.CHUNK * (1 + trial % 2) + 12345
        x = torch.randn(n, generator=gen)
        if kind == "relu":
            x = x.relu()
        elif kind == "laplace":
            x = torch.sign(x) * torch.log1p(torch.rand(n, generator=gen) * 1e6)
        elif kind == "uniform":
            x = torch.rand(n, generator=gen) * 2 - 1
        elif kind == "outliers":
            x[torch.randint(0, n, (5,), generator=gen)] = 40.0 * (trial + 1)
        elif kind == "on_grid":
            x = torch.round(x * 16) / 16  # every candidate from fix position 4 on is exact: ties at zero error
        elif kind == "constant":
            x = torch.full((n,), 0.3)
        x = x * 2.0 ** (trial - 3)
        mn, mx = (float(v) for v in torch.aminmax(x))
        fp0 = fxp.overflow_free_fp(mn, mx)
        full = fxp.sse_candidates(x, range(fp0, fp0 + 5))
        pruned = fxp.sse_candidates(x, range(fp0, fp0 + 5), extremes=(mn, mx))
        assert fxp.first_least(pruned) == fxp.first_least(full), (kind, trial, full, pruned)
        assert fxp.diffs_fix_pos(x) == fp0 + fxp.first_least(full)


def test_in_place_quantization_of_a_channels_last_tensor_keeps_its_layout():
    x = torch.randn(2, 5, 6, 7) * 3
    last = x.contiguous(memory_format=torch.channels_last)
    out = fxp.quantize_act_(fxp.own_copy(last), 4)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, fxp.quantize_act(x, 4))
    assert fxp.flat_view(x[:, :2]) is None  # a slice is not dense: no in-place work on its memory
    assert fxp.diffs_fix_pos(fxp.own_copy(last), then_fp=4) == fxp.diffs_fix_pos(x)


def _awkward_units() -> torch.Tensor:
    """Values in units of the grid step that rounding gets wrong easily: every tie k + 0.5 in range and the
    floats on either side of it, 0.5 - 2^-25 (whose plain float sum with 0.5 rounds up to 1), a fine sweep, values
    past the clamp, zeros and negatives."""
    ties = torch.arange(-129, 129, dtype=torch.float32) + 0.5
    up, down = torch.full_like(ties, math.inf), torch.full_like(ties, -math.inf)
    special = torch.tensor([0.5 - 2.0 ** -25, 0.5 - 2.0 ** -24, 2.0 ** -30, 0.0, -0.0, 127.0, 127.5, 128.0, 1e6, -1e6])
    sweep = torch.arange(-140 * 1024, 140 * 1024, dtype=torch.float32) / 1024
    return torch.cat([ties, torch.nextafter(ties, up), torch.nextafter(ties, down), special,
                      torch.nextafter(special, torch.full_like(special, math.inf)),
                      torch.nextafter(special, torch.full_like(special, -math.inf)), sweep])


@pytest.mark.parametrize("fp", [-3, 0, 4, 9])
@pytest.mark.parametrize("act", ["relu", "relu6", "nonneg"])
def test_rounding_after_a_relu_without_the_exact_half_pass_gives_the_same_bits(fp, act):
    x = _awkward_units() * 2.0 ** -fp
    fn = {"relu": torch.relu_, "relu6": fxp.relu6_, "nonneg": None}[act]
    y = x.clone() if fn is not None else x.clamp(min=0)
    reference = fxp.quantize_act(fn(y.clone()) if fn is not None else y, fp)  # the general path: exact-half pass
    assert torch.equal(fxp.quantize_act_(y.clone(), fp, fn, nonneg=fn is None), reference)
    units = fxp.quantize_act_(y.clone(), fp, fn, nonneg=fn is None, unscale=False)
    assert torch.equal(units * 2.0 ** -fp, reference)
    assert torch.equal(fxp.round_half_up(units), units)  # integers
