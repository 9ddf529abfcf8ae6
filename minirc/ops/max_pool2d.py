"""2-D max pooling with torch's semantics, forward (with argmax indices) and backward.

Shapes: input (N, C, H, W) -> output (N, C, OH, OW) and indices (N, C, OH, OW) int64, where
``OH = floor((H + 2*ph - dh*(kh - 1) - 1) / sh) + 1`` (``ceil`` with ``ceil_mode=True``, minus one
when the last window would start in the bottom padding), the same for W.

Conventions (torch's ``max_pool2d_with_indices`` CPU kernel):

* padding acts as ``-inf``: windows are clipped to the image, padded cells are never read;
* ``indices`` are flat positions ``h * W + w`` inside the (H, W) plane of the input;
* ties keep the **first** maximum in the row-major scan of the window (a later value must be
  strictly greater); a NaN always wins (``v > best or isnan(v)``), so a NaN in a window propagates;
* a window whose values are all ``-inf`` points at its first in-image cell.

The backward sends ``grad_out[n, c, oh, ow]`` to ``grad_in[n, c, indices[n, c, oh, ow]]``. Overlapping
windows (3x3 stride 2 in the ResNet stem) can pick the same input cell, so contributions add up;
every backend adds them in the same order (row-major over the outputs) without atomics:

``"numpy"``: ``np.add.at`` per plane; ``"cpu"``: ``prange`` over the N*C planes, a serial scatter in
each plane; ``"cuda"``: one thread per *input* element gathers the outputs whose window covers it and
whose argmax is it. The three give bit-identical gradients.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, device_zeros, is_device_array, like_input, to_device, to_host


def output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """torch's ``pooling_output_shape`` for one axis."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (span + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window would start inside the bottom/right padding
    return out


def _window_argmax(plane, oh, ow, kh, kw, sh, sw, ph, pw, dh, dw):
    """(max, flat index) of one window of a (H, W) plane, in plane's dtype.

    Compiled twice below, for the CPU kernel (``njit``) and as a CUDA device function: it reads an
    array, and Numba's CUDA simulator cannot pass its arrays into ``njit`` code.
    """
    height, width = plane.shape
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    best = plane[0, 0]  # a value of the right type; replaced by the first in-image cell
    best_index = -1
    # only the offsets whose cell lies in the image (ceil((0 - h0) / dh) <= i < ceil((height - h0) / dh)):
    # the others were skipped anyway, and a huge kernel_size must not mean a huge loop
    for i in range(max(0, -(h0 // dh)), min(kh, -((h0 - height) // dh))):
        h = h0 + i * dh
        for j in range(max(0, -(w0 // dw)), min(kw, -((w0 - width) // dw))):
            w = w0 + j * dw
            v = plane[h, w]
            if best_index < 0 or v > best or v != v:  # first cell, strictly greater, or NaN
                best = v
                best_index = h * width + w
    return best, best_index


_window_argmax_cpu = njit(cache=True)(_window_argmax)
_window_argmax_cuda = cuda.jit(device=True)(_window_argmax)


def _index_in_window(a, oh, ow, height, width, kh, kw, sh, sw, ph, pw, dh, dw):
    """Whether flat index ``a`` is an in-image cell of window (oh, ow): the only values the forward
    returns, and the only ones the backward accepts (out-of-range ones would write out of bounds,
    and cuda's gather would ignore a cell outside the window that numpy and cpu would scatter to)."""
    if a < 0 or a >= height * width:
        return False
    h = a // width
    dy = h - (oh * sh - ph)
    dx = a - h * width - (ow * sw - pw)
    return dy >= 0 and dx >= 0 and dy % dh == 0 and dx % dw == 0 and dy // dh < kh and dx // dw < kw


_index_in_window_cpu = njit(cache=True)(_index_in_window)
_index_in_window_cuda = cuda.jit(device=True)(_index_in_window)


def _raise_bad_indices(bad, shape):
    if bad:
        raise ValueError(f"indices: {bad} entries are not a cell of their window (flat h * W + w in the "
                         f"(H, W) plane of input_shape {tuple(shape)}, as max_pool2d returns them)")


# ---- NumPy reference: loop over the window offsets, vectorised over planes and outputs -----------
def _offsets_inside(kernel, stride, pad, dil, size, out_n):
    """Window offsets i whose cell o * stride - pad + i * dil is inside [0, size) for some output o
    (the others read nothing; skipping them keeps a huge kernel_size from meaning a huge loop)."""
    lo = max(0, -((-(pad - (out_n - 1) * stride)) // dil))
    hi = min(kernel, (size - 1 + pad) // dil + 1)
    return range(lo, hi)


def max_pool2d_numpy(x, kernel, stride, padding, dilation, ceil_mode):
    n, c, height, width = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    oh_n = output_size(height, kh, sh, ph, dh, ceil_mode)
    ow_n = output_size(width, kw, sw, pw, dw, ceil_mode)
    out = np.full((n, c, oh_n, ow_n), -np.inf, dtype=x.dtype)
    idx = np.full((n, c, oh_n, ow_n), -1, dtype=np.int64)
    oh = np.arange(oh_n)[:, None]
    ow = np.arange(ow_n)[None, :]
    for i in _offsets_inside(kh, sh, ph, dh, height, oh_n):  # the row-major scan: earlier offsets win ties
        for j in _offsets_inside(kw, sw, pw, dw, width, ow_n):
            h = oh * sh - ph + i * dh
            w = ow * sw - pw + j * dw
            inside = (h >= 0) & (h < height) & (w >= 0) & (w < width)  # (OH, OW)
            v = x[:, :, np.clip(h, 0, height - 1), np.clip(w, 0, width - 1)]
            take = inside & ((idx < 0) | (v > out) | np.isnan(v))
            out = np.where(take, v, out)
            idx = np.where(take, h * width + w, idx)
    return out, idx


def _bad_indices_numpy(indices, input_shape, kernel, stride, padding, dilation):
    """How many indices fail :func:`_index_in_window`, vectorised over the (N, C, OH, OW) array."""
    height, width = input_shape[2:]
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, padding, dilation
    if indices.size == 0:
        return 0
    if height * width == 0:
        return int(indices.size)
    oh = np.arange(indices.shape[2])[:, None]
    ow = np.arange(indices.shape[3])[None, :]
    h, w = np.divmod(indices, width)
    dy, dx = h - (oh * sh - ph), w - (ow * sw - pw)
    ok = ((indices >= 0) & (indices < height * width) & (dy >= 0) & (dx >= 0) & (dy % dh == 0)
          & (dx % dw == 0) & (dy // dh < kh) & (dx // dw < kw))
    return int(ok.size - np.count_nonzero(ok))


def max_pool2d_backward_numpy(grad_out, indices, input_shape, kernel, stride, padding, dilation):
    _raise_bad_indices(_bad_indices_numpy(indices, input_shape, kernel, stride, padding, dilation), input_shape)
    n, c, height, width = input_shape
    m = grad_out.shape[2] * grad_out.shape[3]
    planes = grad_out.reshape(n * c, m)
    flat_idx = indices.reshape(n * c, m)
    grad_in = np.zeros((n * c, height * width), dtype=grad_out.dtype)
    for p in range(n * c):
        np.add.at(grad_in[p], flat_idx[p], planes[p])  # repeats add, in row-major output order
    return grad_in.reshape(input_shape)


# ---- Numba CPU: prange over the N*C planes ------------------------------------------------------
@njit(cache=True, parallel=True)
def _max_pool2d_cpu_kernel(x, out, idx, kh, kw, sh, sw, ph, pw, dh, dw):
    planes, oh_n, ow_n = out.shape
    for p in prange(planes):
        for oh in range(oh_n):
            for ow in range(ow_n):
                v, k = _window_argmax_cpu(x[p], oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
                out[p, oh, ow] = v
                idx[p, oh, ow] = k


@njit(cache=True, parallel=True)
def _max_pool2d_backward_cpu_kernel(grad_out, idx, grad_in, bad, ow_n, height, width,
                                    kh, kw, sh, sw, ph, pw, dh, dw):
    """The scatter; an index that is not a cell of its window is counted in bad[p], not written."""
    planes, m = grad_out.shape
    for p in prange(planes):  # one plane per thread: the scatter inside it is serial, race-free
        for o in range(m):
            a = idx[p, o]
            if _index_in_window_cpu(a, o // ow_n, o % ow_n, height, width, kh, kw, sh, sw, ph, pw, dh, dw):
                grad_in[p, a] += grad_out[p, o]
            else:
                bad[p] += 1


def max_pool2d_cpu(x, kernel, stride, padding, dilation, ceil_mode):
    n, c, height, width = x.shape
    oh_n = output_size(height, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow_n = output_size(width, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    out = np.empty((n * c, oh_n, ow_n), dtype=x.dtype)
    idx = np.empty((n * c, oh_n, ow_n), dtype=np.int64)
    _max_pool2d_cpu_kernel(np.ascontiguousarray(x).reshape(n * c, height, width), out, idx,
                           *kernel, *stride, *padding, *dilation)
    return out.reshape(n, c, oh_n, ow_n), idx.reshape(n, c, oh_n, ow_n)


def max_pool2d_backward_cpu(grad_out, indices, input_shape, kernel, stride, padding, dilation):
    n, c, height, width = input_shape
    m = grad_out.shape[2] * grad_out.shape[3]
    grad_in = np.zeros((n * c, height * width), dtype=grad_out.dtype)
    bad = np.zeros(n * c, dtype=np.int64)
    _max_pool2d_backward_cpu_kernel(np.ascontiguousarray(grad_out).reshape(n * c, m),
                                    np.ascontiguousarray(indices).reshape(n * c, m), grad_in, bad,
                                    max(grad_out.shape[3], 1), height, width,
                                    *kernel, *stride, *padding, *dilation)
    _raise_bad_indices(int(bad.sum()), input_shape)
    return grad_in.reshape(input_shape)


# ---- Numba CUDA: one thread per output element (forward), per input element (backward) -----------
@cuda.jit
def _max_pool2d_cuda_kernel(x, out, idx, kh, kw, sh, sw, ph, pw, dh, dw):
    t = cuda.grid(1)
    planes, oh_n, ow_n = out.shape
    if t < planes * oh_n * ow_n:
        p = t // (oh_n * ow_n)
        oh = (t // ow_n) % oh_n
        ow = t % ow_n
        v, k = _window_argmax_cuda(x[p], oh, ow, kh, kw, sh, sw, ph, pw, dh, dw)
        out[p, oh, ow] = v
        idx[p, oh, ow] = k


@njit(cache=True)
def _covering_range(i, size_out, kernel, stride, pad, dil):
    """Outputs o with o*stride - pad <= i <= o*stride - pad + dil*(kernel-1): a superset of the windows
    holding input cell i (dilation may skip it; the argmax test below rules those out)."""
    lo = i + pad - dil * (kernel - 1)
    lo = 0 if lo <= 0 else (lo + stride - 1) // stride
    hi = (i + pad) // stride
    return lo, min(hi, size_out - 1)


@cuda.jit
def _max_pool2d_backward_cuda_kernel(grad_out, idx, grad_in, kh, kw, sh, sw, ph, pw, dh, dw):
    t = cuda.grid(1)
    planes, height, width = grad_in.shape
    oh_n, ow_n = grad_out.shape[1], grad_out.shape[2]
    if t < planes * height * width:
        p = t // (height * width)
        h = (t // width) % height
        w = t % width
        me = h * width + w
        oh0, oh1 = _covering_range(h, oh_n, kh, sh, ph, dh)
        ow0, ow1 = _covering_range(w, ow_n, kw, sw, pw, dw)
        # grad_in starts at zero and is added to in place (this thread owns the cell), so the sum
        # is rounded in the grad's dtype, in row-major output order: the CPU scatter's order
        for oh in range(oh0, oh1 + 1):
            for ow in range(ow0, ow1 + 1):
                if idx[p, oh, ow] == me:
                    grad_in[p, h, w] += grad_out[p, oh, ow]


def max_pool2d_cuda(x, kernel, stride, padding, dilation, ceil_mode):
    n, c, height, width = x.shape
    oh_n = output_size(height, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow_n = output_size(width, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    out = cuda.device_array((n * c, oh_n, ow_n), dtype=x.dtype)
    idx = cuda.device_array((n * c, oh_n, ow_n), dtype=np.int64)
    total = n * c * oh_n * ow_n
    if total > 0:
        dx = to_device(x).reshape(n * c, height, width)
        _max_pool2d_cuda_kernel[blocks_for(total), 256](dx, out, idx, *kernel, *stride, *padding, *dilation)
    shape = (n, c, oh_n, ow_n)
    return like_input(out.reshape(shape), x), like_input(idx.reshape(shape), x)


@cuda.jit
def _bad_indices_cuda_kernel(idx, height, width, kh, kw, sh, sw, ph, pw, dh, dw, bad):
    t = cuda.grid(1)
    planes, oh_n, ow_n = idx.shape
    if t < planes * oh_n * ow_n:
        p = t // (oh_n * ow_n)
        oh = (t // ow_n) % oh_n
        ow = t % ow_n
        if not _index_in_window_cuda(idx[p, oh, ow], oh, ow, height, width, kh, kw, sh, sw, ph, pw, dh, dw):
            cuda.atomic.add(bad, 0, 1)


def max_pool2d_backward_cuda(grad_out, indices, input_shape, kernel, stride, padding, dilation,
                             check_indices=True):
    n, c, height, width = input_shape
    grad_in = device_zeros((n * c, height, width), grad_out.dtype)
    total = n * c * height * width
    m = int(np.prod(grad_out.shape))
    k = to_device(indices).reshape(n * c, grad_out.shape[2], grad_out.shape[3]) if m > 0 else None
    if m > 0 and check_indices:  # the indices are checked on the device: one counter comes back
        bad = device_zeros(1, np.int64)
        _bad_indices_cuda_kernel[blocks_for(m), 256](k, height, width, *kernel, *stride, *padding,
                                                     *dilation, bad)
        _raise_bad_indices(int(bad.copy_to_host()[0]), input_shape)
    if total > 0 and m > 0:
        g = to_device(grad_out).reshape(n * c, grad_out.shape[2], grad_out.shape[3])
        _max_pool2d_backward_cuda_kernel[blocks_for(total), 256](g, k, grad_in, *kernel, *stride,
                                                                 *padding, *dilation)
    return like_input(grad_in.reshape(input_shape), grad_out, indices)


# ---- public entry points ------------------------------------------------------------------------
_IMPLS = {"numpy": max_pool2d_numpy, "cpu": max_pool2d_cpu, "cuda": max_pool2d_cuda}
_BACKWARD_IMPLS = {"numpy": max_pool2d_backward_numpy, "cpu": max_pool2d_backward_cpu,
                   "cuda": max_pool2d_backward_cuda}


def _pool_args(kernel_size, stride, padding, dilation):
    kernel = _checks.pair(kernel_size, "kernel_size", minimum=1)
    stride = kernel if stride is None or stride == [] or stride == () else _checks.pair(stride, "stride", 1)
    padding = _checks.pair(padding, "padding", minimum=0)
    dilation = _checks.pair(dilation, "dilation", minimum=1)
    for k, p in zip(kernel, padding):
        if p > k // 2:  # torch: "pad should be at most half of effective kernel size"
            raise ValueError(f"padding: expected at most half of kernel_size {kernel}, got {padding}")
    return kernel, stride, padding, dilation


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, backend=None):
    """Max over sliding windows; returns ``(out, indices)``.

    x: (N, C, H, W) float32/float64; kernel_size, stride (default: kernel_size), padding, dilation:
    an int or an (h, w) pair. out: (N, C, OH, OW) in x's dtype; indices: (N, C, OH, OW) int64 flat
    positions ``h * W + w`` in the input plane (torch's ``return_indices=True``).
    """
    x = _checks.as_array(x, "input", ndim=4, float_only=True)
    kernel, stride, padding, dilation = _pool_args(kernel_size, stride, padding, dilation)
    sizes = [output_size(s, k, st, p, d, bool(ceil_mode))
             for s, k, st, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    if min(sizes) < 1:
        raise ValueError(f"input: spatial size {tuple(x.shape[2:])} is too small for kernel_size {kernel}, "
                         f"padding {padding}, dilation {dilation} (output would be {tuple(sizes)})")
    _checks.elements(tuple(x.shape[:2]) + tuple(sizes), "padding", "the output (N, C, OH, OW)")
    name = get_backend(backend)
    if name != "cuda" and is_device_array(x):
        raise TypeError(f"input: CUDA device arrays need backend='cuda', got backend={name!r}")
    return _IMPLS[name](x, kernel, stride, padding, dilation, bool(ceil_mode))


def max_pool2d_backward(grad_out, indices, input_shape, kernel_size, stride=None, padding=0, dilation=1,
                        backend=None, check_indices=True):
    """Gradient w.r.t. the input: ``grad_in[n, c].flat[indices[n, c, i, j]] += grad_out[n, c, i, j]``.

    grad_out, indices: (N, C, OH, OW) as returned by :func:`max_pool2d`; input_shape: (N, C, H, W).
    The window arguments are those of the forward (the CUDA gather needs them). Every index must
    be an in-image cell of its own window (what the forward returns): ValueError otherwise, on
    every backend, before anything is written. ``check_indices=False`` is for indices that the
    forward itself returned (the autograd backward): it skips the cuda backend's check, whose
    verdict costs a device-to-host copy per call (cpu checks inside its scatter at no cost, and
    numpy, the reference, always checks).
    """
    grad_out = _checks.as_array(grad_out, "grad_out", ndim=4, float_only=True)
    indices = _checks.as_array(indices, "indices", ndim=4)
    if tuple(indices.shape) != tuple(grad_out.shape):
        raise ValueError(f"indices: expected the shape of grad_out {tuple(grad_out.shape)}, "
                         f"got {tuple(indices.shape)}")
    if indices.dtype != np.int64:
        raise TypeError(f"indices: expected int64, got {indices.dtype}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or tuple(input_shape[:2]) != tuple(grad_out.shape[:2]) or min(input_shape) < 0:
        raise ValueError(f"input_shape: expected (N, C, H, W) >= 0 with N, C = {tuple(grad_out.shape[:2])}, "
                         f"got {input_shape}")
    _checks.elements(input_shape, "input_shape", "the gradient (N, C, H, W)")
    kernel, stride, padding, dilation = _pool_args(kernel_size, stride, padding, dilation)
    name = get_backend(backend)
    if name != "cuda" and (is_device_array(grad_out) or is_device_array(indices)):
        raise TypeError(f"grad_out: CUDA device arrays need backend='cuda', got backend={name!r}")
    if name == "cuda":
        return max_pool2d_backward_cuda(grad_out, indices, input_shape, kernel, stride, padding, dilation,
                                        check_indices)
    return _BACKWARD_IMPLS[name](to_host(grad_out), to_host(indices), input_shape, kernel, stride, padding,
                                 dilation)
