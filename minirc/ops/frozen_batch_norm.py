"""Frozen batch normalisation: a per-channel affine map with constant statistics.

torchvision's ``FrozenBatchNorm2d`` (``torchvision/ops/misc.py``), in the same order of operations:

    scale = weight * rsqrt(running_var + eps)         # (C,)
    shift = bias - running_mean * scale               # (C,)
    y     = x * scale[c] + shift[c]                   # x: (N, C, H, W)

The four buffers are constants (never trained), so the backward is w.r.t. the input only:
``grad_in = grad_out * scale[c]``. ``scale`` and ``shift`` are computed once on the host in the
buffers' dtype (C numbers, cheap) and then cast to the input's dtype; the kernels only apply them.
``eps=1e-5`` is torchvision's default; the released COCO Mask R-CNN weights were trained with
``eps=0.0`` (``overwrite_eps``), see docs/semantics section 10.

Backends: ``"numpy"`` broadcasting; ``"cpu"`` ``prange`` over the N*C planes; ``"cuda"`` one thread
per element. Multiply then add, two roundings, as torch's separate mul and add kernels (the CUDA
compiler may fuse them into one FMA: agreement with the others is then to ~1 ulp).
"""
from __future__ import annotations

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


# ---- public entry points ----------------------------------------------------------------------------
_IMPLS = {"numpy": channel_affine_numpy, "cpu": channel_affine_cpu, "cuda": channel_affine_cuda}


def _buffers(channels, weight, bias, running_mean, running_var):
    named = {"weight": weight, "bias": bias, "running_mean": running_mean, "running_var": running_var}
    out = []
    for name, a in named.items():
        a = _checks.as_array(a, name, ndim=1, float_only=True, allow_device=False)
        if a.shape[0] != channels:
            raise ValueError(f"{name}: expected shape ({channels},) (the input's channels), got {a.shape}")
        out.append(a)
    return out


def _run(x, scale, shift, backend):
    name = get_backend(backend)
    if name != "cuda" and is_device_array(x):
        raise TypeError(f"input: CUDA device arrays need backend='cuda', got backend={name!r}")
    scale = np.ascontiguousarray(scale, dtype=x.dtype)
    shift = np.ascontiguousarray(shift, dtype=x.dtype)
    return _IMPLS[name](x, scale, shift)


def frozen_batch_norm2d(x, weight, bias, running_mean, running_var, eps=1e-5, backend=None):
    """``x * scale[c] + shift[c]`` with torchvision's FrozenBatchNorm2d formula.

    x: (N, C, H, W) float32/float64; weight, bias, running_mean, running_var: (C,) float host arrays;
    eps >= 0. Returns (N, C, H, W) in x's dtype.
    """
    x = _checks.as_array(x, "input", ndim=4, float_only=True)
    buffers = _buffers(x.shape[1], weight, bias, running_mean, running_var)
    eps = _checks.number(eps, "eps", low=0.0)
    scale, shift = scale_and_shift(*buffers, eps)
    return _run(x, scale, shift, backend)


def frozen_batch_norm2d_backward(grad_out, weight, running_var, eps=1e-5, backend=None):
    """Gradient w.r.t. the input: ``grad_out * scale[c]``. grad_out: (N, C, H, W); weight, running_var: (C,)."""
    grad_out = _checks.as_array(grad_out, "grad_out", ndim=4, float_only=True)
    channels = grad_out.shape[1]
    zeros = np.zeros(channels, dtype=np.asarray(running_var).dtype)
    w, _, _, rv = _buffers(channels, weight, zeros, zeros, running_var)
    eps = _checks.number(eps, "eps", low=0.0)
    scale, _ = scale_and_shift(w, zeros, zeros, rv, eps)
    return _run(grad_out, scale, np.zeros_like(scale), backend)
