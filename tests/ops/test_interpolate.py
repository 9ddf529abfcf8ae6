import numpy as np
import pytest

import minirc.nn.functional as F
from minirc import Tensor, use_backend
from minirc.nn.functional.upsampling import interpolate
from minirc.ops.interpolate import (interpolate_nearest, interpolate_nearest_backward,
                                    nearest_source_indices, output_plan)
from minirc.testing import assert_backends_agree, gradcheck


def row(n):
    return np.arange(n, dtype=np.float32).reshape(1, 1, 1, n)


@pytest.mark.parametrize("n_in, n_out, expected", [
    (3, 5, [0, 0, 1, 1, 2]),           # floor(dst * 0.6)
    (5, 3, [0, 1, 3]),                 # floor(dst * 1.6667)
    (2, 4, [0, 0, 1, 1]),              # exact 2x: plain repetition
    (4, 4, [0, 1, 2, 3]),              # same size: a copy
    (3, 7, [0, 0, 0, 1, 1, 2, 2]),
])
def test_golden_indices_with_size(backend, n_in, n_out, expected):
    assert nearest_source_indices(n_in, n_out).tolist() == expected
    out = interpolate_nearest(row(n_in), size=(1, n_out), backend=backend)
    assert out[0, 0, 0].tolist() == expected


def test_scale_factor_uses_one_over_scale_unless_recomputed():
    # 11 -> floor(11 * 0.7) = 7 outputs; 1/0.7 and 11/7 pick different pixels (checked against torch 2.14)
    assert output_plan((1, 11), scale_factor=(1, 0.7))[0] == (1, 7)
    out = interpolate_nearest(row(11), scale_factor=(1, 0.7))
    assert out[0, 0, 0].tolist() == [0, 1, 2, 4, 5, 7, 8]
    out = interpolate_nearest(row(11), scale_factor=(1, 0.7), recompute_scale_factor=True)
    assert out[0, 0, 0].tolist() == [0, 1, 3, 4, 6, 7, 9]


def test_fpn_2x_is_repetition(backend, rng):
    x = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    out = interpolate_nearest(x, size=(6, 8), backend=backend)
    np.testing.assert_array_equal(out, x.repeat(2, axis=2).repeat(2, axis=3))


def test_backends_agree_forward_and_backward(rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(np.float32)
    assert_backends_agree(interpolate_nearest, x=x, size=(7, 3), rtol=0, atol=0)
    assert_backends_agree(interpolate_nearest, x=x, scale_factor=1.7, rtol=0, atol=0)
    g = rng.standard_normal((2, 3, 12, 3)).astype(np.float32)
    # several outputs per input on one axis, skipped inputs on the other: bitwise equal sums
    assert_backends_agree(interpolate_nearest_backward, grad_out=g, input_shape=x.shape, size=(12, 3),
                          rtol=0, atol=0)


def test_backward_sums_the_copies():
    g = interpolate_nearest_backward(np.ones((1, 1, 1, 5), np.float32), (1, 1, 1, 3), size=(1, 5))
    assert g[0, 0, 0].tolist() == [2, 2, 1]
    g = interpolate_nearest_backward(np.ones((1, 1, 1, 3), np.float32), (1, 1, 1, 5), size=(1, 3))
    assert g[0, 0, 0].tolist() == [1, 1, 0, 1, 0]  # inputs 0, 1, 3 are read, 2 and 4 are not


@pytest.mark.parametrize("kwargs", [dict(size=(7, 3)), dict(size=4), dict(scale_factor=0.7),
                                    dict(scale_factor=(2.0, 1.5))])
def test_gradcheck_numpy_reference(kwargs, rng):
    with use_backend("numpy"):
        gradcheck(lambda t: interpolate(t, **kwargs), [rng.standard_normal((1, 2, 4, 5))])


def test_fast_backward_equals_numpy_backward(backend, rng):
    x = rng.standard_normal((1, 2, 4, 3)).astype(np.float32)
    g = rng.standard_normal((1, 2, 9, 5)).astype(np.float32)
    grads = []
    for b in ("numpy", backend):
        t = Tensor(x, requires_grad=True)
        with use_backend(b):
            interpolate(t, size=(9, 5)).backward(g)
        grads.append(t.grad)
    np.testing.assert_array_equal(grads[1], grads[0])


def test_functional_namespace_returns_the_function():
    # the package attribute must stay the function after its same-named submodule is imported
    x = row(3)
    for _ in range(2):
        assert F.interpolate(x, size=(1, 6)).shape == (1, 1, 1, 6)


def test_empty_batch(backend):
    x = np.zeros((0, 2, 3, 3), np.float32)
    assert interpolate_nearest(x, size=(6, 6), backend=backend).shape == (0, 2, 6, 6)
    g = interpolate_nearest_backward(np.zeros((0, 2, 6, 6), np.float32), x.shape, size=(6, 6), backend=backend)
    assert g.shape == x.shape


def test_errors():
    x = row(3)
    with pytest.raises(ValueError, match="size, scale_factor: expected exactly one"):
        interpolate_nearest(x)
    with pytest.raises(ValueError, match="size, scale_factor: expected exactly one"):
        interpolate_nearest(x, size=3, scale_factor=2.0)
    with pytest.raises(ValueError, match="size: expected positive ints"):
        interpolate_nearest(x, size=(0, 3))
    with pytest.raises(ValueError, match="scale_factor: input size"):
        interpolate_nearest(x, scale_factor=0.1)
    with pytest.raises(ValueError, match="mode: expected one of"):
        interpolate(x, size=4, mode="bilinear")
    with pytest.raises(ValueError, match="align_corners"):
        interpolate(x, size=4, align_corners=False)
    with pytest.raises(ValueError, match="input: expected 4 dimensions"):
        interpolate_nearest(np.zeros((2, 3)), size=4)


@pytest.mark.parametrize("n_in, n_out", [(3, 5), (5, 3), (7, 13), (13, 7), (100, 37), (25, 50)])
def test_matches_torch(n_in, n_out, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((1, 2, n_in, n_in + 1)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(n_out, n_out + 2), mode="nearest")
    np.testing.assert_array_equal(interpolate_nearest(x, size=(n_out, n_out + 2)), ref.numpy())
    for s in (0.7, 1.7, 2.5, 1 / 3):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x), scale_factor=s, mode="nearest")
        np.testing.assert_array_equal(interpolate_nearest(x, scale_factor=s), ref.numpy())
