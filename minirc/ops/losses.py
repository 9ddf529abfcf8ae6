"""The three losses of Mask R-CNN, per element (or per row), forward and backward.

* smooth L1 (RPN and box-head regression; ``torch.nn.functional.smooth_l1_loss``), with ``d = x - t``:
  ``0.5 * d**2 / beta`` if ``|d| < beta`` else ``|d| - 0.5 * beta``; ``beta == 0`` is the L1 loss
  ``|d|`` (torch switches to ``l1_loss`` there). Gradient: ``d / beta`` inside, ``sign(d)`` outside
  (``sign(0) = 0`` for ``beta == 0``).
* binary cross-entropy with logits (objectness, masks): ``max(x, 0) - x*z + log1p(exp(-|x|))``,
  equal to ``-z*log(sigmoid(x)) - (1-z)*log(1-sigmoid(x))`` but finite for any finite logit (at
  ``x = +-100`` the naive form takes ``log(0)``). Gradient: ``sigmoid(x) - z``.
* cross-entropy over K classes (box-head classification): logits (R, K), integer targets (R,) in
  ``[0, K)``; ``loss_r = logsumexp(x_r) - x_r[t_r]`` with ``logsumexp = m + log(sum exp(x - m))``,
  ``m = max(x_r)``. The forward also returns ``logsumexp`` (R,), which the backward reuses:
  ``grad[r, k] = g_r * (exp(x[r, k] - logsumexp_r) - [k == t_r])``. Row sums accumulate in float64.
  Every target must be a class index: nothing is ignored (torch's ``ignore_index=-100`` is not offered).

Backward functions take ``grad_out`` of the per-element shape, or a single value applied to every
element (what a "mean"/"sum" reduction sends back). Reductions (:func:`reduce_loss`) run where the
losses are: NumPy on the host, :mod:`minirc.cuda_array` sums on the device (the scalar loss stays a
device array). A "mean" over zero elements is NaN, as in torch; a "sum" over zero elements is 0.

Backends: ``"numpy"`` vectorised; ``"cpu"`` ``prange`` over elements (rows for the CE forward);
``"cuda"`` one thread per element (per row for the CE forward).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, like_input, to_device, to_host

REDUCTIONS = ("none", "mean", "sum")


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


@njit(cache=True)
def _bce_scalar(x, z):
    T = type(x)
    return max(x, T(0.0)) - x * z + math.log1p(math.exp(-abs(x)))


@njit(cache=True)
def _sigmoid_scalar(v):
    T = type(v)
    one = T(1.0)
    if v >= 0:
        return one / (one + math.exp(-v))
    e = math.exp(v)
    return e / (one + e)


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


def bce_numpy(x, z):
    return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


def bce_backward_numpy(g, x, z):
    e = np.exp(-np.abs(x))
    sig = np.where(x >= 0, 1 / (1 + e), e / (1 + e))  # the stable sigmoid
    return (g * (sig - z)).astype(x.dtype, copy=False)


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


# ---- Numba CPU -------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _smooth_l1_cpu_kernel(x, t, beta, out):
    for i in prange(x.size):
        out[i] = _smooth_l1_scalar(x[i] - t[i], beta)


@njit(cache=True, parallel=True)
def _smooth_l1_backward_cpu_kernel(g, g_step, x, t, beta, out):
    for i in prange(x.size):
        out[i] = g[i * g_step] * _smooth_l1_grad_scalar(x[i] - t[i], beta)


@njit(cache=True, parallel=True)
def _bce_cpu_kernel(x, z, out):
    for i in prange(x.size):
        out[i] = _bce_scalar(x[i], z[i])


@njit(cache=True, parallel=True)
def _bce_backward_cpu_kernel(g, g_step, x, z, out):
    for i in prange(x.size):
        out[i] = g[i * g_step] * (_sigmoid_scalar(x[i]) - z[i])


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


def _flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def _g_step(g, n):
    return 0 if int(np.prod(g.shape)) == 1 and n != 1 else 1


def smooth_l1_cpu(x, t, beta):
    out = np.empty(x.shape, dtype=x.dtype)
    _smooth_l1_cpu_kernel(_flat(x), _flat(t), x.dtype.type(beta), out.reshape(-1))
    return out


def smooth_l1_backward_cpu(g, x, t, beta):
    out = np.empty(x.shape, dtype=x.dtype)
    _smooth_l1_backward_cpu_kernel(_flat(g), _g_step(g, x.size), _flat(x), _flat(t), x.dtype.type(beta),
                                   out.reshape(-1))
    return out


def bce_cpu(x, z):
    out = np.empty(x.shape, dtype=x.dtype)
    _bce_cpu_kernel(_flat(x), _flat(z), out.reshape(-1))
    return out


def bce_backward_cpu(g, x, z):
    out = np.empty(x.shape, dtype=x.dtype)
    _bce_backward_cpu_kernel(_flat(g), _g_step(g, x.size), _flat(x), _flat(z), out.reshape(-1))
    return out


def ce_cpu(x, t):
    loss = np.empty(x.shape[0], dtype=x.dtype)
    lse = np.empty(x.shape[0], dtype=x.dtype)
    _ce_cpu_kernel(np.ascontiguousarray(x), np.ascontiguousarray(t), loss, lse)
    return loss, lse


def ce_backward_cpu(g, x, t, lse):
    out = np.empty(x.shape, dtype=x.dtype)
    _ce_backward_cpu_kernel(_flat(g), _g_step(g, x.shape[0]), np.ascontiguousarray(x),
                            np.ascontiguousarray(t), np.ascontiguousarray(lse), out)
    return out


# ---- Numba CUDA: one thread per element (per row for the CE forward) --------------------------------
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


@cuda.jit
def _bce_cuda_kernel(x, z, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = _bce_scalar(x[i], z[i])


@cuda.jit
def _bce_backward_cuda_kernel(g, g_step, x, z, out):
    i = cuda.grid(1)
    if i < x.size:
        out[i] = g[i * g_step] * (_sigmoid_scalar(x[i]) - z[i])


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


def _launch(kernel, n, *args):
    if n > 0:  # an empty grid is an invalid launch
        kernel[blocks_for(n), 256](*args)


def _dflat(a):
    return to_device(a).reshape(int(np.prod(a.shape)))


def smooth_l1_cuda(x, t, beta):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    _launch(_smooth_l1_cuda_kernel, out.size, _dflat(x), _dflat(t), x.dtype.type(beta), out)
    return like_input(out.reshape(x.shape), x, t)


def smooth_l1_backward_cuda(g, x, t, beta):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    _launch(_smooth_l1_backward_cuda_kernel, out.size, _dflat(g), _g_step(g, out.size), _dflat(x), _dflat(t),
            x.dtype.type(beta), out)
    return like_input(out.reshape(x.shape), g, x, t)


def bce_cuda(x, z):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    _launch(_bce_cuda_kernel, out.size, _dflat(x), _dflat(z), out)
    return like_input(out.reshape(x.shape), x, z)


def bce_backward_cuda(g, x, z):
    out = cuda.device_array(int(np.prod(x.shape)), dtype=x.dtype)
    _launch(_bce_backward_cuda_kernel, out.size, _dflat(g), _g_step(g, out.size), _dflat(x), _dflat(z), out)
    return like_input(out.reshape(x.shape), g, x, z)


def ce_cuda(x, t):
    loss = cuda.device_array(x.shape[0], dtype=x.dtype)
    lse = cuda.device_array(x.shape[0], dtype=x.dtype)
    _launch(_ce_cuda_kernel, x.shape[0], to_device(x), to_device(t), loss, lse)
    return like_input(loss, x, t), like_input(lse, x, t)


def ce_backward_cuda(g, x, t, lse):
    out = cuda.device_array(tuple(x.shape), dtype=x.dtype)
    _launch(_ce_backward_cuda_kernel, int(np.prod(x.shape)), _dflat(g), _g_step(g, x.shape[0]), to_device(x),
            to_device(t), to_device(lse), out)
    return like_input(out, g, x, t, lse)


# ---- public entry points ---------------------------------------------------------------------------
_IMPLS = {
    "smooth_l1": {"numpy": smooth_l1_numpy, "cpu": smooth_l1_cpu, "cuda": smooth_l1_cuda},
    "smooth_l1_backward": {"numpy": smooth_l1_backward_numpy, "cpu": smooth_l1_backward_cpu,
                           "cuda": smooth_l1_backward_cuda},
    "bce": {"numpy": bce_numpy, "cpu": bce_cpu, "cuda": bce_cuda},
    "bce_backward": {"numpy": bce_backward_numpy, "cpu": bce_backward_cpu, "cuda": bce_backward_cuda},
    "ce": {"numpy": ce_numpy, "cpu": ce_cpu, "cuda": ce_cuda},
    "ce_backward": {"numpy": ce_backward_numpy, "cpu": ce_backward_cpu, "cuda": ce_backward_cuda},
}


def _backend_for(backend, *arrays):
    name = get_backend(backend)
    if name != "cuda" and any(is_device_array(a) for a in arrays):
        raise TypeError(f"CUDA device arrays need backend='cuda', got backend={name!r}")
    return name


def _input_target(x, t):
    x = _checks.as_array(x, "input", float_only=True)
    t = _checks.as_array(t, "target")
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"target: expected the shape of input {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.dtype != x.dtype:
        if is_device_array(t):
            raise TypeError(f"target: expected the dtype of input ({x.dtype}), got {t.dtype}")
        t = t.astype(x.dtype)
    return x, t


def _grad(g, n, rows_name, x_dtype):
    g = _checks.as_array(g, "grad_out", float_only=True)
    size = int(np.prod(g.shape))
    if size not in (1, n):
        raise ValueError(f"grad_out: expected {n} values ({rows_name}) or a single value, got shape {tuple(g.shape)}")
    if g.dtype != x_dtype and not is_device_array(g):
        g = g.astype(x_dtype)
    return g


def _beta(beta):
    return _checks.number(beta, "beta", low=0.0)


def smooth_l1_loss(input, target, beta=1.0, backend=None):
    """Per-element smooth L1 of ``input - target`` (same shapes, float). Returns input's shape."""
    x, t = _input_target(input, target)
    return _IMPLS["smooth_l1"][_backend_for(backend, x, t)](x, t, _beta(beta))


def smooth_l1_loss_backward(grad_out, input, target, beta=1.0, backend=None):
    """``grad_out * d loss / d input``; grad_out: input's shape or a single value."""
    x, t = _input_target(input, target)
    g = _grad(grad_out, int(np.prod(x.shape)), "one per element", x.dtype)
    return _IMPLS["smooth_l1_backward"][_backend_for(backend, g, x, t)](g, x, t, _beta(beta))


def binary_cross_entropy_with_logits(input, target, backend=None):
    """Per-element BCE of logits ``input`` against probabilities ``target`` in [0, 1] (same shapes)."""
    x, z = _input_target(input, target)
    return _IMPLS["bce"][_backend_for(backend, x, z)](x, z)


def binary_cross_entropy_with_logits_backward(grad_out, input, target, backend=None):
    """``grad_out * (sigmoid(input) - target)``; grad_out: input's shape or a single value."""
    x, z = _input_target(input, target)
    g = _grad(grad_out, int(np.prod(x.shape)), "one per element", x.dtype)
    return _IMPLS["bce_backward"][_backend_for(backend, g, x, z)](g, x, z)


def _logits_classes(input, target):
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
    return x, (t if is_device_array(t) else host.astype(np.int64, copy=False))


def cross_entropy(input, target, backend=None):
    """Per-row cross-entropy of logits (R, K) against class indices (R,) int in [0, K).

    Host targets are range-checked; device targets are not (that would copy them back).

    Returns ``(loss, logsumexp)``, both (R,) in input's dtype; pass ``logsumexp`` to the backward.
    """
    x, t = _logits_classes(input, target)
    return _IMPLS["ce"][_backend_for(backend, x, t)](x, t)


def cross_entropy_backward(grad_out, input, target, logsumexp, backend=None):
    """``grad_out[r] * (softmax(input[r]) - onehot(target[r]))``, (R, K); grad_out: (R,) or a single value."""
    x, t = _logits_classes(input, target)
    lse = _checks.as_array(logsumexp, "logsumexp", ndim=1, float_only=True)
    if lse.shape[0] != x.shape[0]:
        raise ValueError(f"logsumexp: expected ({x.shape[0]},), got {tuple(lse.shape)}")
    g = _grad(grad_out, x.shape[0], "one per row", x.dtype)
    g = g.reshape(-1) if not is_device_array(g) else g.reshape(int(np.prod(g.shape)))
    return _IMPLS["ce_backward"][_backend_for(backend, g, x, t, lse)](g, x, t, lse)


def reduce_loss(per_element, reduction):
    """``"none"``: unchanged; ``"sum"``: the sum; ``"mean"``: sum / count (NaN for zero elements, as torch).

    Returns a 0-d array for "sum" and "mean", in the loss's dtype, where the losses live: NumPy
    (pairwise sum) for host arrays, a device array (serial sums, one axis at a time) on the GPU, so a
    device loss stays on the device until someone asks for its value.
    """
    _checks.one_of(reduction, "reduction", REDUCTIONS)
    if reduction == "none":
        return per_element
    if is_device_array(per_element):
        from minirc import cuda_array

        total = cuda_array.reduce_sum(per_element)
        if reduction == "sum":
            return total
        return cuda_array.binary(cuda_array.DIV, total, per_element.dtype.type(per_element.size))
    host = np.asarray(per_element)
    total = host.sum(dtype=host.dtype)
    if reduction == "sum":
        return np.asarray(total, dtype=host.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 -> NaN, as torch's mean of nothing
        return np.asarray(total / host.dtype.type(host.size), dtype=host.dtype)
