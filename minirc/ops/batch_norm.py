"""Batch normalisation (Ioffe & Szegedy 2015, Algorithm 1 and section 3) with torch's semantics.

Shape shorthand: x (N, C, H, W); every statistic is per channel c, over the M = N*H*W values of that
channel.

Training mode (``torch.nn.functional.batch_norm(..., training=True)``)::

    mean[c]   = sum(x[:, c]) / M
    var[c]    = sum((x[:, c] - mean[c])**2) / M          # biased: this normalises the batch
    invstd[c] = 1 / sqrt(var[c] + eps)
    y         = (x - mean[c]) * invstd[c] * weight[c] + bias[c]
    running_mean = (1 - momentum) * running_mean + momentum * mean
    running_var  = (1 - momentum) * running_var  + momentum * var * M / (M - 1)   # UNBIASED, as torch

Eval mode uses ``running_mean`` and ``running_var`` in place of the batch's statistics and updates nothing.
Both modes apply ``y = x * scale[c] + shift[c]`` with ``scale = weight * invstd`` and
``shift = bias - mean * scale`` (torch's CPU kernel: ``alpha``/``beta``), reusing
:mod:`minirc.ops.frozen_batch_norm`'s per-channel affine kernels.

Backward, with x_hat = (x - mean) * invstd and g = dL/dy (derivation in docs/autograd_and_layers.md)::

    dbias[c]   = sum(g[:, c])
    dweight[c] = sum(g[:, c] * x_hat[:, c])
    dx (train) = weight[c] * invstd[c] * (g - dbias[c] / M - x_hat * dweight[c] / M)
    dx (eval)  = weight[c] * invstd[c] * g              # the statistics are constants

Per-channel sums accumulate in float64 (torch's CPU kernels accumulate float in double) and the
few per-channel numbers (C of them) are finished on the host in float64 for every backend: the
running-stat update, invstd and the coefficients of the elementwise passes. Only the passes over
the N*C*H*W elements differ by backend:

* ``"numpy"`` broadcasting; ``"cpu"`` ``prange`` over channels for the sums (one iteration owns a
  channel's sums: race-free, deterministic) and over the N*C planes for the elementwise pass;
* ``"cuda"`` one thread per channel for the sums (a plain loop: fine for our sizes, deterministic),
  then one thread per element.

Errors mirror torch: training needs more than one value per channel (M > 1); eval mode with N = 0
returns an empty output. (torch returns an empty output for N = 0 in training too; minirc refuses,
batch statistics of nothing are undefined.)
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, copy_into, is_device_array, like_input, to_device, to_host, zeros_like
from minirc.ops import frozen_batch_norm as _affine

# ---- NumPy reference ------------------------------------------------------------------------------


def channel_stats_numpy(x):
    """(mean, m2), each (C,) float64: the channel means and sums of squared deviations (two passes)."""
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    m2 = ((x64 - mean[None, :, None, None]) ** 2).sum(axis=(0, 2, 3))
    return mean, m2


def grad_sums_numpy(g, x, mean):
    """(sum_g, dotp), each (C,) float64: sum(g) and sum(g * (x - mean)) per channel."""
    g64 = g.astype(np.float64)
    centred = x.astype(np.float64) - mean[None, :, None, None]
    return g64.sum(axis=(0, 2, 3)), (g64 * centred).sum(axis=(0, 2, 3))


def grad_input_numpy(g, x, mean, mean_g, k, scale):
    """dx = ((g - mean_g[c]) - (x - mean[c]) * k[c]) * scale[c]; coefficients (C,) in x's dtype."""
    def c(a):
        return a[None, :, None, None]

    return ((g - c(mean_g)) - (x - c(mean)) * c(k)) * c(scale)


def _channel_mean_m2(x, c):
    """(mean, m2) of channel c of x (N, C, M), accumulated in float64: a first pass for the mean, a
    second for the squared deviations from it. Compiled for the CPU kernel and as a CUDA device function."""
    n, _, m = x.shape
    s = 0.0
    for i in range(n):
        for j in range(m):
            s += x[i, c, j]
    mu = s / (n * m)
    q = 0.0
    for i in range(n):
        for j in range(m):
            d = x[i, c, j] - mu
            q += d * d
    return mu, q


def _channel_grad_sums(g, x, mean, c):
    """(sum(g), sum(g * (x - mean))) over channel c of g, x (N, C, M), accumulated in float64."""
    n, _, m = x.shape
    mu = float(mean[c])
    s = 0.0
    d = 0.0
    for i in range(n):
        for j in range(m):
            gi = float(g[i, c, j])
            s += gi
            d += gi * (float(x[i, c, j]) - mu)
    return s, d


_channel_mean_m2_cpu = njit(cache=True)(_channel_mean_m2)
_channel_mean_m2_cuda = cuda.jit(device=True)(_channel_mean_m2)
_channel_grad_sums_cpu = njit(cache=True)(_channel_grad_sums)
_channel_grad_sums_cuda = cuda.jit(device=True)(_channel_grad_sums)


# ---- Numba CPU: prange over channels (sums) and over N*C planes (elementwise) -----------------------
@njit(cache=True, parallel=True)
def _channel_stats_cpu_kernel(x, mean, m2):
    for c in prange(x.shape[1]):
        mean[c], m2[c] = _channel_mean_m2_cpu(x, c)


def _planes(a):
    n, c, h, w = a.shape
    return np.ascontiguousarray(a).reshape(n, c, h * w)


def channel_stats_cpu(x):
    channels = x.shape[1]
    mean, m2 = np.zeros(channels), np.zeros(channels)
    _channel_stats_cpu_kernel(_planes(x), mean, m2)
    return mean, m2


@njit(cache=True, parallel=True)
def _grad_sums_cpu_kernel(g, x, mean, sum_g, dotp):
    for c in prange(x.shape[1]):
        sum_g[c], dotp[c] = _channel_grad_sums_cpu(g, x, mean, c)


def grad_sums_cpu(g, x, mean):
    channels = x.shape[1]
    sum_g, dotp = np.zeros(channels), np.zeros(channels)
    _grad_sums_cpu_kernel(_planes(g), _planes(x), mean, sum_g, dotp)
    return sum_g, dotp


@njit(cache=True, parallel=True)
def _grad_input_cpu_kernel(g, x, mean, mean_g, k, scale, out):
    planes, m = x.shape
    channels = mean.size
    for p in prange(planes):
        c = p % channels
        for i in range(m):
            out[p, i] = ((g[p, i] - mean_g[c]) - (x[p, i] - mean[c]) * k[c]) * scale[c]


def grad_input_cpu(g, x, mean, mean_g, k, scale):
    n, c, h, w = x.shape
    out = np.empty(x.shape, dtype=x.dtype)
    _grad_input_cpu_kernel(np.ascontiguousarray(g).reshape(n * c, h * w), np.ascontiguousarray(x).reshape(n * c, h * w),
                           mean, mean_g, k, scale, out.reshape(n * c, h * w))
    return out


# ---- Numba CUDA: one thread per channel (sums), one thread per element (elementwise) ----------------
@cuda.jit
def _channel_stats_cuda_kernel(x, mean, m2):
    c = cuda.grid(1)
    if c < x.shape[1]:
        mean[c], m2[c] = _channel_mean_m2_cuda(x, c)


def _device_planes(a):
    n, c, h, w = (int(s) for s in a.shape)
    return to_device(a).reshape(n, c, h * w)


def channel_stats_cuda(x):
    channels = int(x.shape[1])
    mean, m2 = cuda.to_device(np.zeros(channels)), cuda.to_device(np.zeros(channels))
    if channels > 0:
        _channel_stats_cuda_kernel[blocks_for(channels), 256](_device_planes(x), mean, m2)
    return mean.copy_to_host(), m2.copy_to_host()  # C numbers: finished on the host


@cuda.jit
def _grad_sums_cuda_kernel(g, x, mean, sum_g, dotp):
    c = cuda.grid(1)
    if c < x.shape[1]:
        sum_g[c], dotp[c] = _channel_grad_sums_cuda(g, x, mean, c)


def grad_sums_cuda(g, x, mean):
    channels = int(x.shape[1])
    sum_g, dotp = cuda.to_device(np.zeros(channels)), cuda.to_device(np.zeros(channels))
    if channels > 0:
        _grad_sums_cuda_kernel[blocks_for(channels), 256](_device_planes(g), _device_planes(x), to_device(mean),
                                                          sum_g, dotp)
    return sum_g.copy_to_host(), dotp.copy_to_host()


@cuda.jit
def _grad_input_cuda_kernel(g, x, mean, mean_g, k, scale, plane_size, out):
    i = cuda.grid(1)
    if i < x.size:
        c = (i // plane_size) % mean.size
        out[i] = ((g[i] - mean_g[c]) - (x[i] - mean[c]) * k[c]) * scale[c]


def grad_input_cuda(g, x, mean, mean_g, k, scale):
    shape = tuple(int(s) for s in x.shape)
    total = int(np.prod(shape))
    out = cuda.device_array(total, dtype=x.dtype)
    if total > 0:
        coeffs = [to_device(a) for a in (mean, mean_g, k, scale)]
        _grad_input_cuda_kernel[blocks_for(total), 256](to_device(g).reshape(total), to_device(x).reshape(total),
                                                        *coeffs, shape[2] * shape[3], out)
    return like_input(out.reshape(shape), g, x)


# ---- public entry points ----------------------------------------------------------------------------
_STATS = {"numpy": channel_stats_numpy, "cpu": channel_stats_cpu, "cuda": channel_stats_cuda}
_GRAD_SUMS = {"numpy": grad_sums_numpy, "cpu": grad_sums_cpu, "cuda": grad_sums_cuda}
_GRAD_INPUT = {"numpy": grad_input_numpy, "cpu": grad_input_cpu, "cuda": grad_input_cuda}
_AFFINE = {"numpy": _affine.channel_affine_numpy, "cpu": _affine.channel_affine_cpu,  # y = x * scale[c] + shift[c]
           "cuda": _affine.channel_affine_cuda}


def _backend_for(x, backend):
    name = get_backend(backend)
    if name != "cuda" and is_device_array(x):
        raise TypeError(f"input: CUDA device arrays need backend='cuda', got backend={name!r}")
    return name


def _vector(a, name, channels, default=None):
    """A (C,) float vector on the host (C numbers: copying them is cheap), or ``default`` for None."""
    if a is None:
        return default
    a = _checks.as_array(a, name, ndim=1, float_only=True)
    if a.shape[0] != channels:
        raise ValueError(f"{name}: expected shape ({channels},) (the input's channels), got {tuple(a.shape)}")
    return np.asarray(to_host(a))


def _inv_std(var, eps):
    """1 / sqrt(var + eps) in float64; 0 where var + eps == 0 (torch's ``InvStd``)."""
    total = var + eps
    with np.errstate(divide="ignore"):
        return np.where(total > 0, 1.0 / np.sqrt(np.maximum(total, 0.0)), 0.0)


def _update_running_stats(running_mean, running_var, mean, m2, count, momentum):
    # torch (batch_norm_cpu_update_stats_template): new = momentum * batch + (1 - momentum) * old, in double
    if running_mean is not None:
        old = np.asarray(to_host(running_mean), dtype=np.float64)
        copy_into(running_mean, momentum * mean + (1.0 - momentum) * old)
    if running_var is not None:
        old = np.asarray(to_host(running_var), dtype=np.float64)
        copy_into(running_var, momentum * (m2 / (count - 1)) + (1.0 - momentum) * old)  # unbiased


def batch_norm_forward(input, weight, bias, running_mean, running_var, training=False, momentum=0.1, eps=1e-5,
                       backend=None):
    """Batch norm of an (N, C, H, W) input; returns ``(output, save_mean, save_invstd)`` (torch's
    ``native_batch_norm``) and, in training mode, updates ``running_mean``/``running_var`` in place.

    input: (N, C, H, W) float32/float64 (a device array on "cuda"); weight, bias: (C,) or None (1 and 0);
    running_mean, running_var: (C,) float buffers, or None in training mode (then nothing is updated);
    momentum in [0, 1]; eps >= 0. save_mean and save_invstd: (C,) host arrays in input's dtype -- the
    batch's statistics in training, the running ones in eval -- what :func:`batch_norm_backward` needs.
    """
    x = _checks.as_array(input, "input", ndim=4, float_only=True)
    name = _backend_for(x, backend)
    n, channels, h, w = (int(s) for s in x.shape)
    count = n * h * w
    training = bool(training)
    momentum = _checks.number(momentum, "momentum", low=0.0, high=1.0)
    eps = _checks.number(eps, "eps", low=0.0)
    ones, zeros = np.ones(channels, x.dtype), np.zeros(channels, x.dtype)
    weight = _vector(weight, "weight", channels, ones)
    bias = _vector(bias, "bias", channels, zeros)
    if training and count <= 1:
        raise ValueError(f"input: expected more than 1 value per channel when training (N*H*W > 1), "
                         f"got input of shape {tuple(x.shape)}")
    for buffer_name, buf in (("running_mean", running_mean), ("running_var", running_var)):
        if buf is None and not training:
            raise ValueError(f"{buffer_name}: required in eval mode (training=False), got None")
        _vector(buf, buffer_name, channels)
    if training:
        mean, m2 = _STATS[name](x)
        invstd = _inv_std(m2 / count, eps)
        _update_running_stats(running_mean, running_var, mean, m2, count, momentum)
    else:
        mean = np.asarray(to_host(running_mean), dtype=np.float64)
        invstd = _inv_std(np.asarray(to_host(running_var), dtype=np.float64), eps)
    save_mean, save_invstd = mean.astype(x.dtype), invstd.astype(x.dtype)
    scale = (weight.astype(x.dtype) * save_invstd).astype(x.dtype)
    shift = (bias.astype(x.dtype) - save_mean * scale).astype(x.dtype)
    if n == 0:
        return zeros_like(x), save_mean, save_invstd  # N = 0: an empty output where x lives
    out = _AFFINE[name](x, scale, shift)
    return out, save_mean, save_invstd


def batch_norm_backward(grad_out, input, weight, save_mean, save_invstd, training=False, backend=None):
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of batch norm.

    grad_out, input: (N, C, H, W), same dtype (device arrays on "cuda"); weight: (C,) or None (1);
    save_mean, save_invstd: (C,) from :func:`batch_norm_forward` with the same ``training``.
    grad_input: (N, C, H, W) like input; grad_weight, grad_bias: (C,) host arrays in input's dtype.
    """
    x = _checks.as_array(input, "input", ndim=4, float_only=True)
    g = _checks.as_array(grad_out, "grad_out", ndim=4, float_only=True)
    if tuple(g.shape) != tuple(x.shape):
        raise ValueError(f"grad_out: expected the input's shape {tuple(x.shape)}, got {tuple(g.shape)}")
    _checks.same_dtype(x, g, "input", "grad_out")
    name = _backend_for(x, backend)
    n, channels, h, w = (int(s) for s in x.shape)
    count = n * h * w
    weight = _vector(weight, "weight", channels, np.ones(channels, x.dtype)).astype(np.float64)
    mean = _vector(save_mean, "save_mean", channels).astype(x.dtype)
    invstd = _vector(save_invstd, "save_invstd", channels).astype(np.float64)
    if n == 0:
        zeros = np.zeros(channels, x.dtype)
        return zeros_like(x), zeros, zeros.copy()
    sum_g, dotp = _GRAD_SUMS[name](g, x, mean)
    grad_weight, grad_bias = (dotp * invstd).astype(x.dtype), sum_g.astype(x.dtype)
    if training:  # the batch statistics depend on x: two more terms (docs/autograd_and_layers.md)
        mean_g, k = sum_g / count, dotp * invstd * invstd / count
    else:
        mean_g, k = np.zeros(channels), np.zeros(channels)
    coeffs = [np.ascontiguousarray(a, dtype=x.dtype) for a in (mean, mean_g, k, weight * invstd)]
    grad_input = _GRAD_INPUT[name](g, x, *coeffs)
    return grad_input, grad_weight, grad_bias
