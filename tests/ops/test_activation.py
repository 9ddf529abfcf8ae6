import numpy as np
import pytest

from minirc import Tensor, use_backend
from minirc.nn.functional.activation import relu, sigmoid
from minirc.ops import activation as A
from minirc.testing import assert_backends_agree, gradcheck


def test_relu_golden(backend):
    x = np.array([[-2.0, -0.0, 0.0, 0.5, np.nan, 3.0]], np.float32)
    y = A.relu(x, backend=backend)
    np.testing.assert_array_equal(y, [[0, 0, 0, 0.5, np.nan, 3.0]])  # NaN propagates, as torch
    g = A.relu_backward(np.ones_like(x), y, backend=backend)
    np.testing.assert_array_equal(g, [[0, 0, 0, 1, 0, 1]])  # gradient 0 at exactly 0


def test_sigmoid_golden_and_stable(backend):
    x = np.array([0.0, 1.0, -1.0, 100.0, -100.0, -1000.0, 1000.0], np.float32)
    y = A.sigmoid(x, backend=backend)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[:3], [0.5, 1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))], rtol=1e-6)
    assert y[3] == 1.0 and y[6] == 1.0 and y[5] == 0.0
    assert 0 < y[4] < 1e-43  # exp(-100) ~ 3.7e-44 survives as a float32 subnormal
    g = A.sigmoid_backward(np.ones_like(x), y, backend=backend)
    np.testing.assert_allclose(g[:3], y[:3] * (1 - y[:3]), rtol=1e-6)


def test_backends_agree(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32) * 10
    g = rng.standard_normal(x.shape).astype(np.float32)
    assert_backends_agree(A.relu, x=x, rtol=0, atol=0)
    y = assert_backends_agree(A.sigmoid, x=x, rtol=1e-6, atol=1e-7)
    assert_backends_agree(A.relu_backward, grad_out=g, output=A.relu(x), rtol=0, atol=0)
    assert_backends_agree(A.sigmoid_backward, grad_out=g, output=y, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fn", [relu, sigmoid])
def test_gradcheck_numpy_reference(fn, rng):
    x = rng.standard_normal((2, 3, 4))
    x[np.abs(x) < 1e-3] = 0.1  # keep ReLU's kink away from the finite differences
    with use_backend("numpy"):
        gradcheck(fn, [x])


@pytest.mark.parametrize("fn", [relu, sigmoid])
def test_fast_backward_equals_numpy_backward(fn, backend, rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    grads = {}
    for b in ("numpy", backend):
        t = Tensor(x, requires_grad=True)
        with use_backend(b):
            fn(t).backward(g)  # the backward runs on the forward's backend, even outside the block
        grads[b] = t.grad
    np.testing.assert_allclose(grads[backend], grads["numpy"], rtol=1e-6, atol=1e-7)


def test_empty_and_dtype(backend):
    for op in (A.relu, A.sigmoid):
        out = op(np.zeros((0, 3), np.float32), backend=backend)
        assert out.shape == (0, 3) and out.dtype == np.float32
    assert A.sigmoid(np.zeros(2, np.float64), backend=backend).dtype == np.float64


def test_errors():
    with pytest.raises(TypeError, match="x: expected float32 or float64"):
        A.relu(np.arange(3))
    with pytest.raises(ValueError, match="output: expected the shape of grad_out"):
        A.relu_backward(np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(TypeError, match="output: expected the dtype of grad_out"):
        A.sigmoid_backward(np.ones(3, np.float32), np.ones(3, np.float64))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_serial_and_parallel_kernels(rng, dtype):
    """Arrays below and at A.PARALLEL_MIN_SIZE (serial loop / prange), with -0, NaN, infinities and
    a strided input: the serial and prange kernels give the same bits, and ReLU's those of numpy."""
    special = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 100.0, -100.0], dtype)
    for n in (len(special), 1000, A.PARALLEL_MIN_SIZE - 1, A.PARALLEL_MIN_SIZE + 5):
        x = (rng.standard_normal(2 * n) * 10).astype(dtype)[::2]  # strided: _flat copies it
        x[: len(special)] = special
        g = rng.standard_normal(n).astype(dtype)
        g[: len(special)] = special[::-1]
        y, s = A.relu_numpy(x), A.sigmoid_numpy(x)
        cases = [(A._relu_cpu_serial, A._relu_cpu_kernel, (x,), A.relu_cpu(x), y),
                 (A._relu_backward_cpu_serial, A._relu_backward_cpu_kernel, (g, y), A.relu_backward_cpu(g, y),
                  A.relu_backward_numpy(g, y)),
                 (A._sigmoid_cpu_serial, A._sigmoid_cpu_kernel, (x,), A.sigmoid_cpu(x), None),
                 (A._sigmoid_backward_cpu_serial, A._sigmoid_backward_cpu_kernel, (g, s),
                  A.sigmoid_backward_cpu(g, s), None)]
        for serial, parallel, args, got, reference in cases:
            flat = [np.ascontiguousarray(a) for a in args]
            a, b = np.empty(n, dtype), np.empty(n, dtype)
            serial(*flat, a)
            parallel(*flat, b)
            assert a.tobytes() == b.tobytes() == got.tobytes(), serial.__name__
            assert got.dtype == dtype and got.shape == (n,)
            if reference is not None:
                assert got.tobytes() == reference.tobytes(), serial.__name__
