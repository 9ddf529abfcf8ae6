"""box_area, clip_boxes_to_image, remove_small_boxes: docs/semantics.md case T6 golden cases, hand cases
(bounds W/H, inclusive >=, the float32 comparison), leading dimensions, backend agreement,
hypothesis properties, device arrays, errors, empty inputs."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minirc.ops.boxes import box_area, clip_boxes_to_image, remove_small_boxes


def _host(a):
    return a.copy_to_host() if hasattr(a, "copy_to_host") else np.asarray(a)


def _f32(rows):
    return np.array(rows, np.float32)


# ---- box_area ------------------------------------------------------------------------------------------
def test_box_area(backend):
    boxes = _f32([[0, 0, 10, 10], [1, 2, 4, 3], [5, 5, 5, 9], [0.5, 0.5, 1.25, 2.5], [4, 0, 2, 1]])
    out = _host(box_area(boxes, backend=backend))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [100, 3, 0, 1.5, -2])  # no +1; x2 < x1 gives a negative area


def test_box_area_leading_dims_and_dtype(backend):
    # float64 on the reference only: each extra dtype is one more Numba compile in CI
    dtype = np.float64 if backend == "numpy" else np.float32
    boxes = (np.arange(24).reshape(2, 3, 4) * np.array([1, 1, 2, 3])).astype(dtype)
    out = _host(box_area(boxes, backend=backend))
    assert out.shape == (2, 3) and out.dtype == dtype
    np.testing.assert_array_equal(out, (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]))


# ---- clip_boxes_to_image -------------------------------------------------------------------------------
def test_t6_clip(backend):
    out = _host(clip_boxes_to_image(_f32([[-5, -5, 700, 300]]), (200, 640), backend=backend))
    np.testing.assert_array_equal(out, [[0, 0, 640, 200]])  # bounds are W and H, not W-1 / H-1


def test_clip_hand_cases(backend):
    boxes = _f32([[10, 20, 30, 40], [-1, 250, 650, -3], [639.5, 199.5, 640.5, 200.5]])
    out = _host(clip_boxes_to_image(boxes, (200, 640), backend=backend))
    np.testing.assert_array_equal(out, [[10, 20, 30, 40], [0, 200, 640, 0], [639.5, 199.5, 640, 200]])


def test_clip_leading_dims(backend):
    # torchvision clips per-class boxes of shape (N, K, 4) in postprocess_detections
    boxes = np.random.default_rng(0).uniform(-50, 150, (3, 5, 4)).astype(np.float32)
    out = _host(clip_boxes_to_image(boxes, (80, 100), backend=backend))
    assert out.shape == (3, 5, 4) and out.dtype == np.float32
    np.testing.assert_array_equal(out[..., 0::2], np.clip(boxes[..., 0::2], 0, 100))
    np.testing.assert_array_equal(out[..., 1::2], np.clip(boxes[..., 1::2], 0, 80))


# ---- remove_small_boxes --------------------------------------------------------------------------------
def test_t6_remove_small_boxes(backend):
    out = _host(remove_small_boxes(_f32([[0, 0, 1, 1], [0, 0, 0.999, 5], [0, 0, 1e-3, 1e-3]]), 1.0,
                                   backend=backend))
    assert out.dtype == np.int64 and out.tolist() == [0]


def test_remove_small_boxes_inclusive_and_in_box_dtype(backend):
    boxes = _f32([[0, 0, 2, 3], [1, 1, 3, 2.5], [5, 5, 4, 9], [0, 0, 0.7, 1]])
    assert _host(remove_small_boxes(boxes, 1.5, backend=backend)).tolist() == [0, 1]  # 1.5 >= 1.5 kept
    # float32(0.7) < 0.7: a float64 comparison would drop box 3; torch (and minirc) compare in the
    # box dtype, where width == min_size
    assert _host(remove_small_boxes(boxes, 0.7, backend=backend)).tolist() == [0, 1, 3]


# ---- properties ----------------------------------------------------------------------------------------
any_boxes = st.integers(0, 10).flatmap(
    lambda n: hnp.arrays(np.float32, (n, 4), elements=st.floats(-100, 300, width=32)))


@settings(max_examples=40, deadline=None)
@given(any_boxes, st.integers(1, 250), st.integers(1, 250), st.floats(0, 50))
def test_properties(boxes, height, width, min_size):
    clipped = clip_boxes_to_image(boxes, (height, width), backend="cpu")
    assert np.all(clipped >= 0) and np.all(clipped[:, 0::2] <= width) and np.all(clipped[:, 1::2] <= height)
    np.testing.assert_array_equal(clip_boxes_to_image(clipped, (height, width)), clipped)  # idempotent
    np.testing.assert_array_equal(clipped, clip_boxes_to_image(boxes, (height, width), backend="numpy"))
    keep = remove_small_boxes(boxes, min_size, backend="cpu")
    np.testing.assert_array_equal(keep, remove_small_boxes(boxes, min_size, backend="numpy"))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert set(keep.tolist()) == {i for i in range(len(boxes)) if min(w[i], h[i]) >= np.float32(min_size)}
    np.testing.assert_array_equal(box_area(boxes, backend="cpu"), w * h)


# ---- backends, devices, empty --------------------------------------------------------------------------
def test_cuda_device_arrays_stay_on_device():
    from minirc.backend import cuda_available
    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    from numba import cuda
    boxes = _f32([[-5, -5, 700, 300], [0, 0, 0.5, 2]])
    d = cuda.to_device(boxes)
    for out, expected in ((box_area(d, backend="cuda"), [705 * 305, 1]),
                          (clip_boxes_to_image(d, (200, 640), backend="cuda"), [[0, 0, 640, 200], [0, 0, 0.5, 2]]),
                          (remove_small_boxes(d, 1.0, backend="cuda"), [0])):
        assert hasattr(out, "copy_to_host")
        np.testing.assert_array_equal(out.copy_to_host(), expected)


@pytest.mark.parametrize("shape", [(0, 4), (2, 0, 4)])
def test_empty(backend, shape):
    empty = np.zeros(shape, np.float32)
    assert _host(box_area(empty, backend=backend)).shape == shape[:-1]
    assert _host(clip_boxes_to_image(empty, (10, 10), backend=backend)).shape == shape
    if len(shape) == 2:
        out = _host(remove_small_boxes(empty, 1.0, backend=backend))
        assert out.shape == (0,) and out.dtype == np.int64


def test_int_boxes_become_float32(backend):
    assert _host(box_area(np.array([[0, 0, 2, 3]]), backend=backend)).dtype == np.float32


# ---- errors --------------------------------------------------------------------------------------------
def test_errors():
    good = _f32([[0, 0, 2, 3], [1, 1, 2, 2]])
    with pytest.raises(ValueError, match="boxes: expected last dimension of size 4"):
        box_area(good[:, :3])
    with pytest.raises(ValueError, match="boxes: expected 2 dimensions"):
        remove_small_boxes(good[None], 1.0)
    bad = good.copy()
    bad[1, 2] = np.nan
    for fn in (box_area, lambda b: clip_boxes_to_image(b, (5, 5)), lambda b: remove_small_boxes(b, 1)):
        with pytest.raises(ValueError, match=r"boxes: expected finite coordinates, row 1 is \[1.0, 1.0, nan"):
            fn(bad)
    with pytest.raises(TypeError, match=r"size: expected \(height, width\)"):
        clip_boxes_to_image(good, 5)
    with pytest.raises(ValueError, match="height"):
        clip_boxes_to_image(good, (-1, 5))
    with pytest.raises(TypeError, match="min_size"):
        remove_small_boxes(good, "1")
    with pytest.raises(TypeError, match="boxes: expected an array"):
        box_area(None)


# ---- optional parity with torchvision ------------------------------------------------------------------
def test_torchvision_parity():
    torch = pytest.importorskip("torch")
    tv_ops = pytest.importorskip("torchvision.ops")
    boxes = np.random.default_rng(3).uniform(-20, 120, (50, 4)).astype(np.float32)
    boxes[:4] = [[0, 0, 2, 3], [1, 1, 3, 2.5], [5, 5, 4, 9], [0, 0, 0.7, 1]]
    t = torch.from_numpy(boxes)
    np.testing.assert_array_equal(box_area(boxes), tv_ops.box_area(t).numpy())
    np.testing.assert_array_equal(clip_boxes_to_image(boxes, (80, 100)),
                                  tv_ops.clip_boxes_to_image(t, (80, 100)).numpy())
    for min_size in (0.7, 1.5, 10.0):
        np.testing.assert_array_equal(remove_small_boxes(boxes, min_size),
                                      tv_ops.remove_small_boxes(t, min_size).numpy())
