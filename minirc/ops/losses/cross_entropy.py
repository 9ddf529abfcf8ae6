"""Cross-entropy over K classes per row (``torch.nn.functional.cross_entropy``), forward and backward.

Logits (R, K), integer targets (R,) in ``[0, K)``; ``loss_r = logsumexp(x_r) - x_r[t_r]`` with
``logsumexp = m + log(sum exp(x - m))``, ``m = max(x_r)``. The forward also returns ``logsumexp``
(R,), which the backward reuses: ``grad[r, k] = g_r * (exp(x[r, k] - logsumexp_r) - [k == t_r])``.
Row sums accumulate in float64. Every target must be a class index: nothing is ignored (torch's
``ignore_index=-100`` is not offered). The classification loss of the box head.

Backends: ``"numpy"`` vectorised; ``"cpu"`` ``prange`` over rows; ``"cuda"`` one thread per row
(forward) and per element (backward).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.cuda_utils import is_device_array, like_input, to_device, to_host
from minirc.ops.losses._common import backend_for, check_grad_out, device_flat, flat, grad_step, launch


def _ce_row(x, r, t):
    """(loss, logsumexp) of row r of logits x for target class t, both float64.

    Compiled for the CPU kernel and as a CUDA device function (it reads an array).
    """
    m = x[r, 0]
    for k in range(1, x.shape[1]):
        m = max(m, x[r, k])
    s = 0.0
    for k in range(x.shape[1]):
        s += math.exp(float(x[r, k] - m))  # exp and sum in float64
    lse = float(m) + math.log(s)
    return lse - float(x[r, t]), lse


_ce_row_cpu = njit(cache=True)(_ce_row)
_ce_row_cuda = cuda.jit(device=True)(_ce_row)


# ---- NumPy reference ----------------------------------------------------------------------------
def ce_numpy(x, t):
    m = x.max(axis=1, keepdims=True) if x.shape[1] else np.zeros((x.shape[0], 1), x.dtype)
    s = np.exp((x - m).astype(np.float64)).sum(axis=1)  # exp and row sums in float64, as the kernels
    lse = m[:, 0].astype(np.float64) + np.log(s)
    loss = lse - x[np.arange(x.shape[0]), t].astype(np.float64)
    return loss.astype(x.dtype), lse.astype(x.dtype)


def ce_backward_numpy(g, x, t, lse):
    grad = np.exp(x - lse[:, None])
    grad[np.arange(x.shape[0]), t] -= 1
    return (g[:, None] * grad).astype(x.dtype, copy=False)


# ---- Numba CPU: prange over rows ----------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _ce_cpu_kernel(x, t, loss, lse):
    for r in prange(x.shape[0]):
        loss[r], lse[r] = _ce_row_cpu(x, r, t[r])


@njit(cache=True, parallel=True)
def _ce_backward_cpu_kernel(g, g_step, x, t, lse, out):
    for r in prange(x.shape[0]):
        for k in range(x.shape[1]):
            p = math.exp(x[r, k] - lse[r])
            out[r, k] = g[r * g_step] * (p - type(p)(1.0) if k == t[r] else p)


def ce_cpu(x, t):
    loss = np.empty(x.shape[0], dtype=x.dtype)
    lse = np.empty(x.shape[0], dtype=x.dtype)
    _ce_cpu_kernel(np.ascontiguousarray(x), np.ascontiguousarray(t), loss, lse)
    return loss, lse


def ce_backward_cpu(g, x, t, lse):
    out = np.empty(x.shape, dtype=x.dtype)
    _ce_backward_cpu_kernel(flat(g), grad_step(g, x.shape[0]), np.ascontiguousarray(x),
                            np.ascontiguousarray(t), np.ascontiguousarray(lse), out)
    return out


# ---- Numba CUDA: one thread per row (forward), per element (backward) --------------------------------
@cuda.jit
def _ce_cuda_kernel(x, t, loss, lse):
    r = cuda.grid(1)
    if r < x.shape[0]:
        loss[r], lse[r] = _ce_row_cuda(x, r, t[r])


@cuda.jit
def _ce_backward_cuda_kernel(g, g_step, x, t, lse, out):
    i = cuda.grid(1)
    if i < out.size:
        r = i // x.shape[1]
        k = i % x.shape[1]
        p = math.exp(x[r, k] - lse[r])
        out[r, k] = g[r * g_step] * (p - type(p)(1.0) if k == t[r] else p)


def ce_cuda(x, t):
    loss = cuda.device_array(x.shape[0], dtype=x.dtype)
    lse = cuda.device_array(x.shape[0], dtype=x.dtype)
    launch(_ce_cuda_kernel, x.shape[0], to_device(x), to_device(t), loss, lse)
    return like_input(loss, x, t), like_input(lse, x, t)


def ce_backward_cuda(g, x, t, lse):
    out = cuda.device_array(tuple(x.shape), dtype=x.dtype)
    launch(_ce_backward_cuda_kernel, int(np.prod(x.shape)), device_flat(g), grad_step(g, x.shape[0]),
           to_device(x), to_device(t), to_device(lse), out)
    return like_input(out, g, x, t, lse)


# ---- public entry points ---------------------------------------------------------------------------
_IMPLS = {"numpy": ce_numpy, "cpu": ce_cpu, "cuda": ce_cuda}
_BACKWARD_IMPLS = {"numpy": ce_backward_numpy, "cpu": ce_backward_cpu, "cuda": ce_backward_cuda}


def check_logits_classes(input, target):
    """Logits (R, K) float and class indices (R,) int; host targets are range-checked (as int64)."""
    x = _checks.as_array(input, "input", ndim=2, float_only=True)
    t = _checks.as_array(target, "target", ndim=1)
    if t.shape[0] != x.shape[0]:
        raise ValueError(f"target: expected ({x.shape[0]},) class indices (one per row of input), "
                         f"got {tuple(t.shape)}")
    if not np.issubdtype(np.dtype(t.dtype), np.integer):
        raise TypeError(f"target: expected integer class indices (int64), got {t.dtype}")
    if is_device_array(t):  # checking a device array's values would copy it back: the caller checked it
        return x, t
    host = to_host(t)
    if host.size and (host.min() < 0 or host.max() >= x.shape[1]):
        bad = host[(host < 0) | (host >= x.shape[1])][0]
        raise ValueError(f"target: expected class indices in [0, {x.shape[1]}), got {bad} "
                         f"(nothing is ignored: no ignore_index)")
    if x.shape[0] and x.shape[1] == 0:
        raise ValueError("input: expected at least one class column, got shape " + str(tuple(x.shape)))
    return x, host.astype(np.int64, copy=False)


def cross_entropy(input, target, backend=None):
    """Per-row cross-entropy of logits (R, K) against class indices (R,) int in [0, K).

    Host targets are range-checked; device targets are not (that would copy them back).

    Returns ``(loss, logsumexp)``, both (R,) in input's dtype; pass ``logsumexp`` to the backward.
    """
    x, t = check_logits_classes(input, target)
    return _IMPLS[backend_for(backend, x, t)](x, t)


def cross_entropy_backward(grad_out, input, target, logsumexp, backend=None):
    """``grad_out[r] * (softmax(input[r]) - onehot(target[r]))``, (R, K); grad_out: (R,) or a single value."""
    x, t = check_logits_classes(input, target)
    lse = _checks.as_array(logsumexp, "logsumexp", ndim=1, float_only=True)
    if lse.shape[0] != x.shape[0]:
        raise ValueError(f"logsumexp: expected ({x.shape[0]},), got {tuple(lse.shape)}")
    g = check_grad_out(grad_out, x.shape[0], "one per row", x.dtype)
    g = g.reshape(-1) if not is_device_array(g) else g.reshape(int(np.prod(g.shape)))
    return _BACKWARD_IMPLS[backend_for(backend, g, x, t, lse)](g, x, t, lse)
