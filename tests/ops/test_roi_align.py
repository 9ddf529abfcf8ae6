"""RoIAlign: golden values (detectron2's 5x5 case, docs/semantics.md cases T1-T3), backend agreement (bit-exact),
finite-difference gradients, border cases, determinism, errors and empty inputs."""
import importlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirc.backend import cuda_available
from minirc.ops.roi_align import roi_align, roi_align_backward
from minirc.testing import assert_backends_agree, numerical_grad
from roi_cases import BAD_SAMPLING_ARGUMENTS, assert_refuses
from roi_cases import random_case as _random_case
from roi_cases import rois as _rois

ra = importlib.import_module("minirc.ops.roi_align")  # the module (minirc.ops.roi_align is the function)

X5 = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)     # value 5r + c
X10 = np.arange(100, dtype=np.float32).reshape(1, 1, 10, 10)  # value 10r + c


# ---- golden values -------------------------------------------------------------------------------
T1_LEGACY = [[7.5, 8, 8.5, 9], [10, 10.5, 11, 11.5], [12.5, 13, 13.5, 14], [15, 15.5, 16, 16.5]]
T1_ALIGNED = [[4.5, 5, 5.5, 6], [7, 7.5, 8, 8.5], [9.5, 10, 10.5, 11], [12, 12.5, 13, 13.5]]


@pytest.mark.parametrize("aligned, expected", [(False, T1_LEGACY), (True, T1_ALIGNED)])
def test_detectron2_5x5_case(backend, aligned, expected):
    out = roi_align(X5, _rois([0, 1, 1, 3, 3]), 4, 1.0, 0, aligned, backend=backend)
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-5)


T3 = [  # (roi, output_size, spatial_scale, sampling_ratio, aligned, expected)
    ([0, 0, 0, 9, 9], 5, 1.0, -1, False, [[9.9, 11.7, 13.5, 15.3, 17.1], [27.9, 29.7, 31.5, 33.3, 35.1],
                                         [45.9, 47.7, 49.5, 51.3, 53.1], [63.9, 65.7, 67.5, 69.3, 71.1],
                                         [81.9, 83.7, 85.5, 87.3, 89.1]]),
    ([0, 0, 0, 9, 9], 5, 1.0, -1, True, [[4.675, 6.45, 8.25, 10.05, 11.85], [22.425, 24.2, 26, 27.8, 29.6],
                                        [40.425, 42.2, 44, 45.8, 47.6], [58.425, 60.2, 62, 63.8, 65.6],
                                        [76.425, 78.2, 80, 81.8, 83.6]]),
    ([0, 0, 0, 9, 9], 2, 0.5, 2, False, [[12.375, 14.625], [34.875, 37.125]]),
    ([0, -6, -6, -2, -2], 2, 1.0, 2, False, [[0, 0], [0, 0]]),               # every sample < -1
    ([0, 8, 8, 12, 12], 2, 1.0, 2, False, [[96.25, 0], [0, 0]]),             # > W cut to 0, still counted
    ([0, 3, 4, 3.2, 4.1], 2, 1.0, -1, False, [[45.75, 46.25], [50.75, 51.25]]),  # forced to 1x1 cell
]


@pytest.mark.parametrize("roi, size, scale, sr, aligned, expected", T3)
def test_spec_extra_cases(backend, roi, size, scale, sr, aligned, expected):
    out = roi_align(X10, _rois(roi), size, scale, sr, aligned, backend=backend)
    np.testing.assert_allclose(out[0, 0], expected, atol=1e-4)


def test_backward_golden_centre_block(backend):
    g = roi_align_backward(np.ones((1, 1, 2, 2), np.float32), _rois([0, 1, 1, 3, 3]), (1, 1, 5, 5), 1.0, 2,
                           False, backend=backend)
    expected = np.zeros((5, 5))
    expected[1:4, 1:4] = [[0.25, 0.5, 0.25], [0.5, 1, 0.5], [0.25, 0.5, 0.25]]
    np.testing.assert_array_equal(g[0, 0], expected)


def test_aligned_empty_box_is_zero_with_zero_gradient(backend, rng):
    x = rng.standard_normal((1, 1, 5, 5)).astype(np.float32)
    roi = _rois([0, 3, 4, 5, 4])  # zero height
    assert not roi_align(x, roi, 7, 1.0, 0, True, backend=backend).any()
    assert not roi_align_backward(np.ones((1, 1, 7, 7), np.float32), roi, x.shape, 1.0, 0, True, backend=backend).any()


def test_border_samples_copy_the_edge_not_zero(backend):
    # A 1x1-cell roi whose single sample sits at y = x = -0.5 (in [-1, 0]) reads pixel (0, 0) fully;
    # at -1.5 it is outside [-1, H] and gives 0.
    x = np.full((1, 1, 3, 3), 7.0, np.float32)
    inside = roi_align(x, _rois([0, -1, -1, 0, 0]), 1, 1.0, 1, False, backend=backend)
    outside = roi_align(x, _rois([0, -2, -2, -1, -1]), 1, 1.0, 1, False, backend=backend)
    assert inside[0, 0, 0, 0] == 7.0 and outside[0, 0, 0, 0] == 0.0


def test_half_of_the_samples_off_the_map_halves_the_bin(backend):
    # aligned=True, grid 2x2: rows y = 2.25 (clamps to row 2) and y = 3.75 > H = 3 (zero), columns
    # at -0.25 and 0.25 (both read column 0): two of four samples are 8, two are 0 -> 16 / 4.
    x = np.full((1, 1, 3, 3), 8.0, np.float32)
    out = roi_align(x, _rois([0, 0, 2, 1, 5]), 1, 1.0, 2, True, backend=backend)
    assert out[0, 0, 0, 0] == pytest.approx(4.0)


# ---- backends agree bit for bit --------------------------------------------------------------------
@pytest.mark.parametrize("scale, sr, aligned, size", [(1 / 16, 2, False, 3), (1 / 8, -1, True, (2, 3)),
                                                     (1 / 16, 0, False, 2), (0.125, 3, True, 2)])
def test_numpy_cpu_cuda_forward_and_backward_identical(rng, scale, sr, aligned, size):
    x, rois = _random_case(rng)
    out = assert_backends_agree(lambda backend: roi_align(x, rois, size, scale, sr, aligned, backend=backend),
                                rtol=0, atol=0)
    g = rng.standard_normal(out.shape).astype(np.float32)
    assert_backends_agree(lambda backend: roi_align_backward(g, rois, x.shape, scale, sr, aligned, backend=backend),
                          rtol=0, atol=0)


def test_cuda_atomic_backward_matches(rng):
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    x, rois = _random_case(rng, k=4)
    g = rng.standard_normal((4, 3, 2, 2)).astype(np.float32)
    ref = roi_align_backward(g, rois, x.shape, 1 / 16, 2, True, backend="numpy")
    fast = roi_align_backward(g, rois, x.shape, 1 / 16, 2, True, backend="cuda", deterministic=False)
    np.testing.assert_allclose(fast, ref, rtol=1e-5, atol=1e-6)  # same sums, any order


def test_chunked_sample_tables_give_the_same_result(rng, monkeypatch):
    x, rois = _random_case(rng)
    out, grad = (roi_align(x, rois, 3, 1 / 8, -1, False, backend="cpu"),
                 roi_align_backward(np.ones((12, 3, 3, 3), np.float32), rois, x.shape, 1 / 8, -1, False, backend="cpu"))
    monkeypatch.setattr(ra, "MAX_SAMPLES_PER_CHUNK", 20)  # one or two rois per chunk
    np.testing.assert_array_equal(roi_align(x, rois, 3, 1 / 8, -1, False, backend="cpu"), out)
    np.testing.assert_array_equal(roi_align_backward(np.ones((12, 3, 3, 3), np.float32), rois, x.shape, 1 / 8, -1,
                                                     False, backend="cpu"), grad)


def test_backward_is_deterministic(rng):
    # 200 rois over one small map: every pixel receives many additions in a fixed order.
    x, rois = _random_case(rng, n=1, c=2, h=5, w=5, k=200)
    xy = rng.uniform(0, 60, (200, 2))
    rois[:, 1:] = np.concatenate([xy, xy + rng.uniform(1, 40, (200, 2))], 1)
    g = rng.standard_normal((200, 2, 2, 2)).astype(np.float32)
    runs = [roi_align_backward(g, rois, x.shape, 1 / 16, 2, False, backend="cpu") for _ in range(2)]
    assert runs[0].tobytes() == runs[1].tobytes()


# ---- gradients: float64 finite differences of the reference ----------------------------------------
@pytest.mark.parametrize("aligned, sr", [(False, 2), (True, -1), (False, -1)])
def test_backward_matches_finite_differences(rng, aligned, sr):
    x, rois = _random_case(rng, n=2, c=1, h=4, w=5, k=3, dtype=np.float64)
    rois[0] = [1, -3.0, 2.0, 40.0, 30.0]  # partly off the map (scale 1/8)
    w = rng.standard_normal((3, 1, 2, 2))

    def loss(arr):
        return float(np.sum(roi_align(arr, rois, 2, 1 / 8, sr, aligned, backend="numpy") * w))

    numeric = numerical_grad(loss, [x.copy()], 0)
    analytic = roi_align_backward(w, rois, x.shape, 1 / 8, sr, aligned, backend="numpy")
    np.testing.assert_allclose(analytic, numeric, atol=1e-7)


# ---- properties ------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(x1=st.floats(1.0, 5.0), y1=st.floats(1.0, 5.0), w=st.floats(0.5, 4.0), h=st.floats(0.5, 4.0),
       size=st.integers(1, 3), sr=st.integers(1, 3))
def test_aligned_bins_read_the_ramp_at_their_centres(x1, y1, w, h, size, sr):
    # Pixel j holds the signal at continuous x = j + 0.5; on the ramp v = column index, aligned=True
    # returns exactly (bin centre - 0.5): the half-pixel model, checked against geometry alone.
    ramp = np.tile(np.arange(12, dtype=np.float64), (12, 1))[None, None]
    out = roi_align(ramp, _rois([0, x1, y1, x1 + w, y1 + h], dtype=np.float64), size, 1.0, sr, True, backend="numpy")
    centres = x1 + (np.arange(size) + 0.5) * w / size
    np.testing.assert_allclose(out[0, 0], np.tile(centres - 0.5, (size, 1)), atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(shift=st.integers(1, 4), x1=st.floats(1.0, 4.0), y1=st.floats(1.0, 4.0), side=st.floats(0.2, 4.0),
       aligned=st.booleans())
def test_integer_translation_of_image_and_box_keeps_the_output(shift, x1, y1, side, aligned):
    # Away from the borders (no clamping), moving image and box by whole pixels changes nothing.
    img = np.random.default_rng(3).standard_normal((1, 2, 16, 16))
    moved = np.zeros_like(img)
    moved[..., shift:, shift:] = img[..., :16 - shift, :16 - shift]
    box = _rois([0, x1, y1, x1 + side, y1 + side], dtype=np.float64)
    a = roi_align(img, box, 2, 1.0, 2, aligned, backend="numpy")
    b = roi_align(moved, box + np.array([0, shift, shift, shift, shift]), 2, 1.0, 2, aligned, backend="numpy")
    np.testing.assert_allclose(a, b, atol=1e-12)


# ---- inputs: lists, empties, errors ------------------------------------------------------------------
def test_list_of_boxes_equals_k5_rois(rng):
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    b0, b1 = np.array([[0, 0, 30, 40]], np.float32), np.array([[5, 5, 60, 60], [1, 2, 3, 4]], np.float32)
    rois = np.concatenate([np.array([[0], [1], [1]], np.float32), np.concatenate([b0, b1])], 1)
    np.testing.assert_array_equal(roi_align(x, [b0, b1], 2, 0.1, 2), roi_align(x, rois, 2, 0.1, 2))


@pytest.mark.parametrize("boxes", [np.zeros((0, 5), np.float32), [np.zeros((0, 4)), np.zeros((0, 4))], []])
def test_empty_rois(backend, boxes):
    x = np.ones((2, 3, 4, 4), np.float32)
    out = roi_align(x, boxes, (2, 3), backend=backend)
    assert out.shape == (0, 3, 2, 3) and out.dtype == np.float32
    grad = roi_align_backward(np.zeros((0, 3, 2, 3), np.float32), np.zeros((0, 5)), x.shape, backend=backend)
    assert grad.shape == x.shape and not grad.any()


def test_batch_index_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match=r"boxes: batch index .* \[0, 2\).*roi 1"):
        roi_align(np.ones((2, 1, 4, 4), np.float32), _rois([1, 0, 0, 2, 2], [2, 0, 0, 2, 2]), 2)
    with pytest.raises(ValueError, match="boxes: batch index"):
        roi_align(np.ones((2, 1, 4, 4), np.float32), _rois([-1, 0, 0, 2, 2]), 2)


@pytest.mark.parametrize("kwargs, err, match", BAD_SAMPLING_ARGUMENTS + [
    (dict(aligned="yes"), TypeError, "aligned"),
])
def test_bad_arguments(kwargs, err, match):
    assert_refuses(roi_align, kwargs, err, match)


def test_float64_input_stays_float64(backend):
    out = roi_align(X5.astype(np.float64), _rois([0, 1, 1, 3, 3]), 2, backend=backend)
    assert out.dtype == np.float64


def test_matches_torchvision_bit_for_bit(rng):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    x, rois = _random_case(rng, k=30)
    for scale, sr, aligned in [(1 / 16, 2, False), (1 / 8, -1, True), (0.0625, 0, False)]:
        t = torch.tensor(x, requires_grad=True)
        ref = tv.ops.roi_align(t, torch.tensor(rois), 3, scale, sr, aligned)
        g = rng.standard_normal(ref.shape).astype(np.float32)
        ref.backward(torch.tensor(g))
        np.testing.assert_array_equal(roi_align(x, rois, 3, scale, sr, aligned, backend="cpu"), ref.detach().numpy())
        np.testing.assert_array_equal(roi_align_backward(g, rois, x.shape, scale, sr, aligned, backend="cpu"),
                                      t.grad.numpy())
