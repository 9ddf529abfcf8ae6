"""RoIPool (Fast R-CNN, Girshick 2015, Sec. 2.1), forward and backward, bit-faithful to torchvision.

Shape shorthand: N images, C channels, H W feature size, K RoIs, PH PW pooled size.
Inputs:  input (N, C, H, W) float32/float64; boxes (K, 5) [batch_index, x1, y1, x2, y2] in image
         pixels (or a list of per-image (L, 4) arrays); spatial_scale = feature/image size.
Outputs: (K, C, PH, PW) maxima and their argmax (K, C, PH, PW) int32 (h * W + w inside the
         (image, channel) plane, -1 for an empty bin), which is all the backward needs.

Convention followed: torchvision's CPU kernel (``csrc/ops/cpu/roi_pool_kernel.cpp``). RoIPool
quantizes twice (the "misalignment" RoIAlign removes): the box corners are rounded to whole
cells with C's ``round`` (half away from zero: 2.5 -> 3, -2.5 -> -3; not NumPy's half-to-even),
the box is taken as inclusive (width = x2 - x1 + 1, at least 1), and bin p covers the integer
cells [floor(p * bin), ceil((p + 1) * bin)) clipped to the map, so neighbouring bins may share a
row. A bin empty after clipping outputs 0 with argmax -1; otherwise the max starts from -FLT_MAX
and only a strictly greater value replaces it (ties keep the first cell in row-major order).
The backward adds grad_output into grad_input at argmax, roi by roi.

Backends: numpy (per roi and bin, vectorised over channels); cpu (forward prange over rois on a
channels-last copy of the input, all channels' running maxima advancing together; backward
prange over (image, channel) gradient planes, rois in order: deterministic); cuda (forward one
thread per output element; backward one thread per plane).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, device_zeros, is_device_array, like_input, to_device, to_host
from minirc.ops._bilinear import for_cuda
from minirc.ops._rois import check_backward_args, check_pool_args, check_rois, zeros_like_input

FLT_MAX = float(np.finfo(np.float32).max)  # the kernel starts every max at -FLT_MAX, also for float64


# ---- per-bin integer geometry, shared by all backends ------------------------------------------
@njit(cache=True)
def round_half_away(v):
    """C's round(): the nearest integer, halves away from zero (v - trunc(v) is exact in floats)."""
    t = int(v)  # truncation toward zero, as a C cast
    frac = v - type(v)(t)
    if frac >= 0.5:
        return t + 1
    if frac <= -0.5:
        return t - 1
    return t


@njit(cache=True)
def pool_roi_geometry(x1, y1, x2, y2, spatial_scale, pooled_h, pooled_w):
    """(start_h, start_w, bin_h, bin_w): the roi's first cell and its float bin sizes, in T."""
    T = type(x1)
    start_w = round_half_away(x1 * spatial_scale)
    start_h = round_half_away(y1 * spatial_scale)
    end_w = round_half_away(x2 * spatial_scale)
    end_h = round_half_away(y2 * spatial_scale)
    roi_w = max(end_w - start_w + 1, 1)  # inclusive integer ends; malformed RoIs become 1 cell
    roi_h = max(end_h - start_h + 1, 1)
    return start_h, start_w, T(roi_h) / T(pooled_h), T(roi_w) / T(pooled_w)


@njit(cache=True)
def pool_bin_range(start, p, bin_size, size):
    """Cells [lo, hi) of bin p along one axis: [floor(p*bin), ceil((p+1)*bin)) + start, clipped."""
    T = type(bin_size)
    lo = int(math.floor(T(p) * bin_size)) + start
    hi = int(math.ceil(T(p + 1) * bin_size)) + start
    return min(max(lo, 0), size), min(max(hi, 0), size)


# ---- NumPy reference ----------------------------------------------------------------------------
def _c_round(v) -> int:
    """C's round() of a float: |v| rounded half up, sign restored (2.5 -> 3, -2.5 -> -3)."""
    a = abs(float(v))
    q = math.floor(a)
    return int(math.copysign(q + (1 if a - q >= 0.5 else 0), v))


def _bins_numpy(start, bin_size, pooled, size, T):
    """Clipped integer cell ranges [lo, hi) of the `pooled` bins along one axis."""
    p = np.arange(pooled + 1, dtype=T) * bin_size  # bin edges p * bin, in T
    lo = np.clip(np.floor(p[:-1]).astype(np.int64) + start, 0, size)
    hi = np.clip(np.ceil(p[1:]).astype(np.int64) + start, 0, size)
    return lo, hi


def roi_pool_numpy(input, rois, batch, output_size, spatial_scale):
    input = to_host(input)
    (N, C, H, W), (PH, PW), K, T = input.shape, output_size, len(rois), input.dtype.type
    out = np.zeros((K, C, PH, PW), dtype=input.dtype)
    argmax = np.full((K, C, PH, PW), -1, dtype=np.int32)
    lowest = T(-FLT_MAX)
    for k in range(K):
        x1, y1, x2, y2 = (_c_round(rois[k, j] * T(spatial_scale)) for j in range(1, 5))
        roi_h, roi_w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)  # inclusive ends
        hs = _bins_numpy(y1, T(roi_h) / T(PH), PH, H, T)
        ws = _bins_numpy(x1, T(roi_w) / T(PW), PW, W, T)
        for ph, (h0, h1) in enumerate(zip(*hs)):
            for pw, (w0, w1) in enumerate(zip(*ws)):
                if h1 <= h0 or w1 <= w0:
                    continue  # empty bin: 0, argmax -1
                window = input[batch[k], :, h0:h1, w0:w1].reshape(C, -1)  # (C, cells), row-major
                first = np.argmax(np.where(np.isnan(window), -np.inf, window), axis=1)  # first max
                best = window[np.arange(C), first]
                found = best > lowest  # the kernel's running max starts at -FLT_MAX, replaces on '>'
                out[k, :, ph, pw] = np.where(found, best, lowest)
                argmax[k, :, ph, pw] = np.where(found, (h0 + first // (w1 - w0)) * W + w0 + first % (w1 - w0), -1)
    return out, argmax


def roi_pool_backward_numpy(grad_output, argmax, batch, input_shape):
    grad_output, argmax = to_host(grad_output), to_host(argmax)
    (N, C, H, W), (K, _, PH, PW) = input_shape, grad_output.shape
    grad = np.zeros((N, C, H * W), dtype=grad_output.dtype)
    channels = np.arange(C)
    for k in range(K):  # torchvision's order: roi, channel, bin (channels are independent planes)
        for ph in range(PH):
            for pw in range(PW):
                a = argmax[k, :, ph, pw]
                hit = a >= 0
                grad[batch[k], channels[hit], a[hit]] += grad_output[k, hit, ph, pw]
    return grad.reshape(input_shape)


# ---- Numba CPU ------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _forward_cpu_kernel(feat_t, rois, batch, scale, H, W, PH, PW, out3, arg3):
    """prange over rois; feat_t is the input channels-last (N, H*W, C), so every cell of a bin is a
    contiguous C-vector and the running max of all channels advances together (vectorised)."""
    C = feat_t.shape[2]
    lowest, zero = feat_t.dtype.type(-FLT_MAX), feat_t.dtype.type(0)
    for k in prange(rois.shape[0]):
        sh, sw, bh, bw = pool_roi_geometry(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4], scale, PH, PW)
        plane = feat_t[batch[k]]
        best, idx = np.empty(C, dtype=feat_t.dtype), np.empty(C, dtype=np.int32)
        for ph in range(PH):
            h0, h1 = pool_bin_range(sh, ph, bh, H)
            for pw in range(PW):
                w0, w1 = pool_bin_range(sw, pw, bw, W)
                best[:] = zero if (h1 <= h0 or w1 <= w0) else lowest
                idx[:] = -1
                for h in range(h0, h1):
                    for w in range(w0, w1):
                        cell = h * W + w
                        v = plane[cell]
                        for c in range(C):  # strictly greater replaces: ties keep the first cell
                            take = v[c] > best[c]
                            best[c] = v[c] if take else best[c]
                            idx[c] = cell if take else idx[c]
                for c in range(C):
                    out3[k, c, ph * PW + pw] = best[c]
                    arg3[k, c, ph * PW + pw] = idx[c]


@njit(cache=True, parallel=True)
def _backward_cpu_kernel(gout2, arg2, batch, C, gin2):
    P = gout2.shape[1]
    for q in prange(gin2.shape[0]):
        b, c = q // C, q % C
        row = gin2[q]
        for k in range(batch.shape[0]):
            if batch[k] == b:
                for j in range(P):
                    a = arg2[k * C + c, j]
                    if a != -1:
                        row[a] += gout2[k * C + c, j]


def roi_pool_cpu(input, rois, batch, output_size, spatial_scale):
    feat = to_host(input)
    (N, C, H, W), (PH, PW), K = feat.shape, output_size, len(rois)
    feat_t = np.ascontiguousarray(feat.transpose(0, 2, 3, 1)).reshape(N, H * W, C)  # channels-last copy
    out = np.empty((K, C, PH, PW), dtype=feat.dtype)
    argmax = np.empty((K, C, PH, PW), dtype=np.int32)
    _forward_cpu_kernel(feat_t, rois, batch, feat.dtype.type(spatial_scale), H, W, PH, PW,
                        out.reshape(K, C, PH * PW), argmax.reshape(K, C, PH * PW))
    return out, argmax


def roi_pool_backward_cpu(grad_output, argmax, batch, input_shape):
    gout, arg = np.ascontiguousarray(to_host(grad_output)), np.ascontiguousarray(to_host(argmax))
    (N, C, H, W), (K, _, PH, PW) = input_shape, gout.shape
    grad = np.zeros(input_shape, dtype=gout.dtype)
    _backward_cpu_kernel(gout.reshape(K * C, PH * PW), arg.reshape(K * C, PH * PW), batch, C,
                         grad.reshape(N * C, H * W))
    return grad


# ---- Numba CUDA -----------------------------------------------------------------------------------
_geometry_d, _range_d = for_cuda(pool_roi_geometry), for_cuda(pool_bin_range)


@cuda.jit
def _forward_cuda_kernel(feat, rois, batch, scale, out, argmax):
    K, C, PH, PW = out.shape
    H, W = feat.shape[2], feat.shape[3]
    for i in range(cuda.grid(1), K * C * PH * PW, cuda.gridsize(1)):  # one output element per thread
        pw, ph, c, k = i % PW, (i // PW) % PH, (i // (PW * PH)) % C, i // (PW * PH * C)
        sh, sw, bh, bw = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4], scale, PH, PW)
        h0, h1 = _range_d(sh, ph, bh, H)
        w0, w1 = _range_d(sw, pw, bw, W)
        T = type(scale)
        best = T(0.0) if (h1 <= h0 or w1 <= w0) else T(-FLT_MAX)
        idx = -1
        b = batch[k]
        for h in range(h0, h1):
            for w in range(w0, w1):
                if feat[b, c, h, w] > best:
                    best = feat[b, c, h, w]
                    idx = h * W + w
        out[k, c, ph, pw] = best
        argmax[k, c, ph, pw] = idx


@cuda.jit
def _backward_cuda_kernel(gout, argmax, batch, gin):
    """Deterministic: thread (b, c) owns gradient plane (b, c) and adds its rois in order."""
    N, C, H, W = gin.shape
    K, PH, PW = gout.shape[0], gout.shape[2], gout.shape[3]
    for q in range(cuda.grid(1), N * C, cuda.gridsize(1)):
        b, c = q // C, q % C
        for k in range(K):
            if batch[k] == b:
                for ph in range(PH):
                    for pw in range(PW):
                        a = argmax[k, c, ph, pw]
                        if a != -1:
                            gin[b, c, a // W, a % W] += gout[k, c, ph, pw]


@cuda.jit
def _out_of_range_cuda_kernel(flat, hi, bad):
    t = cuda.grid(1)
    if t < flat.shape[0] and (flat[t] < -1 or flat[t] >= hi):
        cuda.atomic.add(bad, 0, 1)


def count_bad_argmax(argmax, plane_size):
    """How many argmax entries are neither -1 (an empty bin) nor a cell in [0, plane_size); on the
    device for a device array (one counter comes back), so every backend applies the same rule."""
    if is_device_array(argmax):
        if argmax.size == 0:
            return 0
        bad = device_zeros(1, np.int64)
        flat = argmax.reshape(argmax.size)
        _out_of_range_cuda_kernel[blocks_for(flat.size), 256](flat, plane_size, bad)
        return int(bad.copy_to_host()[0])
    return int(np.count_nonzero((argmax < -1) | (argmax >= plane_size)))


def roi_pool_cuda(input, rois, batch, output_size, spatial_scale):
    d_in = to_device(input)
    shape = (len(rois), d_in.shape[1]) + tuple(output_size)
    out, argmax = device_zeros(shape, d_in.dtype), device_zeros(shape, np.int32)
    _forward_cuda_kernel[blocks_for(out.size), 256](d_in, to_device(rois), to_device(batch),
                                                    d_in.dtype.type(spatial_scale), out, argmax)
    return like_input(out, input), like_input(argmax, input)


def roi_pool_backward_cuda(grad_output, argmax, batch, input_shape):
    d_g = to_device(grad_output)
    grad = device_zeros(tuple(input_shape), d_g.dtype)
    _backward_cuda_kernel[blocks_for(input_shape[0] * input_shape[1]), 256](d_g, to_device(argmax),
                                                                           to_device(batch), grad)
    return like_input(grad, grad_output)


# ---- public entry points ------------------------------------------------------------------------
_IMPLS = {"numpy": roi_pool_numpy, "cpu": roi_pool_cpu, "cuda": roi_pool_cuda}
_BACKWARD_IMPLS = {"numpy": roi_pool_backward_numpy, "cpu": roi_pool_backward_cpu, "cuda": roi_pool_backward_cuda}


MAX_CELL = 2**31 - 1  # |box coordinate * spatial_scale|: the kernels round it to an int and add 1


def check_cells(rois, dtype, spatial_scale):
    """Raise ValueError when a scaled box coordinate leaves [-MAX_CELL, MAX_CELL] (before the kernels
    cast it to an integer cell, where a larger float would not fit)."""
    if len(rois) == 0:
        return
    with np.errstate(over="ignore", invalid="ignore"):
        cells = np.abs(rois[:, 1:5] * dtype.type(spatial_scale))
    bad = np.flatnonzero(~np.all(cells <= MAX_CELL, axis=1))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"boxes: roi {k} {rois[k].tolist()} times spatial_scale {spatial_scale} leaves "
                         f"the range of feature cells [-{MAX_CELL}, {MAX_CELL}] (the limit)")


def roi_pool(input, boxes, output_size, spatial_scale=1.0, *, return_argmax=False, backend=None):
    """RoIPool with torchvision's signature and results (``torchvision.ops.roi_pool``).

    input: (N, C, H, W) float32/float64; boxes: (K, 5) [batch_index, x1, y1, x2, y2] in image pixels
    or a list of N arrays (L_i, 4); output_size: int or (PH, PW); spatial_scale: feature/image size.
    Returns (K, C, PH, PW) maxima, or ``(output, argmax)`` with ``return_argmax=True`` (argmax:
    int32 flat index h * W + w in the input plane, -1 for an empty bin), what the backward needs.
    """
    name = get_backend(backend)
    input, out_hw, scale = check_pool_args(input, output_size, spatial_scale)
    rois, batch = check_rois(boxes, input.shape[0], input.dtype)
    N, C, H, W = input.shape
    _checks.elements((len(rois), C) + out_hw, "output_size", "the output (K, C, PH, PW)")
    _checks.elements((H, W), "input", "a plane (H, W) indexed by int32 argmax")
    check_cells(rois, input.dtype, scale)
    if len(rois) == 0 or C == 0:
        shape = (len(rois), C) + out_hw
        out, arg = zeros_like_input(shape, input.dtype, input), zeros_like_input(shape, np.int32, input)
    else:
        out, arg = _IMPLS[name](input, rois, batch, out_hw, scale)
    return (out, arg) if return_argmax else out


def roi_pool_backward(grad_output, argmax, boxes, input_shape, *, backend=None):
    """Gradient of :func:`roi_pool` w.r.t. its input: grad_input[b, c].flat[argmax] += grad_output.

    grad_output, argmax: (K, C, PH, PW) (argmax from ``roi_pool(..., return_argmax=True)``);
    boxes: as given to roi_pool (only the batch index is used); input_shape: (N, C, H, W).
    Every argmax must be -1 or in [0, H * W): ValueError otherwise, on every backend.
    """
    name = get_backend(backend)
    grad_output, input_shape, _, batch = check_backward_args(grad_output, boxes, input_shape)
    argmax = _checks.as_array(argmax, "argmax", ndim=4)
    if tuple(argmax.shape) != tuple(grad_output.shape):
        raise ValueError(f"argmax: expected the shape of grad_output {tuple(grad_output.shape)}, "
                         f"got {tuple(argmax.shape)}")
    if argmax.dtype.kind not in "iu":
        raise TypeError(f"argmax: expected integer indices (int32, as roi_pool returns), got {argmax.dtype}")
    plane = input_shape[2] * input_shape[3]
    bad = count_bad_argmax(argmax, plane)
    if bad:
        raise ValueError(f"argmax: {bad} entries are neither -1 (an empty bin) nor a cell in [0, H * W = "
                         f"{plane}) of input_shape {input_shape}, as roi_pool returns them")
    if grad_output.size == 0 or 0 in input_shape:
        return zeros_like_input(input_shape, grad_output.dtype, grad_output)
    if not is_device_array(argmax):
        argmax = argmax.astype(np.int32, copy=False)
    return _BACKWARD_IMPLS[name](grad_output, argmax, batch, input_shape)
