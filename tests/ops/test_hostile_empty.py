"""Resizing from an empty spatial size: the same clear ValueError on every backend (nearest used to
read out of bounds on cpu and return garbage, numpy and cuda raised IndexError); N = 0 or C = 0
gives an empty result. Output sizes are capped like every other kernel size."""
import numpy as np
import pytest

from minirc.model.transform import interpolate_bilinear
from minirc.model.transform import interpolate_nearest as resize_nearest
from minirc.ops.interpolate import interpolate_nearest, interpolate_nearest_backward


@pytest.mark.parametrize("shape", [(1, 1, 0, 4), (1, 2, 3, 0), (0, 1, 0, 0)])
@pytest.mark.parametrize("kwargs", [{"size": (5, 5)}, {"size": 3}, {"scale_factor": 2.0}])
def test_nearest_from_an_empty_map(backend, shape, kwargs):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match=r"input: cannot resize from an empty spatial size"):
        interpolate_nearest(x, backend=backend, **kwargs)
    g = np.zeros(shape[:2] + (5, 5), np.float32)
    with pytest.raises(ValueError, match=r"input_shape: cannot resize from an empty spatial size"):
        interpolate_nearest_backward(g, shape, size=(5, 5), backend=backend)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4)])
def test_nearest_of_no_planes_is_empty(backend, shape):
    out = interpolate_nearest(np.zeros(shape, np.float32), size=(6, 3), backend=backend)
    assert tuple(out.shape) == shape[:2] + (6, 3)
    g = interpolate_nearest_backward(np.zeros(shape[:2] + (6, 3), np.float32), shape, size=(6, 3),
                                     backend=backend)
    assert tuple(g.shape) == shape


def test_nearest_output_is_capped(backend):
    x = np.zeros((1, 1, 2, 2), np.float32)
    with pytest.raises(ValueError, match=r"size: the output .* the limit is 2147483647"):
        interpolate_nearest(x, size=(2**20, 2**20), backend=backend)
    with pytest.raises(ValueError, match=r"scale_factor: the output"):
        interpolate_nearest(x, scale_factor=1e300, backend=backend)
    with pytest.raises(ValueError, match=r"input_shape: expected \(N, C, H, W\) >= 0"):
        interpolate_nearest_backward(np.zeros((1, 1, 2, 2), np.float32), (1, 1, -1, 2), size=2, backend=backend)


@pytest.mark.parametrize("resize", [interpolate_bilinear, resize_nearest])
def test_transform_resizes_from_an_empty_map(resize):
    with pytest.raises(ValueError, match=r"input: cannot resize from an empty spatial size"):
        resize(np.zeros((3, 0, 4), np.float32), (5, 5))
    with pytest.raises(ValueError, match=r"size: the resized output"):
        resize(np.zeros((3, 2, 2), np.float32), (2**20, 2**20))
