"""Public backward functions check the indices they are given, with one rule on every backend.

max_pool2d_backward: an index must be an in-image cell of its own window (what the forward returns);
roi_pool_backward: an argmax must be -1 or a cell of the plane. Out-of-range values used to write
out of bounds on cpu, and negative ones gave a different gradient per backend.
"""
import numpy as np
import pytest

from minirc.ops.max_pool2d import max_pool2d, max_pool2d_backward
from minirc.ops.roi_pool import roi_pool, roi_pool_backward


@pytest.fixture
def pooled(rng):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    out, idx = max_pool2d(x, 3, stride=2, padding=1, backend="numpy")
    return x, np.ones_like(out), idx


@pytest.mark.parametrize("value", [-1, -7, 36, 10**12])
def test_max_pool2d_backward_out_of_range(pooled, backend, value):
    x, g, idx = pooled
    bad = idx.copy()
    bad[0, 1, 0, 0] = value
    with pytest.raises(ValueError, match=r"indices: 1 entries are not a cell of their window"):
        max_pool2d_backward(g, bad, x.shape, 3, stride=2, padding=1, backend=backend)


def test_max_pool2d_backward_cell_outside_its_window(pooled, backend):
    x, g, idx = pooled
    bad = idx.copy()
    bad[0, 0, 0, 0] = 5 * 6 + 5  # in the plane, but window (0, 0) covers rows/cols -1..1
    bad[0, 0, 2, 2] = 0          # window (2, 2) covers rows/cols 3..5
    with pytest.raises(ValueError, match=r"indices: 2 entries"):
        max_pool2d_backward(g, bad, x.shape, 3, stride=2, padding=1, backend=backend)


def test_max_pool2d_backward_dilation_skips_cells(backend):
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    out, idx = max_pool2d(x, 2, stride=1, dilation=2, backend="numpy")
    g = np.ones_like(out)
    bad = idx.copy()
    bad[0, 0, 0, 0] = 1  # row 0, col 1: between the dilated taps (cols 0 and 2)
    with pytest.raises(ValueError, match=r"indices: 1 entries"):
        max_pool2d_backward(g, bad, x.shape, 2, stride=1, dilation=2, backend=backend)
    ok = max_pool2d_backward(g, idx, x.shape, 2, stride=1, dilation=2, backend=backend)
    assert np.asarray(ok).sum() == out.size


def test_max_pool2d_backward_valid_indices_agree(pooled, backend):
    x, g, idx = pooled
    ref = max_pool2d_backward(g, idx, x.shape, 3, stride=2, padding=1, backend="numpy")
    got = max_pool2d_backward(g, idx, x.shape, 3, stride=2, padding=1, backend=backend)
    np.testing.assert_array_equal(np.asarray(got), ref)


@pytest.mark.parametrize("value", [-2, -100, 64, 2**31 - 1])
def test_roi_pool_backward_out_of_range(rng, backend, value):
    x = rng.standard_normal((1, 2, 8, 8)).astype(np.float32)
    boxes = np.array([[0, 0, 0, 5, 5], [0, 2, 2, 7, 7]], np.float32)
    out, arg = roi_pool(x, boxes, 2, return_argmax=True, backend="numpy")
    bad = arg.copy()
    bad[1, 1, 0, 1] = value
    with pytest.raises(ValueError, match=r"argmax: 1 entries are neither -1 .* \[0, H \* W = 64\)"):
        roi_pool_backward(np.ones_like(out), bad, boxes, x.shape, backend=backend)
    with pytest.raises(TypeError, match=r"argmax: expected integer"):
        roi_pool_backward(np.ones_like(out), arg.astype(np.float32), boxes, x.shape, backend=backend)
    bad[1, 1, 0, 1] = -1  # an empty bin: no gradient, on every backend
    got = roi_pool_backward(np.ones_like(out), bad, boxes, x.shape, backend=backend)
    ref = roi_pool_backward(np.ones_like(out), bad, boxes, x.shape, backend="numpy")
    np.testing.assert_array_equal(np.asarray(got), ref)
