import numpy as np
import pytest

from minirc import Tensor, use_backend
from minirc.nn.functional.pooling import max_pool2d as F_max_pool2d
from minirc.ops.max_pool2d import max_pool2d, max_pool2d_backward, output_size
from minirc.testing import assert_backends_agree, gradcheck

X44 = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)  # value = 4r + c


def test_golden_2x2(backend):
    out, idx = max_pool2d(X44, 2, backend=backend)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(idx[0, 0], [[5, 7], [13, 15]])  # flat h*W + w in the input plane
    assert idx.dtype == np.int64


def test_golden_resnet_stem_3x3_s2_p1(backend):
    # padding is -inf: the corner window sees only x[0:2, 0:2]
    out, idx = max_pool2d(-X44, 3, stride=2, padding=1, backend=backend)
    np.testing.assert_array_equal(out[0, 0], [[0, -1], [-4, -5]])
    np.testing.assert_array_equal(idx[0, 0], [[0, 1], [4, 5]])


def test_ties_keep_first_and_nan_wins(backend):
    x = np.array([[[[1, 3, 3], [3, 0, 0], [0, 0, 0]]]], np.float32)
    out, idx = max_pool2d(x, 3, backend=backend)
    assert out[0, 0, 0, 0] == 3 and idx[0, 0, 0, 0] == 1  # first 3 in row-major order
    x[0, 0, 2, 2] = np.nan
    out, idx = max_pool2d(x, 3, backend=backend)
    assert np.isnan(out[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 8


def test_all_minus_inf_window_points_at_first_cell(backend):
    x = np.full((1, 1, 2, 2), -np.inf, np.float32)
    out, idx = max_pool2d(x, 3, stride=1, padding=1, backend=backend)
    assert np.all(out == -np.inf)
    np.testing.assert_array_equal(idx[0, 0], [[0, 0], [0, 0]])


def test_fpn_last_level_pool_is_subsampling(backend, rng):
    x = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    out, _ = max_pool2d(x, 1, stride=2, backend=backend)
    np.testing.assert_array_equal(out, x[:, :, ::2, ::2])  # ceil(n / 2) per axis


def test_output_size_formula():
    assert output_size(7, 3, 2, 1, 1, False) == 4
    assert output_size(6, 3, 2, 0, 1, False) == 2 and output_size(6, 3, 2, 0, 1, True) == 3
    assert output_size(5, 2, 2, 1, 1, True) == 3  # a last window starting in the padding is dropped


@pytest.mark.parametrize("args", [dict(kernel_size=3, stride=2, padding=1),
                                  dict(kernel_size=(2, 3), stride=(1, 2), padding=(1, 0), dilation=2, ceil_mode=True),
                                  dict(kernel_size=2, stride=1)])
def test_backends_agree_forward_and_backward(args, rng):
    x = rng.standard_normal((2, 2, 6, 7)).astype(np.float32)
    x[0, 0, :2, :2] = 1.0  # ties
    out, idx = assert_backends_agree(max_pool2d, x=x, rtol=0, atol=0, **args)
    g = rng.standard_normal(out.shape).astype(np.float32)
    window = {k: v for k, v in args.items() if k != "ceil_mode"}
    # the three backends add overlapping contributions in the same order: bitwise equal
    assert_backends_agree(max_pool2d_backward, grad_out=g, indices=idx, input_shape=x.shape,
                          rtol=0, atol=0, **window)


def test_backward_accumulates_overlaps():
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 1] = 5  # the centre is the max of all four overlapping 2x2 windows
    out, idx = max_pool2d(x, 2, stride=1, backend="numpy")
    g = max_pool2d_backward(np.ones_like(out), idx, x.shape, 2, 1, backend="numpy")
    assert g[0, 0, 1, 1] == 4 and g.sum() == 4


def test_gradcheck_numpy_reference(rng):
    x = rng.permutation(2 * 2 * 5 * 5).reshape(2, 2, 5, 5).astype(np.float64) / 10  # no ties
    with use_backend("numpy"):
        gradcheck(lambda t: F_max_pool2d(t, 3, 2, 1), [x])
        gradcheck(lambda t: F_max_pool2d(t, 2), [x])


def test_fast_backward_equals_numpy_backward(backend, rng):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    g = rng.standard_normal((1, 2, 3, 3)).astype(np.float32)
    grads = []
    for b in ("numpy", backend):
        t = Tensor(x, requires_grad=True)
        with use_backend(b):
            F_max_pool2d(t, 3, 2, 1).backward(g)
        grads.append(t.grad)
    np.testing.assert_array_equal(grads[1], grads[0])


def test_return_indices():
    out, idx = F_max_pool2d(X44, 2, return_indices=True)
    assert isinstance(idx, Tensor) and idx.numpy().tolist() == [[[[5, 7], [13, 15]]]]


def test_empty_batch(backend):
    x = np.zeros((0, 3, 4, 4), np.float32)
    out, idx = max_pool2d(x, 2, backend=backend)
    assert out.shape == (0, 3, 2, 2) and idx.shape == (0, 3, 2, 2)
    g = max_pool2d_backward(out, idx, x.shape, 2, backend=backend)
    assert g.shape == x.shape


def test_errors():
    with pytest.raises(ValueError, match="input: expected 4 dimensions"):
        max_pool2d(np.zeros((3, 4, 4), np.float32), 2)
    with pytest.raises(ValueError, match="padding: expected at most half"):
        max_pool2d(X44, 2, padding=2)
    with pytest.raises(ValueError, match="input: spatial size"):
        max_pool2d(X44, 5)
    with pytest.raises(TypeError, match="kernel_size"):
        max_pool2d(X44, 2.5)
    with pytest.raises(ValueError, match="indices: expected the shape"):
        max_pool2d_backward(np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 3, 3), np.int64), X44.shape, 2)


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    x[0, 0, :3, :3] = 0.5  # ties
    ref, ref_idx = torch.nn.functional.max_pool2d(torch.from_numpy(x), 3, 2, 1, return_indices=True)
    out, idx = max_pool2d(x, 3, 2, 1)
    np.testing.assert_array_equal(out, ref.numpy())
    np.testing.assert_array_equal(idx, ref_idx.numpy())
