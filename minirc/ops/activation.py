"""Elementwise activations: ReLU and the logistic sigmoid, forward and backward.

Shapes: any shape; the result has the input's shape and dtype (float32 or float64).

* ``relu(x) = max(x, 0)``; NaN stays NaN, as in torch (``x <= 0`` is false for NaN).
  ``relu_backward(g, y) = g * (y > 0)`` from the *output* ``y``, as torch's ``threshold_backward``:
  the gradient at exactly 0 is 0.
* ``sigmoid(x) = 1 / (1 + exp(-x))``, evaluated without overflow: for ``x < 0`` it is
  ``e / (1 + e)`` with ``e = exp(x)`` (``exp(-x)`` would overflow to inf for ``x < -88`` in float32).
  ``sigmoid_backward(g, y) = g * y * (1 - y)`` from the output ``y``.

Backends (the arrays are flattened, so every kernel is compiled once per dtype):
``"numpy"`` vectorised NumPy; ``"cpu"`` a loop over the elements, ``prange`` for big arrays;
``"cuda"`` one thread per element.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, like_input, to_device


@njit(cache=True)
def sigmoid_scalar(v):
    """Stable logistic of one value, computed in v's own float type T (no float64 promotion).

    Shared by the sigmoid kernels here and the BCE backward kernels (:mod:`minirc.ops.losses.bce`).
    """
    T = type(v)
    one = T(1.0)
    if v >= 0:  # split at 0 so exp never sees a large positive argument
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


# ---- NumPy reference --------------------------------------------------------------------------
def relu_numpy(x):
    return np.where(x <= 0, np.zeros((), x.dtype), x)


def relu_backward_numpy(grad_out, output):
    return np.where(output > 0, grad_out, np.zeros((), grad_out.dtype))


def sigmoid_numpy(x):
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    one = np.ones((), x.dtype)
    return np.where(x >= 0, one / (one + e), e / (one + e)).astype(x.dtype, copy=False)


def sigmoid_backward_numpy(grad_out, output):
    return grad_out * output * (np.ones((), output.dtype) - output)


# ---- Numba CPU: a loop over the flattened elements, prange from PARALLEL_MIN_SIZE on -------------
# A parallel launch costs 12-16 us of CPU on one thread, as long as a serial loop over about 130 000
# float32 elements, and more wall time on a loaded machine, where the waiting thread has to be woken
# (2 threads, 2 busy cores: the prange loop lost to the serial one on every size up to 2^18).
# 24 of the 27 ReLUs of a demo training step are smaller (docs/performance.md).
PARALLEL_MIN_SIZE = 2**18


@njit(cache=True, inline="always")
def _relu_value(v):
    return type(v)(0.0) if v <= 0 else v


@njit(cache=True, inline="always")
def _relu_grad_value(g, y):
    return g if y > 0 else type(g)(0.0)


@njit(cache=True, inline="always")
def _sigmoid_grad_value(g, y):
    return g * y * (type(y)(1.0) - y)


@njit(cache=True, parallel=True)
def _relu_cpu_kernel(x, out):
    for i in prange(x.size):
        out[i] = _relu_value(x[i])


@njit(cache=True)
def _relu_cpu_serial(x, out):
    for i in range(x.size):
        out[i] = _relu_value(x[i])


@njit(cache=True, parallel=True)
def _relu_backward_cpu_kernel(g, y, out):
    for i in prange(g.size):
        out[i] = _relu_grad_value(g[i], y[i])


@njit(cache=True)
def _relu_backward_cpu_serial(g, y, out):
    for i in range(g.size):
        out[i] = _relu_grad_value(g[i], y[i])


@njit(cache=True, parallel=True)
def _sigmoid_cpu_kernel(x, out):
    for i in prange(x.size):
        out[i] = sigmoid_scalar(x[i])


@njit(cache=True)
def _sigmoid_cpu_serial(x, out):
    for i in range(x.size):
        out[i] = sigmoid_scalar(x[i])


@njit(cache=True, parallel=True)
def _sigmoid_backward_cpu_kernel(g, y, out):
    for i in prange(g.size):
        out[i] = _sigmoid_grad_value(g[i], y[i])


@njit(cache=True)
def _sigmoid_backward_cpu_serial(g, y, out):
    for i in range(g.size):
        out[i] = _sigmoid_grad_value(g[i], y[i])


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _run_cpu(kernels, *arrays):
    """kernels: (serial, parallel); the arrays' elements in C order, the result a fresh array."""
    out = np.empty(arrays[0].shape, dtype=arrays[0].dtype)
    kernel = kernels[out.size >= PARALLEL_MIN_SIZE]
    kernel(*[_flat(a) for a in arrays], out.reshape(-1))
    return out


def relu_cpu(x):
    return _run_cpu((_relu_cpu_serial, _relu_cpu_kernel), x)


def relu_backward_cpu(grad_out, output):
    return _run_cpu((_relu_backward_cpu_serial, _relu_backward_cpu_kernel), grad_out, output)


def sigmoid_cpu(x):
    return _run_cpu((_sigmoid_cpu_serial, _sigmoid_cpu_kernel), x)


def sigmoid_backward_cpu(grad_out, output):
    return _run_cpu((_sigmoid_backward_cpu_serial, _sigmoid_backward_cpu_kernel), grad_out, output)


# ---- Numba CUDA: one thread per element -------------------------------------------------------
@cuda.jit
def _relu_cuda_kernel(x, out):
    i = cuda.grid(1)
    if i < x.size:
        v = x[i]
        out[i] = type(v)(0.0) if v <= 0 else v


@cuda.jit
def _relu_backward_cuda_kernel(g, y, out):
    i = cuda.grid(1)
    if i < g.size:
        out[i] = g[i] if y[i] > 0 else type(g[i])(0.0)


@cuda.jit
def _sigmoid_cuda_kernel(x, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = sigmoid_scalar(x[i])


@cuda.jit
def _sigmoid_backward_cuda_kernel(g, y, out):
    i = cuda.grid(1)
    if i < g.size:
        out[i] = g[i] * y[i] * (type(y[i])(1.0) - y[i])


def _run_cuda(kernel, *arrays):
    shape, dtype = tuple(arrays[0].shape), arrays[0].dtype
    n = int(np.prod(shape))
    if n == 0:  # never launch an empty grid
        return like_input(cuda.device_array(shape, dtype=dtype), *arrays)
    flat = [to_device(a).reshape(n) for a in arrays]
    out = cuda.device_array(n, dtype=dtype)
    kernel[blocks_for(n), 256](*flat, out)
    return like_input(out.reshape(shape), *arrays)


def relu_cuda(x):
    return _run_cuda(_relu_cuda_kernel, x)


def relu_backward_cuda(grad_out, output):
    return _run_cuda(_relu_backward_cuda_kernel, grad_out, output)


def sigmoid_cuda(x):
    return _run_cuda(_sigmoid_cuda_kernel, x)


def sigmoid_backward_cuda(grad_out, output):
    return _run_cuda(_sigmoid_backward_cuda_kernel, grad_out, output)


# ---- public entry points ------------------------------------------------------------------------
_IMPLS = {
    "relu": {"numpy": relu_numpy, "cpu": relu_cpu, "cuda": relu_cuda},
    "relu_backward": {"numpy": relu_backward_numpy, "cpu": relu_backward_cpu, "cuda": relu_backward_cuda},
    "sigmoid": {"numpy": sigmoid_numpy, "cpu": sigmoid_cpu, "cuda": sigmoid_cuda},
    "sigmoid_backward": {"numpy": sigmoid_backward_numpy, "cpu": sigmoid_backward_cpu,
                         "cuda": sigmoid_backward_cuda},
}


def _dispatch(op, backend, **named):
    arrays = [_checks.as_array(a, name, float_only=True) for name, a in named.items()]
    names = list(named)
    for name, a in zip(names[1:], arrays[1:]):
        _checks.same_dtype(arrays[0], a, names[0], name)
        if tuple(a.shape) != tuple(arrays[0].shape):
            raise ValueError(f"{name}: expected the shape of {names[0]} {tuple(arrays[0].shape)}, "
                             f"got {tuple(a.shape)}")
    name = get_backend(backend)
    if name != "cuda" and any(is_device_array(a) for a in arrays):
        raise TypeError(f"{', '.join(names)}: CUDA device arrays need backend='cuda', got backend={name!r}")
    return _IMPLS[op][name](*arrays)


def relu(x, backend=None):
    """``max(x, 0)`` elementwise. x: any shape, float32/float64."""
    return _dispatch("relu", backend, x=x)


def relu_backward(grad_out, output, backend=None):
    """Gradient of ReLU w.r.t. its input: ``grad_out * (output > 0)``; output = ``relu(x)``."""
    return _dispatch("relu_backward", backend, grad_out=grad_out, output=output)


def sigmoid(x, backend=None):
    """``1 / (1 + exp(-x))`` elementwise, finite for every finite x. x: any shape, float32/float64."""
    return _dispatch("sigmoid", backend, x=x)


def sigmoid_backward(grad_out, output, backend=None):
    """Gradient of the sigmoid w.r.t. its input: ``grad_out * output * (1 - output)``."""
    return _dispatch("sigmoid_backward", backend, grad_out=grad_out, output=output)
