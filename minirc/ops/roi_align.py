"""RoIAlign (Mask R-CNN, He et al. 2017, Sec. 3), forward and backward, bit-faithful to torchvision.

Shape shorthand: N images, C channels, H W feature size, K RoIs, PH PW pooled size.
Inputs:  input (N, C, H, W) float32/float64; boxes (K, 5) [batch_index, x1, y1, x2, y2] in image
         pixels (or a list of per-image (L, 4) x1y1x2y2 arrays); spatial_scale = feature/image size.
Output:  (K, C, PH, PW): each bin is the mean of grid_h x grid_w bilinear samples, no rounding of
         coordinates anywhere (docs/pixel_model.md; docs/semantics.md section 4).

Convention followed: torchvision's CPU kernel (``csrc/ops/cpu/roi_align_kernel.cpp``), float for
float in the input dtype: samples outside [-1, H] x [-1, W] are 0 but still count in the mean,
samples inside clamp to the border; aligned=False forces RoIs to at least 1x1 cells, aligned=True
(detectron2) shifts by -0.5 and has no minimum size. The backward adds grad * w / count into the
four neighbours of every in-range sample, in torchvision's order (roi, bin, sample, neighbour), so
NumPy, CPU and the per-plane CUDA kernel give bit-identical, deterministic gradients.

Backends:
* numpy -- the reference: per roi, the sample grid as arrays (separable in y and x);
* cpu   -- per-roi sample tables (4 indices + 4 weights per sample) built once, in chunks, with
           prange over rois, then reused by every channel. Forward: prange over rois on a
           channels-last copy of the input, so the four neighbours of a sample are contiguous
           C-vectors (the channel loop vectorises; the arithmetic per channel is unchanged).
           Backward: prange over the (image, channel) planes of the gradient, each plane summing
           its rois serially in roi order (race-free, deterministic);
* cuda  -- forward one thread per output element; backward one thread per (image, channel) plane
           (deterministic, default) or, with ``deterministic=False``, one thread per output element
           scattering with ``cuda.atomic.add`` (faster on a GPU; float additions then happen in a
           run-dependent order, so the last bits of the gradient may differ between runs).
The per-sample math (``minirc/ops/_bilinear.py``) is shared by the cpu and cuda kernels; what
roi_align shares with roi_warp and roi_align_max (checks, limits, launches) is in
``minirc/ops/_roi_sampling.py``.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from minirc.backend import get_backend
from minirc.cuda_utils import to_host
from minirc.ops._bilinear import align_roi_geometry, bilinear_neighbours, for_cuda, sample_coord
from minirc.ops._roi_sampling import MAX_SAMPLES_PER_ROI  # noqa: F401 (minirc.ops.roi_align.MAX_SAMPLES_PER_ROI)
from minirc.ops._roi_sampling import (add_mean_grad_numpy, add_roi_mean_grad, align_geometry_numpy, axis_samples,
                                      channel_blocks, channels_last, check_backward_sampling_args,
                                      check_feature_plane, check_forward_args, from_channels_last,
                                      launch_backward_cuda, launch_forward_cuda)
from minirc.ops._rois import zeros_like_input

MAX_SAMPLES_PER_CHUNK = 1 << 20  # cpu: sample tables are built for at most this many samples at once


# ---- NumPy reference: the spec, written to be read -------------------------------------------
def _roi_tables_numpy(roi, scale, aligned, sampling_ratio, PH, PW, H, W):
    """For one roi: (valid, (y_low, x_low, y_high, x_high), (w1..w4), grid, count), all (PH, gh, PW, gw)."""
    T = type(roi[0])
    off = T(0.5) if aligned else T(0)
    x1, y1, x2, y2 = (roi[j] * scale - off for j in range(1, 5))
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:
        roi_w, roi_h = max(roi_w, T(1)), max(roi_h, T(1))
    bin_h, bin_w = roi_h / T(PH), roi_w / T(PW)
    gh = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_h))
    gw = sampling_ratio if sampling_ratio > 0 else int(np.ceil(bin_w))
    vy, yl, yh, hy, ly = axis_samples(y1, bin_h, gh, PH, H, T)  # gh <= 0: no samples (an empty arange)
    vx, xl, xh, hx, lx = axis_samples(x1, bin_w, gw, PW, W, T)
    valid = vy[:, :, None, None] & vx[None, None, :, :]  # (PH, gh, PW, gw)

    def outer(a, b, empty):  # the (ph, iy) x (pw, ix) product, `empty` where the sample is 0
        return np.where(valid, a[:, :, None, None] * b[None, None, :, :], empty)

    weights = (outer(hy, hx, T(0)), outer(hy, lx, T(0)), outer(ly, hx, T(0)), outer(ly, lx, T(0)))
    rows = (np.where(valid, yl[:, :, None, None], 0), np.where(valid, yh[:, :, None, None], 0))
    cols = (np.where(valid, xl[None, None], 0), np.where(valid, xh[None, None], 0))
    corners = ((rows[0], cols[0]), (rows[0], cols[1]), (rows[1], cols[0]), (rows[1], cols[1]))
    return valid, corners, weights, (max(gh, 0), max(gw, 0)), T(max(gh * gw, 1))


def roi_align_numpy(input, rois, batch, output_size, spatial_scale, sampling_ratio, aligned):
    input = to_host(input)
    (K, (PH, PW)), (N, C, H, W), T = (len(rois), output_size), input.shape, input.dtype.type
    out = np.zeros((K, C, PH, PW), dtype=input.dtype)
    for k in range(K):
        _, corners, w, (gh, gw), count = _roi_tables_numpy(rois[k], T(spatial_scale), aligned,
                                                           sampling_ratio, PH, PW, H, W)
        feat = input[batch[k]]
        v = [feat[:, r, c] for r, c in corners]                   # 4 x (C, PH, gh, PW, gw)
        val = w[0] * v[0] + w[1] * v[1] + w[2] * v[2] + w[3] * v[3]  # left to right, as torchvision
        acc = np.zeros((C, PH, PW), dtype=input.dtype)
        for iy in range(gh):                                      # serial sum: the kernel's order
            for ix in range(gw):
                acc += val[:, :, iy, :, ix]
        out[k] = acc / count
    return out


def roi_align_backward_numpy(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio,
                             aligned, deterministic=True):
    grad_output = to_host(grad_output)
    (N, C, H, W), (K, _, PH, PW), T = input_shape, grad_output.shape, grad_output.dtype.type
    grad = np.zeros(input_shape, dtype=grad_output.dtype)
    for k in range(K):
        valid, corners, w, grid, _ = _roi_tables_numpy(rois[k], T(spatial_scale), aligned,
                                                       sampling_ratio, PH, PW, H, W)
        add_mean_grad_numpy(grad[batch[k]], grad_output[k], valid, corners, w, grid)  # divides by gh * gw
    return grad


# ---- Numba CPU: sample tables once per roi, reused by all channels --------------------------
@njit(cache=True)
def _roi_layout(rois, scale, aligned, sampling_ratio, PH, PW):
    """Per roi: (start_h, start_w, bin_h, bin_w), the sample grid, the divisor, table offsets."""
    K = rois.shape[0]
    geom = np.empty((K, 4), dtype=rois.dtype)
    grid = np.empty((K, 2), dtype=np.int64)
    count = np.empty(K, dtype=rois.dtype)
    offsets = np.zeros(K + 1, dtype=np.int64)
    for k in range(K):
        sh, sw, bh, bw, gh, gw, cnt = align_roi_geometry(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                         scale, aligned, sampling_ratio, PH, PW)
        geom[k, 0], geom[k, 1], geom[k, 2], geom[k, 3] = sh, sw, bh, bw
        grid[k, 0], grid[k, 1] = max(gh, 0), max(gw, 0)  # a negative grid is an empty loop
        count[k] = cnt
        offsets[k + 1] = offsets[k] + PH * PW * grid[k, 0] * grid[k, 1]
    return geom, grid, count, offsets


@njit(cache=True, parallel=True)
def _fill_sample_tables(geom, grid, offsets, lo, hi, PH, PW, H, W, pos, wts, ok):
    """Rows s of (pos, wts, ok) for rois lo..hi-1, samples in (ph, pw, iy, ix) order."""
    for k in prange(lo, hi):
        s = offsets[k] - offsets[lo]
        gh, gw = grid[k, 0], grid[k, 1]
        for ph in range(PH):
            for pw in range(PW):
                for iy in range(gh):
                    y = sample_coord(geom[k, 0], ph, geom[k, 2], iy, gh)
                    for ix in range(gw):
                        x = sample_coord(geom[k, 1], pw, geom[k, 3], ix, gw)
                        v, yl, xl, yh, xh, w1, w2, w3, w4 = bilinear_neighbours(y, x, H, W)
                        pos[s, 0], pos[s, 1] = yl * W + xl, yl * W + xh
                        pos[s, 2], pos[s, 3] = yh * W + xl, yh * W + xh
                        wts[s, 0], wts[s, 1], wts[s, 2], wts[s, 3] = w1, w2, w3, w4
                        ok[s] = v
                        s += 1


@njit(cache=True, parallel=True)
def _forward_chunk_cpu(feat_t, batch, grid, count, offsets, lo, hi, pos, wts, out3):
    """out3[k, :, bin] for rois lo..hi-1 from the channels-last input feat_t (N, H*W, C).

    Channels-last makes a sample's four neighbours four contiguous C-vectors, so the inner loop
    over channels vectorises; each channel still sees torchvision's exact sequence of operations.
    """
    C, P = feat_t.shape[2], out3.shape[2]
    for k in prange(lo, hi):
        plane, res = feat_t[batch[k]], out3[k]
        acc = np.empty(C, dtype=feat_t.dtype)
        g = grid[k, 0] * grid[k, 1]
        s = offsets[k] - offsets[lo]
        for b in range(P):
            acc[:] = 0
            for _ in range(g):  # empty samples read pixel 0 with weight 0, like torchvision's CPU kernel
                w1, w2, w3, w4 = wts[s, 0], wts[s, 1], wts[s, 2], wts[s, 3]
                v1, v2, v3, v4 = plane[pos[s, 0]], plane[pos[s, 1]], plane[pos[s, 2]], plane[pos[s, 3]]
                for c in range(C):
                    acc[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c]
                s += 1
            for c in range(C):
                res[c, b] = acc[c] / count[k]


@njit(cache=True, parallel=True)
def _backward_chunk_cpu(gout_t, batch, grid, offsets, lo, hi, pos, wts, ok, gin_t, n_blocks):
    """Add the rois lo..hi-1 into the channels-last gin_t (N, H*W, C) from gout_t (K, PH*PW, C).

    Thread t owns the channels of block t (n_blocks contiguous ranges) of every pixel and adds the
    rois in order, their bins in order, each bin's samples in order: every element of the gradient
    sees the same sequence of additions whatever the number of threads (no atomics, deterministic,
    and bit-for-bit torchvision's CPU order). Channels-last makes each sample's contribution one
    contiguous run of channels, which the compiler vectorises.
    """
    C, P = gin_t.shape[2], gout_t.shape[1]
    for t in prange(n_blocks):
        c0, c1 = C * t // n_blocks, C * (t + 1) // n_blocks
        for k in range(lo, hi):
            plane = gin_t[batch[k]]
            g = grid[k, 0] * grid[k, 1]
            count = gout_t.dtype.type(g)  # the backward divides by grid_h * grid_w, no max(., 1)
            # a power of two (sampling_ratio 2: 4 samples): x / count and x * (1 / count) are the
            # same float, the reciprocal being exact, and the multiply is several times cheaper
            exact = g > 0 and g & (g - 1) == 0
            inv = gout_t.dtype.type(1) / count
            s = offsets[k] - offsets[lo]
            for bin_ in range(P):
                go = gout_t[k, bin_, c0:c1]
                for _ in range(g):
                    if ok[s]:
                        for q in range(4):
                            # loops from 0 over slices: with range(c0, c1) Numba cannot prove the
                            # index non-negative, keeps its wrap-around check and does not vectorise (7x slower)
                            row, w = plane[pos[s, q], c0:c1], wts[s, q]
                            if exact:
                                for c in range(row.shape[0]):
                                    row[c] += go[c] * w * inv
                            else:
                                for c in range(row.shape[0]):
                                    row[c] += go[c] * w / count
                    s += 1


def _chunks(offsets):
    """Consecutive roi ranges whose sample tables hold at most MAX_SAMPLES_PER_CHUNK rows (>= 1 roi)."""
    K, lo = len(offsets) - 1, 0
    while lo < K:
        hi = int(np.searchsorted(offsets, offsets[lo] + MAX_SAMPLES_PER_CHUNK, side="right")) - 1
        hi = min(max(hi, lo + 1), K)
        yield lo, hi
        lo = hi


def _tables_cpu(rois, dtype, PH, PW, H, W, spatial_scale, sampling_ratio, aligned):
    """Yield (grid, count, offsets, lo, hi, pos, wts, ok) chunk by chunk."""
    geom, grid, count, offsets = _roi_layout(rois, dtype.type(spatial_scale), aligned, sampling_ratio, PH, PW)
    for lo, hi in _chunks(offsets):
        n = int(offsets[hi] - offsets[lo])
        pos, wts, ok = np.empty((n, 4), np.int32), np.empty((n, 4), dtype), np.empty(n, np.bool_)
        _fill_sample_tables(geom, grid, offsets, lo, hi, PH, PW, H, W, pos, wts, ok)
        yield grid, count, offsets, lo, hi, pos, wts, ok


def roi_align_cpu(input, rois, batch, output_size, spatial_scale, sampling_ratio, aligned):
    feat = to_host(input)
    (N, C, H, W), (PH, PW), K = feat.shape, output_size, len(rois)
    feat_t = channels_last(feat)
    out = np.empty((K, C, PH, PW), dtype=feat.dtype)
    for grid, count, offsets, lo, hi, pos, wts, _ in _tables_cpu(rois, feat.dtype, PH, PW, H, W,
                                                                 spatial_scale, sampling_ratio, aligned):
        _forward_chunk_cpu(feat_t, batch, grid, count, offsets, lo, hi, pos, wts, out.reshape(K, C, PH * PW))
    return out


def roi_align_backward_cpu(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio,
                           aligned, deterministic=True):
    gout = to_host(grad_output)
    (N, C, H, W), (K, _, PH, PW) = input_shape, gout.shape
    gout_t = channels_last(gout)  # (K, PH * PW, C)
    gin_t = np.zeros((N, H * W, C), dtype=gout.dtype)
    n_blocks = channel_blocks(C)
    for grid, _, offsets, lo, hi, pos, wts, ok in _tables_cpu(rois, gout.dtype, PH, PW, H, W,
                                                              spatial_scale, sampling_ratio, aligned):
        _backward_chunk_cpu(gout_t, batch, grid, offsets, lo, hi, pos, wts, ok, gin_t, n_blocks)
    return from_channels_last(gin_t, input_shape)


# ---- Numba CUDA -------------------------------------------------------------------------------
_geometry_d, _coord_d, _bilinear_d = (for_cuda(f) for f in (align_roi_geometry, sample_coord, bilinear_neighbours))
_roi_grad_d = for_cuda(add_roi_mean_grad)


@cuda.jit
def _forward_cuda_kernel(feat, rois, batch, scale, aligned, sampling_ratio, out):
    K, C, PH, PW = out.shape
    H, W = feat.shape[2], feat.shape[3]
    for i in range(cuda.grid(1), K * C * PH * PW, cuda.gridsize(1)):  # one output element per thread
        pw, ph, c, k = i % PW, (i // PW) % PH, (i // (PW * PH)) % C, i // (PW * PH * C)
        sh, sw, bh, bw, gh, gw, cnt = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                         scale, aligned, sampling_ratio, PH, PW)
        b = batch[k]
        acc = type(cnt)(0.0)
        for iy in range(gh):
            y = _coord_d(sh, ph, bh, iy, gh)
            for ix in range(gw):
                x = _coord_d(sw, pw, bw, ix, gw)
                v, yl, xl, yh, xh, w1, w2, w3, w4 = _bilinear_d(y, x, H, W)
                acc += (w1 * feat[b, c, yl, xl] + w2 * feat[b, c, yl, xh]
                        + w3 * feat[b, c, yh, xl] + w4 * feat[b, c, yh, xh])
        out[k, c, ph, pw] = acc / cnt


@cuda.jit
def _backward_cuda_plane_kernel(gout, rois, batch, scale, aligned, sampling_ratio, gin):
    """Deterministic: thread (b, c) owns gradient plane (b, c) and adds its rois in order."""
    N, C = gin.shape[0], gin.shape[1]
    K, PH, PW = gout.shape[0], gout.shape[2], gout.shape[3]
    for q in range(cuda.grid(1), N * C, cuda.gridsize(1)):
        b, c = q // C, q % C
        for k in range(K):
            if batch[k] == b:
                sh, sw, bh, bw, gh, gw, cnt = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                          scale, aligned, sampling_ratio, PH, PW)
                _roi_grad_d(gout, gin, k, b, c, sh, sw, bh, bw, gh, gw, type(cnt)(gh * gw))  # no max(., 1)


@cuda.jit
def _backward_cuda_atomic_kernel(gout, rois, batch, scale, aligned, sampling_ratio, gin):
    """Fast, NOT deterministic: one thread per output element, atomic adds in arbitrary order."""
    K, C, PH, PW = gout.shape
    H, W = gin.shape[2], gin.shape[3]
    for i in range(cuda.grid(1), K * C * PH * PW, cuda.gridsize(1)):
        pw, ph, c, k = i % PW, (i // PW) % PH, (i // (PW * PH)) % C, i // (PW * PH * C)
        sh, sw, bh, bw, gh, gw, cnt = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                         scale, aligned, sampling_ratio, PH, PW)
        count = type(cnt)(gh * gw)
        b, g = batch[k], gout[k, c, ph, pw]
        for iy in range(gh):
            y = _coord_d(sh, ph, bh, iy, gh)
            for ix in range(gw):
                x = _coord_d(sw, pw, bw, ix, gw)
                v, yl, xl, yh, xh, w1, w2, w3, w4 = _bilinear_d(y, x, H, W)
                if v:
                    cuda.atomic.add(gin, (b, c, yl, xl), g * w1 / count)
                    cuda.atomic.add(gin, (b, c, yl, xh), g * w2 / count)
                    cuda.atomic.add(gin, (b, c, yh, xl), g * w3 / count)
                    cuda.atomic.add(gin, (b, c, yh, xh), g * w4 / count)


def roi_align_cuda(input, rois, batch, output_size, spatial_scale, sampling_ratio, aligned):
    out, = launch_forward_cuda(_forward_cuda_kernel, input, rois, batch, output_size, spatial_scale,
                               aligned, sampling_ratio)
    return out


def roi_align_backward_cuda(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio,
                            aligned, deterministic=True):
    if deterministic:  # one thread per (image, channel) plane
        return launch_backward_cuda(_backward_cuda_plane_kernel, grad_output, rois, batch, input_shape,
                                    spatial_scale, aligned, sampling_ratio)
    return launch_backward_cuda(_backward_cuda_atomic_kernel, grad_output, rois, batch, input_shape,
                                spatial_scale, aligned, sampling_ratio, threads=grad_output.size)


# ---- public entry points ------------------------------------------------------------------------
_IMPLS = {"numpy": roi_align_numpy, "cpu": roi_align_cpu, "cuda": roi_align_cuda}
_BACKWARD_IMPLS = {"numpy": roi_align_backward_numpy, "cpu": roi_align_backward_cpu,
                   "cuda": roi_align_backward_cuda}


def check_sample_counts(rois, dtype, spatial_scale, aligned, sampling_ratio, output_size):
    """Raise ValueError when one roi would need more than MAX_SAMPLES_PER_ROI samples.

    The per-roi grid is :func:`align_roi_geometry`'s, recomputed vectorised in the input dtype
    (:func:`minirc.ops._roi_sampling.align_geometry_numpy`) and counted in Python numbers, so neither
    a huge roi (adaptive sampling: ceil(bin size) per bin side) nor a huge ``sampling_ratio`` can
    wrap the kernels' 64-bit table sizes; adaptive sampling also refuses scaled corners that overflow.
    """
    align_geometry_numpy(np.asarray(rois, dtype), spatial_scale, sampling_ratio, aligned, output_size,
                         finite_only=True)


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, *, backend=None):
    """RoIAlign with torchvision's signature and float32 results (``torchvision.ops.roi_align``).

    input: (N, C, H, W) float32/float64; boxes: (K, 5) [batch_index, x1, y1, x2, y2] in image pixels
    or a list of N arrays (L_i, 4) x1y1x2y2; output_size: int or (PH, PW);
    spatial_scale: feature size / image size (1/16 for a stride-16 map);
    sampling_ratio: samples per bin side, <= 0 for adaptive ceil(roi_size / pooled_size);
    aligned: False = torchvision's legacy pixel model, True = detectron2's half-pixel shift.
    Returns (K, C, PH, PW) in the input dtype.
    """
    name = get_backend(backend)
    input, out_hw, scale, sampling_ratio, aligned, rois, batch = check_forward_args(
        input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    check_sample_counts(rois, input.dtype, scale, aligned, sampling_ratio, out_hw)
    if len(rois) == 0 or input.shape[1] == 0:
        return zeros_like_input((len(rois), input.shape[1]) + out_hw, input.dtype, input)
    check_feature_plane(input)
    return _IMPLS[name](input, rois, batch, out_hw, scale, sampling_ratio, aligned)


def roi_align_backward(grad_output, boxes, input_shape, spatial_scale=1.0, sampling_ratio=-1, aligned=False,
                       *, backend=None, deterministic=True):
    """Gradient of :func:`roi_align` w.r.t. its input (none w.r.t. the boxes, as in torchvision).

    grad_output: (K, C, PH, PW); boxes as in :func:`roi_align`; input_shape: (N, C, H, W).
    deterministic: cuda only; False picks the atomic-add kernel (faster, run-to-run last-bit noise).
    Returns (N, C, H, W) in grad_output's dtype.
    """
    name = get_backend(backend)
    grad_output, input_shape, rois, batch, scale, sampling_ratio, aligned = check_backward_sampling_args(
        grad_output, boxes, input_shape, spatial_scale, sampling_ratio, aligned)
    check_sample_counts(rois, grad_output.dtype, scale, aligned, sampling_ratio, tuple(grad_output.shape[2:]))
    if grad_output.size == 0 or 0 in input_shape:
        return zeros_like_input(input_shape, grad_output.dtype, grad_output)
    return _BACKWARD_IMPLS[name](grad_output, rois, batch, input_shape, scale, sampling_ratio, aligned,
                                 deterministic)
