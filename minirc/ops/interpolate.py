"""Nearest-neighbour resizing of (N, C, H, W) maps with torch's legacy ``mode="nearest"`` rule.

Index rule (ATen ``UpSample.h``: ``nearest_idx`` / ``nearest_neighbor_compute_source_index``), per axis:

    src = min(floor(float32(dst) * ratio), in - 1)      # float32 arithmetic, like ATen's floorf

* ``ratio = float32(in) / float32(out)`` when the output size is given (``size=``), or when
  ``recompute_scale_factor=True``;
* ``ratio = float32(1 / scale_factor)`` when ``scale_factor=`` is given and not recomputed -- this
  can pick other pixels than ``in/out`` (11 -> 7 with ``scale_factor=0.7``: ``[0,1,2,4,5,7,8]``
  versus ``[0,1,3,4,6,7,9]`` recomputed);
* ``out == in`` copies and ``out == 2 * in`` takes ``dst // 2``, exactly, whatever the ratio
  (ATen special-cases both to avoid float rounding).

With ``scale_factor`` the output size is ``floor(in * scale_factor)`` in double precision
(``torch.nn.functional.interpolate``). Example: 3 -> 5 reads source indices ``[0, 0, 1, 1, 2]``.
This is *not* the half-pixel "nearest-exact" rule (``round((dst + 0.5) * ratio - 0.5)``).

The index maps are computed once on the host (:func:`nearest_source_indices`) and shared by all
backends, so every backend reads the same pixels. Forward: ``out[n,c,i,j] = x[n,c,src_h[i],src_w[j]]``.
Backward: ``grad_in[n,c,h,w] = sum of grad_out[n,c,i,j] over src_h[i] == h, src_w[j] == w``. Because
``src`` never decreases, the outputs reading one input row form a contiguous range, so the backward
is a deterministic gather (one thread per input element on CUDA, prange over planes on CPU), adding
in row-major output order, the order of NumPy's ``np.add.at``: the three backends agree bitwise.
"""
from __future__ import annotations

import math
import numbers

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, device_zeros, is_device_array, like_input, to_device


def nearest_source_indices(in_size: int, out_size: int, scale_factor=None) -> np.ndarray:
    """(out_size,) int64 source index of every output index along one axis (torch's legacy rule).

    scale_factor: the user's factor when torch would pass it to the kernel, else None (use in/out).
    """
    dst = np.arange(out_size, dtype=np.int64)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst >> 1
    if scale_factor is not None and scale_factor > 0:
        ratio = np.float32(1.0 / scale_factor)  # 1/scale in double, then to float (compute_scales_value)
    else:
        ratio = np.float32(in_size) / np.float32(out_size)
    src = np.floor(dst.astype(np.float32) * ratio).astype(np.int64)  # float32 product, as floorf
    return np.minimum(src, in_size - 1)


def source_ranges(src: np.ndarray, in_size: int) -> tuple:
    """For each input index h, the half-open range [start[h], stop[h]) of outputs reading it."""
    start = np.searchsorted(src, np.arange(in_size), side="left").astype(np.int64)
    stop = np.searchsorted(src, np.arange(in_size), side="right").astype(np.int64)
    return start, stop


# ---- NumPy reference -----------------------------------------------------------------------------
def interpolate_nearest_numpy(x, src_h, src_w):
    return x[:, :, src_h[:, None], src_w[None, :]]


def interpolate_nearest_backward_numpy(grad_out, src_h, src_w, input_shape):
    grad_in = np.zeros(input_shape, dtype=grad_out.dtype)
    np.add.at(grad_in, (slice(None), slice(None), src_h[:, None], src_w[None, :]), grad_out)
    return grad_in


# ---- Numba CPU: prange over the N*C planes ---------------------------------------------------------
@njit(cache=True, parallel=True)
def _nearest_cpu_kernel(x, src_h, src_w, out):
    for p in prange(out.shape[0]):
        for i in range(out.shape[1]):
            src_row = x[p, src_h[i]]  # row views: the inner loop is a plain 1-D gather (3x faster)
            out_row = out[p, i]
            for j in range(out.shape[2]):
                out_row[j] = src_row[src_w[j]]


def _gather_cell(grad_out, p, h, w, start_h, stop_h, start_w, stop_w, acc):
    """acc + every grad_out[p, i, j] that reads input cell (h, w), in row-major output order.

    Compiled for the CPU kernel and as a CUDA device function (the simulator cannot pass its
    arrays into ``njit`` code).
    """
    for i in range(start_h[h], stop_h[h]):
        for j in range(start_w[w], stop_w[w]):
            acc += grad_out[p, i, j]
    return acc


_gather_cell_cpu = njit(cache=True)(_gather_cell)
_gather_cell_cuda = cuda.jit(device=True)(_gather_cell)


@njit(cache=True, parallel=True)
def _nearest_backward_cpu_kernel(grad_out, start_h, stop_h, start_w, stop_w, grad_in):
    for p in prange(grad_in.shape[0]):
        for h in range(grad_in.shape[1]):
            for w in range(grad_in.shape[2]):
                grad_in[p, h, w] = _gather_cell_cpu(grad_out, p, h, w, start_h, stop_h, start_w, stop_w,
                                                grad_in[p, h, w])


def _planes(a):
    n, c = a.shape[:2]
    return np.ascontiguousarray(a).reshape(n * c, a.shape[2], a.shape[3])


def interpolate_nearest_cpu(x, src_h, src_w):
    n, c = x.shape[:2]
    out = np.empty((n * c, src_h.size, src_w.size), dtype=x.dtype)
    _nearest_cpu_kernel(_planes(x), src_h, src_w, out)
    return out.reshape(n, c, src_h.size, src_w.size)


def interpolate_nearest_backward_cpu(grad_out, src_h, src_w, input_shape):
    n, c, height, width = input_shape
    grad_in = np.zeros((n * c, height, width), dtype=grad_out.dtype)  # the sums start at 0, like add.at
    _nearest_backward_cpu_kernel(_planes(grad_out), *source_ranges(src_h, height),
                                 *source_ranges(src_w, width), grad_in)
    return grad_in.reshape(input_shape)


# ---- Numba CUDA: one thread per output element (forward), per input element (backward) -------------
@cuda.jit
def _nearest_cuda_kernel(x, src_h, src_w, out):
    t = cuda.grid(1)
    planes, oh_n, ow_n = out.shape
    if t < planes * oh_n * ow_n:
        p = t // (oh_n * ow_n)
        i = (t // ow_n) % oh_n
        j = t % ow_n
        out[p, i, j] = x[p, src_h[i], src_w[j]]


@cuda.jit
def _nearest_backward_cuda_kernel(grad_out, start_h, stop_h, start_w, stop_w, grad_in):
    t = cuda.grid(1)
    planes, height, width = grad_in.shape
    if t < planes * height * width:
        p = t // (height * width)
        h = (t // width) % height
        w = t % width
        grad_in[p, h, w] = _gather_cell_cuda(grad_out, p, h, w, start_h, stop_h, start_w, stop_w,
                                             grad_in[p, h, w])


def constant(index):
    """The (small, int64) index table on the device, uploaded once per distinct table and then reused."""
    from minirc.cuda_array import constant as cached

    return cached(index)


def interpolate_nearest_cuda(x, src_h, src_w):
    n, c, height, width = x.shape
    shape = (n * c, src_h.size, src_w.size)
    out = cuda.device_array(shape, dtype=x.dtype)
    total = int(np.prod(shape))
    if total > 0:
        _nearest_cuda_kernel[blocks_for(total), 256](to_device(x).reshape(n * c, height, width),
                                                     constant(src_h), constant(src_w), out)
    return like_input(out.reshape(n, c, src_h.size, src_w.size), x)


def interpolate_nearest_backward_cuda(grad_out, src_h, src_w, input_shape):
    n, c, height, width = input_shape
    grad_in = device_zeros((n * c, height, width), grad_out.dtype)  # filled on the device
    total = n * c * height * width
    if total > 0 and int(np.prod(grad_out.shape)) > 0:
        g = to_device(grad_out).reshape(n * c, src_h.size, src_w.size)
        ranges = [constant(r) for r in source_ranges(src_h, height) + source_ranges(src_w, width)]
        _nearest_backward_cuda_kernel[blocks_for(total), 256](g, *ranges, grad_in)
    return like_input(grad_in.reshape(input_shape), grad_out)


# ---- public entry points ---------------------------------------------------------------------------
_IMPLS = {"numpy": interpolate_nearest_numpy, "cpu": interpolate_nearest_cpu, "cuda": interpolate_nearest_cuda}
_BACKWARD_IMPLS = {"numpy": interpolate_nearest_backward_numpy, "cpu": interpolate_nearest_backward_cpu,
                   "cuda": interpolate_nearest_backward_cuda}


def _two(v, name, kind):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name}: expected one {kind} or a pair (h, w), got {v!r}")
        return tuple(v)
    return (v, v)


def output_plan(in_hw, size=None, scale_factor=None, recompute_scale_factor=None):
    """((OH, OW), (scale_h or None, scale_w or None)): the output size and the factors the kernel uses,
    following ``torch.nn.functional.interpolate``'s argument rules."""
    if (size is None) == (scale_factor is None):
        raise ValueError(f"size, scale_factor: expected exactly one of them, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if size is not None:
        if recompute_scale_factor:
            raise ValueError("recompute_scale_factor: only meaningful with scale_factor, got it with size=")
        out = _two(size, "size", "int")
        if not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in out):
            raise ValueError(f"size: expected positive ints, got {size!r}")
        return tuple(int(s) for s in out), (None, None)
    scales = _two(scale_factor, "scale_factor", "number")
    if not all(isinstance(s, numbers.Real) and not isinstance(s, bool) and s > 0 and math.isfinite(s)
               for s in scales):
        raise ValueError(f"scale_factor: expected positive finite numbers, got {scale_factor!r}")
    out = tuple(int(math.floor(float(n) * float(s))) for n, s in zip(in_hw, scales))
    if min(out) < 1:
        raise ValueError(f"scale_factor: input size {tuple(in_hw)} times {scale_factor!r} gives an empty "
                         f"output {out}")
    if recompute_scale_factor:
        return out, (None, None)
    return out, tuple(float(s) for s in scales)


def _prepare(x_shape, size, scale_factor, recompute_scale_factor, name="input"):
    """The source index maps; ValueError for an empty spatial input (every output pixel would read
    a pixel that does not exist) or an output over ``_checks.MAX_ELEMENTS``."""
    if min(x_shape[2:]) < 1:
        raise ValueError(f"{name}: cannot resize from an empty spatial size (H, W) = {tuple(x_shape[2:])}; "
                         f"expected H, W >= 1")
    (oh, ow), (sh, sw) = output_plan(x_shape[2:], size, scale_factor, recompute_scale_factor)
    _checks.elements(tuple(x_shape[:2]) + (oh, ow), "size" if size is not None else "scale_factor",
                     "the output (N, C, OH, OW)")
    return nearest_source_indices(x_shape[2], oh, sh), nearest_source_indices(x_shape[3], ow, sw)


def interpolate_nearest(x, size=None, scale_factor=None, recompute_scale_factor=None, backend=None):
    """Resize (N, C, H, W) -> (N, C, OH, OW) by nearest neighbour (torch's legacy ``"nearest"``).

    size: int or (OH, OW); scale_factor: number or (sh, sw); exactly one of the two.
    H = 0 or W = 0 is a ValueError on every backend; N = 0 or C = 0 gives an empty result.
    """
    x = _checks.as_array(x, "input", ndim=4)
    src_h, src_w = _prepare(x.shape, size, scale_factor, recompute_scale_factor)
    name = get_backend(backend)
    if name != "cuda" and is_device_array(x):
        raise TypeError(f"input: CUDA device arrays need backend='cuda', got backend={name!r}")
    return _IMPLS[name](x, src_h, src_w)


def interpolate_nearest_backward(grad_out, input_shape, size=None, scale_factor=None,
                                 recompute_scale_factor=None, backend=None):
    """Gradient w.r.t. the input of :func:`interpolate_nearest` (same size/scale arguments).

    grad_out: (N, C, OH, OW) float; input_shape: (N, C, H, W). Returns (N, C, H, W).
    """
    grad_out = _checks.as_array(grad_out, "grad_out", ndim=4, float_only=True)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or min(input_shape) < 0:
        raise ValueError(f"input_shape: expected (N, C, H, W) >= 0, got {input_shape}")
    src_h, src_w = _prepare(input_shape, size, scale_factor, recompute_scale_factor, "input_shape")
    expected = input_shape[:2] + (src_h.size, src_w.size)
    if tuple(grad_out.shape) != expected:
        raise ValueError(f"grad_out: expected shape {expected}, got {tuple(grad_out.shape)}")
    name = get_backend(backend)
    if name != "cuda" and is_device_array(grad_out):
        raise TypeError(f"grad_out: CUDA device arrays need backend='cuda', got backend={name!r}")
    return _BACKWARD_IMPLS[name](grad_out, src_h, src_w, input_shape)
