"""RoIAlign with max aggregation: hand-computed cases (ramp, ties, off-map samples, empty grids),
bit-exact backend agreement, finite-difference gradients, argmax checks, empty inputs and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirc import Tensor
from minirc.nn import functional as F
from minirc.ops.roi_align import roi_align
from minirc.ops.roi_align_max import FLT_MAX, roi_align_max, roi_align_max_backward
from minirc.testing import assert_backends_agree, gradcheck, numerical_grad
from roi_cases import BAD_SAMPLING_ARGUMENTS, assert_refuses, random_case
from roi_cases import rois as _rois

X10 = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)  # value 10r + c: bilinear reads 10y + x


def _both(x, rois, size, scale, sr, aligned, backend):
    out, arg = roi_align_max(x, rois, size, scale, sr, aligned, return_argmax=True, backend=backend)
    return np.asarray(out), np.asarray(arg)


# ---- golden values, worked by hand -----------------------------------------------------------------
def test_ramp_takes_the_last_sample_of_every_bin(backend):
    # Legacy roi [0, 9]: size 9, bins of 4.5, 2x2 samples at 1.125, 3.375 | 5.625, 7.875 per axis.
    # X10 grows with y and x, so each bin's max is its last sample (iy = ix = 1: argmax 3):
    # (3.375, 3.375) -> 37.125, (3.375, 7.875) -> 41.625, (7.875, 3.375) -> 82.125, (7.875, 7.875)
    # -> 86.625. The mean (RoIAlign) of the same samples: [[24.75, 29.25], [69.75, 74.25]].
    out, arg = _both(X10, _rois([0, 0, 0, 9, 9]), 2, 1.0, 2, False, backend)
    np.testing.assert_allclose(out[0, 0], [[37.125, 41.625], [82.125, 86.625]], atol=1e-5)
    np.testing.assert_array_equal(arg[0, 0], [[3, 3], [3, 3]])
    np.testing.assert_allclose(roi_align(X10, _rois([0, 0, 0, 9, 9]), 2, 1.0, 2, False)[0, 0],
                               [[24.75, 29.25], [69.75, 74.25]], atol=1e-5)


def test_aligned_shifts_the_samples_by_half_a_cell(backend):
    # aligned roi [1, 3]: start 0.5, size 2, one bin, samples at 1.0 and 2.0 -> max at (2, 2) = 22
    # (legacy: start 1, samples at 1.5 and 2.5 -> 27.5)
    for aligned, expected in [(True, 22.0), (False, 27.5)]:
        out, arg = _both(X10, _rois([0, 1, 1, 3, 3]), 1, 1.0, 2, aligned, backend)
        assert out[0, 0, 0, 0] == pytest.approx(expected) and arg[0, 0, 0, 0] == 3


def test_ties_keep_the_first_sample_and_only_it_gets_the_gradient(backend):
    # A bump of 8 at (2, 2); legacy roi [0, 4], one bin, 4x4 samples at 0.5, 1.5, 2.5, 3.5 per axis.
    # The bump reads 8 * (1 - |y - 2|) * (1 - |x - 2|): the four samples at (1.5 | 2.5, 1.5 | 2.5) all
    # read 8 * 0.5 * 0.5 = 2, a tie; the first in (iy, ix) order, (1, 1), index 1 * 4 + 1 = 5, wins.
    # Its gradient goes to its neighbours rows 1-2, cols 1-2, each weight 0.5 * 0.5 (the mean would
    # be 0.5 and spread its gradient over all 16 samples).
    x = np.zeros((1, 1, 5, 5), np.float32)
    x[0, 0, 2, 2] = 8.0
    roi = _rois([0, 0, 0, 4, 4])
    out, arg = _both(x, roi, 1, 1.0, 4, False, backend)
    assert out[0, 0, 0, 0] == 2.0 and arg[0, 0, 0, 0] == 5
    assert roi_align(x, roi, 1, 1.0, 4, False)[0, 0, 0, 0] == 0.5
    g = roi_align_max_backward(np.ones((1, 1, 1, 1), np.float32), arg, roi, x.shape, 1.0, 4, False, backend=backend)
    expected = np.zeros((5, 5))
    expected[1:3, 1:3] = 0.25
    np.testing.assert_array_equal(np.asarray(g)[0, 0], expected)


def test_an_off_map_sample_counts_as_zero_and_passes_no_gradient(backend):
    # All features -1; legacy roi [2, 6] on a 4x4 map, 2x2 samples at 3 and 5 per axis: (3, 3) is on
    # the map (-1), the other three are beyond H = 4 (value 0). The max is 0, won by the off-map
    # sample (3, 5): argmax -1, and no gradient reaches the map.
    x = -np.ones((1, 1, 4, 4), np.float32)
    roi = _rois([0, 2, 2, 6, 6])
    out, arg = _both(x, roi, 1, 1.0, 2, False, backend)
    assert out[0, 0, 0, 0] == 0.0 and arg[0, 0, 0, 0] == -1
    g = roi_align_max_backward(np.ones((1, 1, 1, 1), np.float32), arg, roi, x.shape, 1.0, 2, False, backend=backend)
    assert not np.asarray(g).any()
    # with positive features the on-map sample wins: argmax 0
    out, arg = _both(-x, roi, 1, 1.0, 2, False, backend)
    assert out[0, 0, 0, 0] == 1.0 and arg[0, 0, 0, 0] == 0


def test_no_valid_sample_gives_zero_and_no_gradient(backend):
    # entirely off the map: every sample 0 -> 0, argmax -1
    out, arg = _both(X10, _rois([0, -20, -20, -12, -12]), 2, 1.0, 2, False, backend)
    assert not out.any() and (arg == -1).all()
    # an empty grid: aligned roi of zero height, adaptive sampling -> ceil(0) = 0 samples -> 0, -1
    x = np.random.default_rng(0).standard_normal((1, 1, 5, 5)).astype(np.float32) - 5.0
    roi = _rois([0, 1, 2, 4, 2])
    out, arg = _both(x, roi, 3, 1.0, -1, True, backend)
    assert not out.any() and (arg == -1).all()
    g = roi_align_max_backward(np.ones((1, 1, 3, 3), np.float32), arg, roi, x.shape, 1.0, -1, True, backend=backend)
    assert not np.asarray(g).any()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the simulator's scalar 0 * -inf
def test_all_minus_inf_bin_gives_minus_flt_max(backend):
    # the running max starts at -FLT_MAX (as RoIPool's); -inf samples (here NaN: 0 * -inf in the
    # bilinear sum) never beat it
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    out, arg = _both(x, _rois([0, 1, 1, 2, 2]), 1, 1.0, 1, True, backend)
    assert out[0, 0, 0, 0] == -FLT_MAX and arg[0, 0, 0, 0] == -1


# ---- relations to RoIAlign -------------------------------------------------------------------------
def _random_case(rng, **kwargs):
    return random_case(rng, corners=(-10, 70), size=60, **kwargs)  # boxes of the small maps used here


@pytest.mark.parametrize("aligned", [False, True])
def test_one_sample_per_bin_is_roi_align(rng, aligned):
    # with a single sample per bin, max and mean are that sample (off the map: 0 in both)
    x, rois = _random_case(rng)
    np.testing.assert_array_equal(roi_align_max(x, rois, 3, 1 / 8, 1, aligned, backend="cpu"),
                                  roi_align(x, rois, 3, 1 / 8, 1, aligned, backend="cpu"))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), sr=st.integers(-1, 3), aligned=st.booleans())
def test_max_is_at_least_the_mean(seed, sr, aligned):
    # off-map samples are 0 in both, so the max of a bin's samples bounds their mean
    x, rois = _random_case(np.random.default_rng(seed), dtype=np.float64)
    mx = roi_align_max(x, rois, 2, 1 / 8, sr, aligned, backend="numpy")
    mean = roi_align(x, rois, 2, 1 / 8, sr, aligned, backend="numpy")
    assert np.all(mx >= mean - 1e-12)


# ---- backends agree bit for bit --------------------------------------------------------------------
@pytest.mark.parametrize("scale, sr, aligned, size, ties", [(1 / 8, 2, False, 3, False), (1 / 8, -1, True, (2, 3), True),
                                                            (1 / 16, 0, False, 2, True), (0.125, 3, True, 2, False)])
def test_numpy_cpu_cuda_forward_and_backward_identical(rng, scale, sr, aligned, size, ties):
    x, rois = _random_case(rng, ties=ties)
    out, arg = assert_backends_agree(
        lambda backend: roi_align_max(x, rois, size, scale, sr, aligned, return_argmax=True, backend=backend),
        rtol=0, atol=0)
    assert (arg >= 0).mean() > 0.3  # the case reaches the map
    g = rng.standard_normal(out.shape).astype(np.float32)
    assert_backends_agree(
        lambda backend: roi_align_max_backward(g, arg, rois, x.shape, scale, sr, aligned, backend=backend),
        rtol=0, atol=0)


def test_backward_is_deterministic(rng):
    x, rois = _random_case(rng, n=1, c=2, h=5, w=5, k=200)
    out, arg = roi_align_max(x, rois, 2, 1 / 16, 2, False, return_argmax=True, backend="cpu")
    g = rng.standard_normal(out.shape).astype(np.float32)
    runs = [roi_align_max_backward(g, arg, rois, x.shape, 1 / 16, 2, False, backend="cpu") for _ in range(2)]
    assert runs[0].tobytes() == runs[1].tobytes()


# ---- gradients: float64 finite differences ---------------------------------------------------------
@pytest.mark.parametrize("aligned, sr", [(False, 2), (True, -1), (False, 3)])
def test_backward_matches_finite_differences(rng, aligned, sr):
    x, rois = _random_case(rng, n=2, c=2, h=4, w=5, k=3, dtype=np.float64)
    rois[0] = [1, -3.0, 2.0, 40.0, 30.0]  # partly off the map (scale 1/8)
    rois[1] = [0, 4.0, 3.0, 20.0, 28.0]
    w = rng.standard_normal((3, 2, 2, 2))

    def loss(arr):
        return float(np.sum(roi_align_max(arr, rois, 2, 1 / 8, sr, aligned, backend="numpy") * w))

    _, arg = roi_align_max(x, rois, 2, 1 / 8, sr, aligned, return_argmax=True, backend="numpy")
    numeric = numerical_grad(loss, [x.copy()], 0)
    analytic = roi_align_max_backward(w, arg, rois, x.shape, 1 / 8, sr, aligned, backend="numpy")
    np.testing.assert_allclose(analytic, numeric, atol=1e-7)
    assert np.abs(analytic).sum() > 0


def test_autograd_gradcheck(rng):
    x = rng.standard_normal((1, 2, 5, 6))
    boxes = [np.array([[2.0, 3.0, 30.0, 25.0], [-6.0, 1.0, 12.0, 50.0]])]
    gradcheck(lambda t: F.roi_align_max(t, boxes, 2, 1 / 8, 2, aligned=True), [x])


# ---- inputs: empties, argmax checks, errors --------------------------------------------------------
@pytest.mark.parametrize("boxes", [np.zeros((0, 5), np.float32), [np.zeros((0, 4)), np.zeros((0, 4))], []])
def test_empty_rois(backend, boxes):
    x = np.ones((2, 3, 4, 4), np.float32)
    out, arg = roi_align_max(x, boxes, (2, 3), return_argmax=True, backend=backend)
    assert out.shape == arg.shape == (0, 3, 2, 3) and out.dtype == np.float32 and arg.dtype == np.int32
    grad = roi_align_max_backward(np.zeros((0, 3, 2, 3), np.float32), arg, np.zeros((0, 5)), x.shape, backend=backend)
    assert grad.shape == x.shape and not np.asarray(grad).any()


def test_autograd_with_no_rois_and_list_boxes(rng):
    t = Tensor(np.ones((1, 2, 4, 4), np.float32), requires_grad=True)
    F.roi_align_max(t, np.zeros((0, 5), np.float32), 2).sum().backward()
    assert t.grad is None or not np.asarray(t.grad).any()
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    b0, b1 = np.array([[0, 0, 30, 40]], np.float32), np.array([[5, 5, 60, 60], [1, 2, 3, 4]], np.float32)
    rois = np.concatenate([np.array([[0], [1], [1]], np.float32), np.concatenate([b0, b1])], 1)
    np.testing.assert_array_equal(F.roi_align_max(Tensor(x), [b0, b1], 2, 0.1, 2).numpy(),
                                  roi_align_max(x, rois, 2, 0.1, 2))


@pytest.mark.parametrize("argmax, err, match", [
    (np.full((1, 1, 2, 2), 4, np.int32), ValueError, r"argmax: roi 0 has 4 samples per bin.*\[-1, 4\)"),
    (np.full((1, 1, 2, 2), -2, np.int32), ValueError, r"argmax: roi 0 has 4 samples"),
    (np.zeros((1, 1, 2, 3), np.int32), ValueError, r"argmax: expected the shape of grad_output"),
    (np.zeros((1, 1, 2, 2), np.float32), TypeError, r"argmax: expected the int32 array"),
])
def test_backward_checks_argmax(argmax, err, match):
    with pytest.raises(err, match=match):
        roi_align_max_backward(np.ones((1, 1, 2, 2), np.float32), argmax, _rois([0, 0, 0, 2, 2]), (1, 1, 4, 4),
                               1.0, 2, False)


@pytest.mark.parametrize("kwargs, err, match", BAD_SAMPLING_ARGUMENTS + [
    (dict(boxes=_rois([2, 0, 0, 2, 2])), ValueError, "boxes: batch index"),
    (dict(sampling_ratio=5000), ValueError, "sampling_ratio: 5000"),
    (dict(aligned="yes"), TypeError, "aligned"),
    (dict(input=np.ones((1, 1, 4, 0), np.float32)), ValueError, "input: expected a feature map with H, W >= 1"),
    (dict(boxes=_rois([0, 0, 0, 1e9, 1e9])), ValueError, "boxes: roi 0 .*needs .* samples"),
])
def test_bad_arguments(kwargs, err, match):
    assert_refuses(roi_align_max, kwargs, err, match)
