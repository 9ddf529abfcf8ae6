"""Sizes computed from user numbers are capped before a kernel allocates or loops over them.

Each case used to wrap a 64-bit size inside a kernel (and segfault or write out of bounds) or
to escape as a MemoryError; now it is a ValueError naming the argument and the limit, the same
on every backend (docs/conventions.md, "Limits").
"""
import numpy as np
import pytest

from minirc import _checks
from minirc.model.paste import paste_masks_in_image
from minirc.model.transform import interpolate_bilinear
from minirc.ops.conv2d import conv2d_forward
from minirc.ops.conv_transpose2d import conv_transpose2d_forward
from minirc.ops.max_pool2d import max_pool2d, max_pool2d_backward
from minirc.ops.roi_align import MAX_SAMPLES_PER_ROI, roi_align, roi_align_backward
from minirc.ops.roi_pool import roi_pool

X = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)


def test_roi_align_huge_roi_adaptive_sampling(backend):
    huge = np.array([[0, 0, 0, 6e10, 6e10]], np.float32)
    with pytest.raises(ValueError, match=r"boxes: roi 0 .*limit is 16777216 per roi"):
        roi_align(X, huge, 7, 0.25, -1, backend=backend)
    with pytest.raises(ValueError, match=r"boxes: roi 0"):
        roi_align_backward(np.zeros((1, 1, 7, 7), np.float32), huge, X.shape, 0.25, -1, backend=backend)
    # the same roi with a fixed sampling ratio is cheap, and valid
    out = roi_align(X, huge, 2, 1.0, 2, backend=backend)
    assert out.shape == (1, 1, 2, 2) and np.all(np.asarray(out) == 0)


def test_roi_align_overflowing_scale_is_rejected(backend):
    boxes = np.array([[0, 0, 0, 3e38, 3e38]], np.float32)
    with pytest.raises(ValueError, match=r"boxes: roi 0"):
        roi_align(X, boxes, 2, 10.0, -1, backend=backend)


def test_roi_align_huge_sampling_ratio(backend):
    boxes = np.array([[0, 0, 0, 4, 4]], np.float32)
    with pytest.raises(ValueError, match=r"sampling_ratio: 8589934592 .*limit is 16777216"):
        roi_align(X, boxes, 7, 1.0, 2**33, backend=backend)
    with pytest.raises(ValueError, match=r"sampling_ratio"):
        roi_align_backward(np.zeros((1, 1, 7, 7), np.float32), boxes, X.shape, 1.0, 2**33, backend=backend)


def test_roi_align_limit_is_inclusive():
    boxes = np.array([[0, 0, 0, 4, 4]], np.float32)
    ratio = int(np.sqrt(MAX_SAMPLES_PER_ROI // 64))  # 8 x 8 bins: exactly the limit
    from minirc.ops.roi_align import check_sample_counts
    check_sample_counts(boxes, np.dtype(np.float32), 1.0, False, ratio, (8, 8))
    with pytest.raises(ValueError):
        check_sample_counts(boxes, np.dtype(np.float32), 1.0, False, ratio + 1, (8, 8))


@pytest.mark.parametrize("op", [roi_align, roi_pool])
def test_pooling_huge_output_size(op, backend):
    boxes = np.array([[0, 0, 0, 4, 4]], np.float32)
    with pytest.raises(ValueError, match=r"output_size"):
        op(X, boxes, (2**20, 2**20), backend=backend)
    with pytest.raises(ValueError, match=r"output_size: expected values <= 2147483647"):
        op(X, boxes, 2**40, backend=backend)


def test_roi_pool_coordinates_beyond_int32_cells(backend):
    boxes = np.array([[0, 0, 0, 1e12, 4]], np.float32)
    with pytest.raises(ValueError, match=r"boxes: roi 0 .*feature cells"):
        roi_pool(X, boxes, 2, backend=backend)
    ok = roi_pool(X, np.array([[0, 0, 0, 1e9, 4]], np.float32), 2, backend=backend)  # clipped to the map
    assert np.isfinite(np.asarray(ok)).all()


def test_pooling_backward_input_shape_is_capped():
    g = np.zeros((1, 1, 2, 2), np.float32)
    boxes = np.array([[0, 0, 0, 4, 4]], np.float32)
    with pytest.raises(ValueError, match=r"input_shape: the gradient"):
        roi_align_backward(g, boxes, (1, 1, 2**20, 2**20))
    with pytest.raises(ValueError, match=r"input_shape"):
        roi_align_backward(g, boxes, (1, 1, -4, 4))
    with pytest.raises(ValueError, match=r"input_shape: the gradient"):
        max_pool2d_backward(g, np.zeros((1, 1, 2, 2), np.int64), (1, 1, 2**20, 2**20), 2)


def test_max_pool2d_huge_window_arguments(backend):
    with pytest.raises(ValueError, match=r"kernel_size: expected values <= 2147483647"):
        max_pool2d(X, 2**40, backend=backend)
    # a window far larger than the image visits only its in-image cells (this used to loop 2**42 times)
    out, idx = max_pool2d(X, 2**21, stride=2**20, padding=2**20, backend=backend)
    assert np.asarray(out).shape == (1, 1, 1, 1)
    assert np.all(np.asarray(out) == 63) and np.all(np.asarray(idx) == 63)


def test_conv_huge_sizes(backend):
    w = np.ones((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match=r"padding: the padded input .*limit is 2147483647"):
        conv2d_forward(X, w, padding=2**20, backend=backend)
    with pytest.raises(ValueError, match=r"stride: expected values <= 2147483647"):
        conv2d_forward(X, w, stride=2**40, backend=backend)
    with pytest.raises(ValueError, match=r"dilation: expected values <= 2147483647"):
        conv2d_forward(X, w, dilation=2**62, backend=backend)
    with pytest.raises(ValueError, match=r"the output"):
        conv_transpose2d_forward(X, np.ones((1, 1, 2**15, 2**15), np.float32)[:, :, :1], stride=2**20,
                                 backend=backend)


def test_paste_box_far_larger_than_the_image():
    m = np.zeros((1, 28, 28), np.float32)
    m[0, 7:21, 7:21] = 1
    huge = np.array([[-1e9, -1e9, 6e8, 6e8]], np.float32)
    out = paste_masks_in_image(m, huge, (16, 16))  # a full resize would be 1.7e9 x 1.7e9 pixels
    assert out.shape == (1, 16, 16) and np.isfinite(out).all()
    with pytest.raises(ValueError, match=r"boxes: expected finite coordinates within"):
        paste_masks_in_image(m, np.array([[0, 0, 6e10, 6e10]], np.float32), (16, 16))
    with pytest.raises(ValueError, match=r"boxes: expected finite"):
        paste_masks_in_image(m, np.array([[0, 0, np.nan, 6]], np.float32), (16, 16))
    with pytest.raises(ValueError, match=r"image_size: the pasted masks"):
        paste_masks_in_image(m, np.array([[0, 0, 6, 6]], np.float32), (2**20, 2**20))


def test_windowed_bilinear_equals_the_slice_of_the_full_resize(rng):
    x = rng.random((2, 5, 7)).astype(np.float32)
    full = interpolate_bilinear(x, (23, 19))
    part = interpolate_bilinear(x, (23, 19), ((4, 17), (0, 11)))
    np.testing.assert_array_equal(part, full[:, 4:17, 0:11])


def test_elements_counts_in_python_ints():
    assert _checks.elements((2**20, 2**10), "a", "b") == 2**30
    with pytest.raises(ValueError, match=r"a: b of shape \(4294967296, 4294967296\) .* 18446744073709551616 "
                                         r"elements; the limit is 2147483647"):
        _checks.elements((2**32, 2**32), "a", "b")
