"""Smooth L1 loss per element (``torch.nn.functional.smooth_l1_loss``), forward and backward.

With ``d = x - t``: ``0.5 * d**2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 * beta``; ``beta == 0``
is the L1 loss ``|d|`` (torch switches to ``l1_loss`` there). Gradient: ``d / beta`` inside,
``sign(d)`` outside (``sign(0) = 0`` for ``beta == 0``). The regression loss of the RPN and the box head.

Backends: ``"numpy"`` vectorised; ``"cpu"`` ``prange`` over elements; ``"cuda"`` one thread per element.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.cuda_utils import like_input
from minirc.ops.losses._common import (backend_for, check_grad_out, check_input_target, device_flat, flat,
                                       grad_step, launch)


# Per-element math shared by the CPU and CUDA kernels, in the argument's float type T (Numba would
# otherwise promote float32 to float64 at every Python literal).
@njit(cache=True)
def _smooth_l1_scalar(d, beta):
    T = type(d)
    a = abs(d)
    if a < beta:
        return T(0.5) * a * a / beta
    return a - T(0.5) * beta


@njit(cache=True)
def _smooth_l1_grad_scalar(d, beta):
    T = type(d)
    if beta == 0:  # L1: sign(d), 0 at d == 0
        return T(1.0) if d > 0 else (T(-1.0) if d < 0 else T(0.0))
    if d <= -beta:
        return T(-1.0)
    if d >= beta:
        return T(1.0)
    return d / beta


# ---- NumPy reference ----------------------------------------------------------------------------
def smooth_l1_numpy(x, t, beta):
    a = np.abs(x - t)
    if beta == 0:
        return a
    b = x.dtype.type(beta)
    return np.where(a < b, 0.5 * a * a / b, a - 0.5 * b).astype(x.dtype, copy=False)


def smooth_l1_backward_numpy(g, x, t, beta):
    d = x - t
    if beta == 0:
        local = np.sign(d)
    else:
        b = x.dtype.type(beta)
        local = np.where(d <= -b, -1.0, np.where(d >= b, 1.0, d / b)).astype(x.dtype, copy=False)
    return (g * local).astype(x.dtype, copy=False)


# ---- Numba CPU: prange over elements ----------------------------------------------------------------
@njit(cache=True, parallel=True)
def _smooth_l1_cpu_kernel(x, t, beta, out):
    for i in prange(x.size):
        out[i] = _smooth_l1_scalar(x[i] - t[i], beta)


@njit(cache=True, parallel=True)
def _smooth_l1_backward_cpu_kernel(g, g_step, x, t, beta, out):
    for i in prange(x.size):
        out[i] = g[i * g_step] * _smooth_l1_grad_scalar(x[i] - t[i], beta)


def smooth_l1_cpu(x, t, beta):
    out = np.empty(x.shape, dtype=x.dtype)
    _smooth_l1_cpu_kernel(flat(x), flat(t), x.dtype.type(beta), out.reshape(-1))
    return out


def smooth_l1_backward_cpu(g, x, t, beta):
    out = np.empty(x.shape, dtype=x.dtype)
    _smooth_l1_backward_cpu_kernel(flat(g), grad_step(g, x.size), flat(x), flat(t), x.dtype.type(beta),
                                   out.reshape(-1))
    return out


# ---- Numba CUDA: one thread per element ---------------------------------------------------------------
@cuda.jit
def _smooth_l1_cuda_kernel(x, t, beta, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = _smooth_l1_scalar(x[i] - t[i], beta)


@cuda.jit
def _smooth_l1_backward_cuda_kernel(g, g_step, x, t, beta, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = g[i * g_step] * _smooth_l1_grad_scalar(x[i] - t[i], beta)


def smooth_l1_cuda(x, t, beta):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    launch(_smooth_l1_cuda_kernel, out.size, device_flat(x), device_flat(t), x.dtype.type(beta), out)
    return like_input(out.reshape(x.shape), x, t)


def smooth_l1_backward_cuda(g, x, t, beta):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    launch(_smooth_l1_backward_cuda_kernel, out.size, device_flat(g), grad_step(g, out.size), device_flat(x),
           device_flat(t), x.dtype.type(beta), out)
    return like_input(out.reshape(x.shape), g, x, t)


# ---- public entry points ---------------------------------------------------------------------------
_IMPLS = {"numpy": smooth_l1_numpy, "cpu": smooth_l1_cpu, "cuda": smooth_l1_cuda}
_BACKWARD_IMPLS = {"numpy": smooth_l1_backward_numpy, "cpu": smooth_l1_backward_cpu,
                   "cuda": smooth_l1_backward_cuda}


def _beta(beta):
    return _checks.number(beta, "beta", low=0.0)


def smooth_l1_loss(input, target, beta=1.0, backend=None):
    """Per-element smooth L1 of ``input - target`` (same shapes, float). Returns input's shape."""
    x, t = check_input_target(input, target)
    return _IMPLS[backend_for(backend, x, t)](x, t, _beta(beta))


def smooth_l1_loss_backward(grad_out, input, target, beta=1.0, backend=None):
    """``grad_out * d loss / d input``; grad_out: input's shape or a single value."""
    x, t = check_input_target(input, target)
    g = check_grad_out(grad_out, int(np.prod(x.shape)), "one per element", x.dtype)
    return _BACKWARD_IMPLS[backend_for(backend, g, x, t)](g, x, t, _beta(beta))
