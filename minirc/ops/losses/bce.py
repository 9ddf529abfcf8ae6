"""Binary cross-entropy with logits per element (``torch.nn.functional.binary_cross_entropy_with_logits``).

``max(x, 0) - x*z + log1p(exp(-|x|))`` for logits x and targets z in [0, 1], equal to
``-z*log(sigmoid(x)) - (1-z)*log(1-sigmoid(x))`` but finite for any finite logit (at ``x = +-100``
the naive form takes ``log(0)``). Gradient: ``sigmoid(x) - z``. The loss of the RPN's objectness and
of the mask head.

Backends: ``"numpy"`` vectorised; ``"cpu"`` ``prange`` over elements; ``"cuda"`` one thread per element.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc.cuda_utils import like_input
from minirc.ops.activation import sigmoid_scalar
from minirc.ops.losses._common import (backend_for, check_grad_out, check_input_target, device_flat, flat,
                                       grad_step, launch)


@njit(cache=True)
def _bce_scalar(x, z):
    """The loss of one logit, in x's float type T (shared by the CPU and CUDA kernels)."""
    T = type(x)
    return max(x, T(0.0)) - x * z + math.log1p(math.exp(-abs(x)))


# ---- NumPy reference ----------------------------------------------------------------------------
def bce_numpy(x, z):
    return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def bce_backward_numpy(g, x, z):
    e = np.exp(-np.abs(x))
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))  # the stable sigmoid
    return (g * (sig - z)).astype(x.dtype, copy=False)


# ---- Numba CPU: prange over elements ----------------------------------------------------------------
@njit(cache=True, parallel=True)
def _bce_cpu_kernel(x, z, out):
    for i in prange(x.size):
        out[i] = _bce_scalar(x[i], z[i])


@njit(cache=True, parallel=True)
def _bce_backward_cpu_kernel(g, g_step, x, z, out):
    for i in prange(x.size):
        out[i] = g[i * g_step] * (sigmoid_scalar(x[i]) - z[i])


def bce_cpu(x, z):
    out = np.empty(x.shape, dtype=x.dtype)
    _bce_cpu_kernel(flat(x), flat(z), out.reshape(-1))
    return out


def bce_backward_cpu(g, x, z):
    out = np.empty(x.shape, dtype=x.dtype)
    _bce_backward_cpu_kernel(flat(g), grad_step(g, x.size), flat(x), flat(z), out.reshape(-1))
    return out


# ---- Numba CUDA: one thread per element ---------------------------------------------------------------
@cuda.jit
def _bce_cuda_kernel(x, z, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = _bce_scalar(x[i], z[i])


@cuda.jit
def _bce_backward_cuda_kernel(g, g_step, x, z, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = g[i * g_step] * (sigmoid_scalar(x[i]) - z[i])


def bce_cuda(x, z):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    launch(_bce_cuda_kernel, out.size, device_flat(x), device_flat(z), out)
    return like_input(out.reshape(x.shape), x, z)


def bce_backward_cuda(g, x, z):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    launch(_bce_backward_cuda_kernel, out.size, device_flat(g), grad_step(g, out.size), device_flat(x),
           device_flat(z), out)
    return like_input(out.reshape(x.shape), g, x, z)


# ---- public entry points ---------------------------------------------------------------------------
_IMPLS = {"numpy": bce_numpy, "cpu": bce_cpu, "cuda": bce_cuda}
_BACKWARD_IMPLS = {"numpy": bce_backward_numpy, "cpu": bce_backward_cpu, "cuda": bce_backward_cuda}


def binary_cross_entropy_with_logits(input, target, backend=None):
    """Per-element BCE of logits ``input`` against probabilities ``target`` in [0, 1] (same shapes)."""
    x, z = check_input_target(input, target)
    return _IMPLS[backend_for(backend, x, z)](x, z)


def binary_cross_entropy_with_logits_backward(grad_out, input, target, backend=None):
    """``grad_out * (sigmoid(input) - target)``; grad_out: input's shape or a single value."""
    x, z = check_input_target(input, target)
    g = check_grad_out(grad_out, int(np.prod(x.shape)), "one per element", x.dtype)
    return _BACKWARD_IMPLS[backend_for(backend, g, x, z)](g, x, z)
