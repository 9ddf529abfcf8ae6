"""RoIWarp: hand-computed cases (the snap, C rounding of halves, adaptive grids, the border), the
identity with RoIAlign on the snapped box, bit-exact backend agreement, finite-difference gradients,
rois off the map, empty inputs and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirc import Tensor
from minirc.nn import functional as F
from minirc.ops._roi_sampling import MAX_SAMPLES_PER_ROI
from minirc.ops.roi_align import roi_align, roi_align_backward
from minirc.ops.roi_pool import MAX_CELL, roi_pool
from minirc.ops.roi_warp import roi_warp, roi_warp_backward
from minirc.testing import assert_backends_agree, gradcheck, numerical_grad
from roi_cases import BAD_SAMPLING_ARGUMENTS, assert_refuses
from roi_cases import random_case as _random_case
from roi_cases import rois as _rois

X10 = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)  # value 10r + c: bilinear reads 10y + x


# ---- golden values, worked by hand -----------------------------------------------------------------
# On X10 a bilinear sample at (y, x) inside the map reads 10y + x (the ramp is linear), so a bin's
# mean is 10 * mean(y) + mean(x) over its samples; samples in [H-1, H] read row/column 9.
GOLDEN = [  # (roi, output_size, spatial_scale, sampling_ratio, expected)
    # cells 0..9 (inclusive ends): size 10, bins of 5 cells, samples at 1.25, 3.75 | 6.25, 8.75,
    # means 2.5 | 7.5 -> [[27.5, 32.5], [77.5, 82.5]] (RoIAlign legacy on [0, 9]: 24.75, 29.25, ...)
    ([0, 0, 0, 9, 9], 2, 1.0, 2, [[27.5, 32.5], [77.5, 82.5]]),
    # the snap: round(1.4) = 1, round(3.6) = 4 -> size 4, one bin, samples at 2 and 4 -> mean 3 ->
    # 33 (RoIAlign legacy reads 1.95 and 3.05 -> 27.5; RoIPool takes the max of cells 1..4: 44)
    ([0, 1.4, 1.4, 3.6, 3.6], 1, 1.0, 2, [[33.0]]),
    # halves away from zero (C's round): 2.5 -> 3, 4.5 -> 5, size 3, one sample at 3 + 1.5 = 4.5
    # -> 49.5 (NumPy's half-to-even would give 2 and 4 and the sample at 3.5: 38.5)
    ([0, 2.5, 2.5, 4.5, 4.5], 1, 1.0, 1, [[49.5]]),
    # spatial_scale 0.5: 3 * 0.5 = 1.5 -> 2, 9 * 0.5 = 4.5 -> 5, size 4, bins of 2, samples at 3 | 5
    ([0, 3, 3, 9, 9], 2, 0.5, 1, [[33, 35], [53, 55]]),
    # adaptive: bins of 5 cells -> grid ceil(5) = 5, samples 0.5..4.5 (mean 2.5) | 5.5, 6.5, 7.5,
    # 8.5 and 9.5, which reads row 9 (clamped) -> mean 37 / 5 = 7.4 -> [[27.5, 32.4], [76.5, 81.4]]
    ([0, 0, 0, 9, 9], 2, 1.0, -1, [[27.5, 32.4], [76.5, 81.4]]),
    # partly off the map: cells 8..12, size 5, samples at 9.25 (clamped to 9) and 11.75 (> H: off,
    # 0); only the sample (9.25, 9.25) reads a pixel (99), the four count: 99 / 4
    ([0, 8, 8, 12, 12], 1, 1.0, 2, [[24.75]]),
    # entirely off the map: every sample < -1 -> 0
    ([0, -20, -20, -12, -12], 2, 1.0, 2, [[0, 0], [0, 0]]),
    # an inverted box is one cell (max(size, 1)) at its rounded start: cell 5, one sample at 5.5 per
    # axis -> 60.5 (RoIPool's malformed-roi rule)
    ([0, 5.2, 5.2, 2.0, 2.0], 1, 1.0, 1, [[60.5]]),
]


@pytest.mark.parametrize("roi, size, scale, sr, expected", GOLDEN)
def test_golden_cases(backend, roi, size, scale, sr, expected):
    out = roi_warp(X10, _rois(roi), size, scale, sr, backend=backend)
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-4)


def test_snap_then_pool_reads_the_same_cells_as_roi_pool():
    # RoIPool and RoIWarp snap alike: on a map that is constant per roi cell range, a box and the
    # box moved by less than the rounding margin give the same output from both ops.
    a, b = _rois([0, 1.4, 1.4, 3.6, 3.6]), _rois([0, 0.6, 0.6, 4.4, 4.4])
    np.testing.assert_array_equal(roi_warp(X10, a, 2, 1.0, 2), roi_warp(X10, b, 2, 1.0, 2))
    np.testing.assert_array_equal(roi_pool(X10, a, 2, 1.0), roi_pool(X10, b, 2, 1.0))
    assert not np.array_equal(roi_align(X10, a, 2, 1.0, 2), roi_align(X10, b, 2, 1.0, 2))


def test_backward_golden():
    # roi [1, 3] on a 5x5 map, one bin, 2x2 samples: size 3, samples at 1.75 and 3.25 per axis.
    # 1.75 puts 0.25 on index 1 and 0.75 on 2; 3.25 puts 0.75 on 3 and 0.25 on 4. Each sample carries
    # 1/4 of the bin's gradient = (1/2 per axis)^2, so the gradient is the outer product of
    # a = [0, 0.125, 0.375, 0.375, 0.125] with itself (sum 1).
    for backend in ("numpy", "cpu", "cuda"):
        g = roi_warp_backward(np.ones((1, 1, 1, 1), np.float32), _rois([0, 1, 1, 3, 3]), (1, 1, 5, 5), 1.0, 2,
                              backend=backend)
        a = np.array([0, 0.125, 0.375, 0.375, 0.125])
        np.testing.assert_array_equal(np.asarray(g)[0, 0], np.outer(a, a))


def test_off_the_map_passes_no_gradient(backend):
    roi = _rois([0, -20, -20, -12, -12])
    g = roi_warp_backward(np.ones((1, 1, 2, 2), np.float32), roi, X10.shape, 1.0, 2, backend=backend)
    assert not np.asarray(g).any()


# ---- RoIWarp is RoIAlign (aligned=False) on the snapped box ------------------------------------------
def _snapped(rois, scale):
    """[start, end + 1] / scale per axis, start and end RoIPool's rounded cells (C's round)."""
    cells = rois[:, 1:].astype(np.float64) * np.float64(np.float32(scale))
    r = np.sign(cells) * np.floor(np.abs(cells) + 0.5)
    out = rois.copy()
    out[:, 1:3], out[:, 3:5] = r[:, :2] / scale, (r[:, 2:] + 1) / scale
    return out


@pytest.mark.parametrize("scale, sr, size", [(1.0, 2, 3), (1 / 8, -1, (2, 3)), (1 / 16, 0, 2), (0.25, 3, 2)])
def test_equals_roi_align_on_the_snapped_box(rng, scale, sr, size):
    x, rois = _random_case(rng)
    rois[:, 1:] = np.round(rois[:, 1:]) + 0.25  # no scaled coordinate sits on a half (np vs C rounding)
    snapped = _snapped(rois, scale)
    out = roi_warp(x, rois, size, scale, sr, backend="cpu")
    np.testing.assert_array_equal(out, roi_align(x, snapped, size, scale, sr, False, backend="cpu"))
    g = rng.standard_normal(out.shape).astype(np.float32)
    np.testing.assert_array_equal(roi_warp_backward(g, rois, x.shape, scale, sr, backend="cpu"),
                                  roi_align_backward(g, snapped, x.shape, scale, sr, False, backend="cpu"))


@settings(max_examples=30, deadline=None)
@given(x1=st.integers(-3, 8), y1=st.integers(-3, 8), w=st.integers(0, 6), h=st.integers(0, 6),
       jitter=st.lists(st.floats(-0.49, 0.49), min_size=4, max_size=4), size=st.integers(1, 3))
def test_moving_a_box_within_its_cells_changes_nothing(x1, y1, w, h, jitter, size):
    # The quantization RoIAlign removes: every corner within half a cell of the same integer gives
    # the same output (RoIAlign's would move with the box).
    x = np.random.default_rng(1).standard_normal((1, 2, 10, 10))
    base = _rois([0, x1, y1, x1 + w, y1 + h], dtype=np.float64)
    moved = base + np.array([0.0] + jitter)
    np.testing.assert_array_equal(roi_warp(x, moved, size, 1.0, 2, backend="numpy"),
                                  roi_warp(x, base, size, 1.0, 2, backend="numpy"))


# ---- backends agree bit for bit --------------------------------------------------------------------
@pytest.mark.parametrize("scale, sr, size", [(1 / 16, 2, 3), (1 / 8, -1, (2, 3)), (1 / 16, 0, 2), (0.125, 3, 2)])
def test_numpy_cpu_cuda_forward_and_backward_identical(rng, scale, sr, size):
    x, rois = _random_case(rng)
    out = assert_backends_agree(lambda backend: roi_warp(x, rois, size, scale, sr, backend=backend), rtol=0, atol=0)
    g = rng.standard_normal(out.shape).astype(np.float32)
    assert_backends_agree(lambda backend: roi_warp_backward(g, rois, x.shape, scale, sr, backend=backend),
                          rtol=0, atol=0)


def test_backends_agree_with_many_channels_and_float64(rng):
    # 40 channels: the cpu backward splits them into blocks (one per thread)
    x, rois = _random_case(rng, n=1, c=40, h=5, w=6, k=5, dtype=np.float64)
    rois[:, 1:] = rng.uniform(-10, 60, (5, 4))
    out = assert_backends_agree(lambda backend: roi_warp(x, rois, 2, 1 / 8, -1, backend=backend), rtol=0, atol=0)
    assert out.dtype == np.float64
    g = rng.standard_normal(out.shape)
    assert_backends_agree(lambda backend: roi_warp_backward(g, rois, x.shape, 1 / 8, -1, backend=backend),
                          rtol=0, atol=0)


def test_backward_is_deterministic(rng):
    x, rois = _random_case(rng, n=1, c=2, h=5, w=5, k=200)
    xy = rng.uniform(0, 60, (200, 2))
    rois[:, 1:] = np.concatenate([xy, xy + rng.uniform(1, 40, (200, 2))], 1)
    g = rng.standard_normal((200, 2, 2, 2)).astype(np.float32)
    runs = [roi_warp_backward(g, rois, x.shape, 1 / 16, 2, backend="cpu") for _ in range(2)]
    assert runs[0].tobytes() == runs[1].tobytes()


# ---- gradients: float64 finite differences ---------------------------------------------------------
@pytest.mark.parametrize("sr", [2, -1])
def test_backward_matches_finite_differences(rng, sr):
    x, rois = _random_case(rng, n=2, c=1, h=4, w=5, k=3, dtype=np.float64)
    rois[0] = [1, -3.0, 2.0, 40.0, 30.0]  # partly off the map (scale 1/8)
    rois[1] = [0, 4.0, 3.0, 20.0, 28.0]
    w = rng.standard_normal((3, 1, 2, 2))

    def loss(arr):
        return float(np.sum(roi_warp(arr, rois, 2, 1 / 8, sr, backend="numpy") * w))

    numeric = numerical_grad(loss, [x.copy()], 0)
    analytic = roi_warp_backward(w, rois, x.shape, 1 / 8, sr, backend="numpy")
    np.testing.assert_allclose(analytic, numeric, atol=1e-7)
    assert np.abs(analytic).sum() > 0  # the case reaches the map


def test_autograd_gradcheck(rng):
    x = rng.standard_normal((1, 2, 5, 6))
    boxes = [np.array([[2.0, 3.0, 30.0, 25.0], [-6.0, 1.0, 12.0, 50.0]])]
    gradcheck(lambda t: F.roi_warp(t, boxes, 2, 1 / 8, 2), [x])


def test_tensor_boxes_and_list_of_boxes(rng):
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    b0, b1 = np.array([[0, 0, 30, 40]], np.float32), np.array([[5, 5, 60, 60], [1, 2, 3, 4]], np.float32)
    rois = np.concatenate([np.array([[0], [1], [1]], np.float32), np.concatenate([b0, b1])], 1)
    np.testing.assert_array_equal(roi_warp(x, [b0, b1], 2, 0.1, 2), roi_warp(x, rois, 2, 0.1, 2))
    out = F.roi_warp(Tensor(x, requires_grad=True), Tensor(rois), 2, 0.1, 2)
    np.testing.assert_array_equal(out.numpy(), roi_warp(x, rois, 2, 0.1, 2))


# ---- inputs: empties, errors -------------------------------------------------------------------------
@pytest.mark.parametrize("boxes", [np.zeros((0, 5), np.float32), [np.zeros((0, 4)), np.zeros((0, 4))], []])
def test_empty_rois(backend, boxes):
    x = np.ones((2, 3, 4, 4), np.float32)
    out = roi_warp(x, boxes, (2, 3), backend=backend)
    assert out.shape == (0, 3, 2, 3) and out.dtype == np.float32
    grad = roi_warp_backward(np.zeros((0, 3, 2, 3), np.float32), np.zeros((0, 5)), x.shape, backend=backend)
    assert grad.shape == x.shape and not np.asarray(grad).any()


def test_no_channels_and_autograd_of_no_rois(backend):
    out = roi_warp(np.ones((1, 0, 4, 4), np.float32), _rois([0, 0, 0, 2, 2]), 2, backend=backend)
    assert out.shape == (1, 0, 2, 2)
    t = Tensor(np.ones((1, 2, 4, 4), np.float32), requires_grad=True)
    F.roi_warp(t, np.zeros((0, 5), np.float32), 2).sum().backward()
    assert t.grad is None or not np.asarray(t.grad).any()


@pytest.mark.parametrize("kwargs, err, match", BAD_SAMPLING_ARGUMENTS + [
    (dict(boxes=_rois([1, 0, 0, 2, 2])), ValueError, "boxes: batch index"),
    (dict(sampling_ratio=5000), ValueError, f"sampling_ratio: 5000.*limit is {MAX_SAMPLES_PER_ROI}"),
    (dict(input=np.ones((1, 1, 0, 4), np.float32)), ValueError, "input: expected a feature map with H, W >= 1"),
    (dict(boxes=_rois([0, 0, 0, 1e38, 2])), ValueError, f"boxes: roi 0 .*\\[-{MAX_CELL}, {MAX_CELL}\\]"),
    (dict(boxes=_rois([0, 0, 0, 1e9, 1e9])), ValueError, "boxes: roi 0 .*needs .* samples.*sampling_ratio > 0"),
])
def test_bad_arguments(kwargs, err, match):
    assert_refuses(roi_warp, kwargs, err, match)


def test_huge_box_with_a_fixed_grid_is_fine(backend):
    # sampling_ratio > 0 bounds the loop: a box of 1e9 px is sampled 2x2 per bin, every sample off the map
    out = roi_warp(np.ones((1, 1, 4, 4), np.float32), _rois([0, 0, 0, 1e9, 1e9]), 2, 1.0, 2, backend=backend)
    assert out.shape == (1, 1, 2, 2) and not np.asarray(out).any()


def test_backward_bad_arguments():
    g = np.ones((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match="grad_output: expected 2 rois"):
        roi_warp_backward(g, _rois([0, 0, 0, 2, 2], [0, 1, 1, 3, 3]), (1, 1, 4, 4))
    with pytest.raises(ValueError, match="input_shape"):
        roi_warp_backward(g, _rois([0, 0, 0, 2, 2]), (1, 3, 4, 4))
    with pytest.raises(ValueError, match="spatial_scale"):
        roi_warp_backward(g, _rois([0, 0, 0, 2, 2]), (1, 1, 4, 4), spatial_scale=-1.0)
    with pytest.raises(TypeError, match="sampling_ratio"):
        roi_warp_backward(g, _rois([0, 0, 0, 2, 2]), (1, 1, 4, 4), sampling_ratio=None)
