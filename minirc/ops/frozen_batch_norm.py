"""Frozen batch normalisation: a per-channel affine map with constant statistics.

torchvision's ``FrozenBatchNorm2d`` (``torchvision/ops/misc.py``), in the same order of operations:

    scale = weight * rsqrt(running_var + eps)         # (C,)
    shift = bias - running_mean * scale               # (C,)
    y     = x * scale[c] + shift[c]                   # x: (N, C, H, W)

The four buffers are constants (never trained), so the backward is w.r.t. the input only:
``grad_in = grad_out * scale[c]``. ``scale`` and ``shift`` are computed once per call in the
buffers' dtype (C numbers, cheap) and then cast to the input's dtype; the kernels only apply them.
They are computed where the buffers live: on the host for NumPy buffers, by a one-thread-per-channel
kernel for device buffers (a model moved with ``Module.to_device``), so nothing is copied per layer.
``eps=1e-5`` is torchvision's default; the released COCO Mask R-CNN weights were trained with
``eps=0.0`` (``overwrite_eps``), see docs/semantics.md section 14.

Backends: ``"numpy"`` broadcasting; ``"cpu"`` ``prange`` over the N*C planes; ``"cuda"`` one thread
per element. Multiply then add, two roundings, as torch's separate mul and add kernels (the CUDA
compiler may fuse them into one FMA: agreement with the others is then to ~1 ulp).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, like_input, to_device


def scale_and_shift(weight, bias, running_mean, running_var, eps):
    """(scale, shift), each (C,), with torchvision's formula, in the buffers' dtype."""
    one = np.ones((), dtype=running_var.dtype)
    scale = weight * (one / np.sqrt(running_var + running_var.dtype.type(eps)))  # rsqrt as 1/sqrt
    return scale, bias - running_mean * scale


# ---- NumPy reference ------------------------------------------------------------------------------
def channel_affine_numpy(x, scale, shift):
    return x * scale[None, :, None, None] + shift[None, :, None, None]


# ---- Numba CPU: prange over the N*C planes ----------------------------------------------------------
@njit(cache=True, parallel=True)
def _channel_affine_cpu_kernel(x, scale, shift, out):
    planes, m = x.shape
    channels = scale.size
    for p in prange(planes):
        c = p % channels
        s = scale[c]
        b = shift[c]
        for i in range(m):
            out[p, i] = x[p, i] * s + b


def channel_affine_cpu(x, scale, shift):
    n, c, h, w = x.shape
    out = np.empty(x.shape, dtype=x.dtype)
    _channel_affine_cpu_kernel(np.ascontiguousarray(x).reshape(n * c, h * w), scale, shift, out.reshape(n * c, h * w))
    return out


# ---- Numba CUDA: one thread per element ----------------------------------------------------------
@cuda.jit
def _channel_affine_cuda_kernel(x, scale, shift, plane_size, out):
    i = cuda.grid(1)
    if i < x.size:
        c = (i // plane_size) % scale.size
        out[i] = x[i] * scale[c] + shift[c]


def channel_affine_cuda(x, scale, shift):
    shape = tuple(x.shape)
    total = int(np.prod(shape))
    out = cuda.device_array(total, dtype=x.dtype)
    if total > 0:
        _channel_affine_cuda_kernel[blocks_for(total), 256](to_device(x).reshape(total), to_device(scale),
                                                            to_device(shift), shape[2] * shape[3], out)
    return like_input(out.reshape(shape), x)


@cuda.jit
def _scale_shift_cuda_kernel(weight, bias, running_mean, running_var, eps, scale, shift):
    # one thread per channel, torchvision's formula in the buffers' dtype T; the product m * s is
    # formed exactly in float64 and rounded once, so no FMA contraction changes shift's rounding
    c = cuda.grid(1)
    if c < scale.size:
        T = type(running_var[c])
        s = weight[c] * (T(1.0) / math.sqrt(running_var[c] + eps))
        scale[c] = s
        shift[c] = bias[c] - T(float(running_mean[c]) * float(s))


def scale_and_shift_cuda(weight, bias, running_mean, running_var, eps, dtype):
    """Device (scale, shift) in ``dtype`` from device buffers (the GPU twin of :func:`scale_and_shift`)."""
    channels = weight.shape[0]
    scale = cuda.device_array(channels, dtype=dtype)
    shift = cuda.device_array(channels, dtype=dtype)
    if channels:
        _scale_shift_cuda_kernel[blocks_for(channels), 256](weight, bias, running_mean, running_var,
                                                            running_var.dtype.type(eps), scale, shift)
    return scale, shift


# ---- public entry points ----------------------------------------------------------------------------
_IMPLS = {"numpy": channel_affine_numpy, "cpu": channel_affine_cpu, "cuda": channel_affine_cuda}


def _buffers(channels, weight, bias, running_mean, running_var):
    named = {"weight": weight, "bias": bias, "running_mean": running_mean, "running_var": running_var}
    out = []
    for name, a in named.items():
        a = _checks.as_array(a, name, ndim=1, float_only=True)
        if a.shape[0] != channels:
            raise ValueError(f"{name}: expected shape ({channels},) (the input's channels), got {tuple(a.shape)}")
        out.append(a)
    on_device = [is_device_array(a) for a in out]
    if any(on_device) and not all(on_device):
        raise TypeError("weight, bias, running_mean, running_var: expected all four on the host or all four "
                        f"on the device, got device arrays for {[n for n, d in zip(named, on_device) if d]}")
    return out


def _affine(x, buffers, eps, backend, with_shift=True):
    """Apply scale (and shift) computed from ``buffers`` where they live, on ``backend``."""
    name = get_backend(backend)
    if name != "cuda" and (is_device_array(x) or is_device_array(buffers[0])):
        raise TypeError(f"input, buffers: CUDA device arrays need backend='cuda', got backend={name!r}")
    if is_device_array(buffers[0]):
        scale, shift = scale_and_shift_cuda(*buffers, eps, x.dtype)
        if not with_shift:
            shift = _zeros(scale)
    else:
        scale, shift = scale_and_shift(*buffers, eps)
        scale = np.ascontiguousarray(scale, dtype=x.dtype)
        shift = np.ascontiguousarray(shift if with_shift else np.zeros_like(scale), dtype=x.dtype)
    return _IMPLS[name](x, scale, shift)


def _zeros(like):
    from minirc.cuda_array import zeros

    return zeros(tuple(like.shape), like.dtype)


def frozen_batch_norm2d(x, weight, bias, running_mean, running_var, eps=1e-5, backend=None):
    """``x * scale[c] + shift[c]`` with torchvision's FrozenBatchNorm2d formula.

    x: (N, C, H, W) float32/float64; weight, bias, running_mean, running_var: (C,) float arrays, all
    on the host or all on the device; eps >= 0. Returns (N, C, H, W) in x's dtype.
    """
    x = _checks.as_array(x, "input", ndim=4, float_only=True)
    buffers = _buffers(x.shape[1], weight, bias, running_mean, running_var)
    return _affine(x, buffers, _checks.number(eps, "eps", low=0.0), backend)


def frozen_batch_norm2d_backward(grad_out, weight, running_var, eps=1e-5, backend=None):
    """Gradient w.r.t. the input: ``grad_out * scale[c]``. grad_out: (N, C, H, W); weight, running_var: (C,)."""
    grad_out = _checks.as_array(grad_out, "grad_out", ndim=4, float_only=True)
    # bias and running_mean do not enter the scale: stand-ins of the right kind and shape
    w, _, _, rv = _buffers(grad_out.shape[1], weight, weight, weight, running_var)
    return _affine(grad_out, [w, w, w, rv], _checks.number(eps, "eps", low=0.0), backend, with_shift=False)
