"""nn.functional conv2d, conv_transpose2d and linear: float64 gradient checks through the tape,
backend agreement of the backward, Tensor/array inputs, errors."""
import numpy as np
import pytest

from minirc.autograd import Tensor
from minirc.backend import use_backend
from minirc.nn.functional.conv import conv2d, conv_transpose2d
from minirc.nn.functional.linear import linear
from minirc.testing import gradcheck


def test_gradcheck_conv2d(rng):
    x, w, b = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((3, 2, 3, 2)), rng.standard_normal(3)
    with use_backend("numpy"):
        gradcheck(lambda x, w, b: conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2)), [x, w, b])


def test_gradcheck_conv_transpose2d(rng):
    x, w, b = rng.standard_normal((2, 2, 3, 3)), rng.standard_normal((2, 3, 2, 3)), rng.standard_normal(3)
    with use_backend("numpy"):
        gradcheck(lambda x, w, b: conv_transpose2d(x, w, b, stride=2, padding=(0, 1), output_padding=1),
                  [x, w, b])


def test_gradcheck_linear(rng):
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    with use_backend("numpy"):
        gradcheck(linear, [x, w, b])


def test_gradcheck_can_fail(rng):
    # a wrong backward must be caught: drop the bias term's gradient and gradcheck has to complain
    x, w, b = rng.standard_normal((1, 1, 3, 3)), rng.standard_normal((1, 1, 2, 2)), rng.standard_normal(1)

    def broken(x, w, b):
        return conv2d(x, w, None) + Tensor(b.data.reshape(1, 1, 1, 1))  # b is a constant here
    with use_backend("numpy"), pytest.raises(AssertionError, match="input 2"):
        gradcheck(broken, [x, w, b])


def _tape_grads(fn, arrays, backend):
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    with use_backend(backend):
        out = fn(*tensors)
    out.backward(np.ones(out.shape, out.dtype))
    return out.numpy(), [t.grad for t in tensors]


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d", "linear"])
def test_backward_matches_reference(backend, name, rng):
    f32 = np.float32
    if name == "conv2d":
        fn = lambda x, w, b: conv2d(x, w, b, stride=2, padding=1)  # noqa: E731
        arrays = [rng.standard_normal((1, 2, 5, 5)).astype(f32), rng.standard_normal((3, 2, 3, 3)).astype(f32)]
    elif name == "conv_transpose2d":
        fn = lambda x, w, b: conv_transpose2d(x, w, b, stride=2)  # noqa: E731
        arrays = [rng.standard_normal((1, 2, 3, 3)).astype(f32), rng.standard_normal((2, 3, 2, 2)).astype(f32)]
    else:
        fn = linear
        arrays = [rng.standard_normal((4, 6)).astype(f32), rng.standard_normal((3, 6)).astype(f32)]
    arrays.append(rng.standard_normal(3).astype(f32))
    ref_out, ref_grads = _tape_grads(fn, arrays, "numpy")
    out, grads = _tape_grads(fn, arrays, backend)
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        assert g.dtype == np.float32
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)


def test_arrays_in_tensor_out_and_no_graph():
    x, w = np.ones((1, 1, 3, 3), np.float32), np.ones((1, 1, 3, 3), np.float32)
    y = conv2d(x, w, padding=1)
    assert isinstance(y, Tensor) and not y.requires_grad and y.shape == (1, 1, 3, 3)
    assert isinstance(linear(np.ones((2, 3)), np.ones((4, 3))), Tensor)


def test_only_the_weight_needs_a_gradient(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    conv2d(x, w, None, padding=1).sum().backward()
    assert w.grad.shape == (3, 2, 3, 3)


def test_backward_uses_the_forward_backend(rng):
    # the forward ran on "cpu"; the backward runs on "cpu" too, whatever is current at backward time
    x = Tensor(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), requires_grad=True)
    with use_backend("cpu"):
        y = conv2d(x, np.ones((1, 1, 3, 3), np.float32), padding=1)
    with use_backend("numpy"):
        y.backward(np.ones(y.shape, np.float32))
    assert y._node.ctx.backend == "cpu"
    np.testing.assert_array_equal(x.grad[0, 0], [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]])


def test_linear_values_and_leading_axes():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])          # (2, in 2)
    w = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, -1.0]])  # (out 3, in 2)
    y = linear(x, w, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(y.numpy(), [[1, 3.5, -1], [3, 7.5, -3]])
    assert linear(np.ones((2, 5, 2)), w).shape == (2, 5, 3)
    assert linear(np.ones(2), w).shape == (3,)
    assert linear(np.ones((0, 2)), w).shape == (0, 3)


@pytest.mark.parametrize("x,w,b,err,match", [
    (np.ones((2, 3)), np.ones((4, 2)), None, ValueError, "input: expected a last dimension of 2"),
    (np.ones((2, 3)), np.ones(3), None, ValueError, "weight: expected 2 dimensions"),
    (np.ones((2, 3)), np.ones((4, 3)), np.ones(3), ValueError, r"bias: expected shape \(4,\)"),
    (np.ones((2, 3), np.float32), np.ones((4, 3)), None, TypeError, "weight: expected the dtype of input"),
    (np.ones((2, 3), np.int64), np.ones((4, 3)), None, TypeError, "input: expected float32 or float64"),
])
def test_linear_errors(x, w, b, err, match):
    with pytest.raises(err, match=match):
        linear(x, w, b)


def test_linear_torch_parity(rng):
    torch = pytest.importorskip("torch")
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), rng.standard_normal(2)
    np.testing.assert_allclose(linear(x, w, b).numpy(),
                               torch.nn.functional.linear(*map(torch.tensor, (x, w, b))).numpy(), rtol=1e-12)


def test_device_arrays_stay_on_device(rng):
    # on "cuda" a tape of device arrays never comes back to the host: conv2d and linear, both ways
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    lw = rng.standard_normal((2, 48)).astype(np.float32)
    tensors = [Tensor(to_device(a), requires_grad=True) for a in (x, w, lw)]
    with use_backend("cuda"):
        y = linear(conv2d(tensors[0], tensors[1], None, padding=1).reshape(1, 48), tensors[2])
        assert is_device_array(y.data)
        y.backward(to_device(np.ones((1, 2), np.float32)))
    assert all(is_device_array(t.grad) for t in tensors)
    ref = [Tensor(a, requires_grad=True) for a in (x, w, lw)]
    with use_backend("numpy"):
        linear(conv2d(ref[0], ref[1], None, padding=1).reshape(1, 48), ref[2]).backward(np.ones((1, 2), np.float32))
    for t, r in zip(tensors, ref):
        np.testing.assert_allclose(t.grad.copy_to_host(), r.grad, rtol=1e-5, atol=1e-5)
