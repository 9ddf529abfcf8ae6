"""RoIWarp: RoIPool's quantization, then RoIAlign's bilinear sampling and average. Forward and backward.

Shape shorthand: N images, C channels, H W feature size, K RoIs, PH PW pooled size.
Inputs:  input (N, C, H, W) float32/float64; boxes (K, 5) [batch_index, x1, y1, x2, y2] in image
         pixels (or a list of per-image (L, 4) x1y1x2y2 arrays); spatial_scale = feature/image size.
Output:  (K, C, PH, PW).

The Mask R-CNN paper (He et al. 2017, arXiv 1703.06870, Sec. 3 and Table 2c, row "RoIWarp,
bilinear, avg") describes RoIWarp as bilinear resampling of a RoI that was first quantized as RoIPool
quantizes it. minirc defines it so that it differs from each neighbour in that table in one thing:

1. **snap** the box exactly as RoIPool does (:mod:`minirc.ops.roi_pool`, torchvision's
   ``roi_pool_kernel.cpp``): per axis, start = round(x1 * scale) and end = round(x2 * scale) with
   C's round (halves away from zero), size = max(end - start + 1, 1) whole cells (inclusive ends);
2. **sample** the box [start, start + size] in cells as legacy RoIAlign (``aligned=False``) samples
   a box: bin = size / pooled, grid = ``sampling_ratio`` samples per bin side (``ceil(bin)`` when
   <= 0), sample i of bin p at start + p * bin + (i + 0.5) * bin / grid, bilinear with the border
   rule of :mod:`minirc.ops._bilinear` (off the map outside [-1, H] x [-1, W], clamped inside);
3. **average**: bin = sum of its samples / (grid_h * grid_w); an off-map sample adds 0 and counts.

Against RoIPool only the aggregation changes (bilinear samples averaged, not the max of whole cells);
against RoIAlign (``aligned=False``) only the snap. Hence ``roi_warp(x, b, s) ==
roi_align(x, b', s, aligned=False)`` for the snapped box ``b' = [start, end + 1] / s`` per axis,
float for float when ``s`` is a power of two (the tests check it). The backward adds
``grad * w / count`` into the four neighbours of every on-map sample, in the order (roi, bin, sample,
neighbour) on every backend: bit-identical results, deterministic.

Backends: numpy (per roi, the sample grid as arrays); cpu (forward: prange over rois on a
channels-last copy of the input; backward: prange over blocks of channels, rois in order); cuda
(forward: one thread per output element; backward: one thread per (image, channel) plane).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, njit, prange

from minirc.backend import get_backend
from minirc.cuda_utils import to_host
from minirc.ops._bilinear import bilinear_neighbours, for_cuda, sample_coord
from minirc.ops._roi_sampling import (add_mean_grad_numpy, add_roi_mean_grad, channel_blocks, channels_last,
                                      check_backward_sampling_args, check_feature_plane, check_forward_args,
                                      from_channels_last, grid_sizes, launch_backward_cuda, launch_forward_cuda,
                                      roi_sample_grid, sample_cells, sample_values)
from minirc.ops._rois import zeros_like_input
from minirc.ops.roi_pool import check_cells, pool_roi_geometry


# ---- per-roi geometry: the snap -----------------------------------------------------------------
@njit(cache=True)
def warp_roi_geometry(x1, y1, x2, y2, spatial_scale, sampling_ratio, pooled_h, pooled_w):
    """(start_h, start_w, bin_h, bin_w, grid_h, grid_w, count) of one roi: T, T, T, T, int, int, T.

    RoIPool's integer cells (:func:`minirc.ops.roi_pool.pool_roi_geometry`), then legacy RoIAlign's
    bins and grid over them.
    """
    T = type(x1)
    start_h, start_w, bin_h, bin_w = pool_roi_geometry(x1, y1, x2, y2, spatial_scale, pooled_h, pooled_w)
    if sampling_ratio > 0:
        grid_h = sampling_ratio
        grid_w = sampling_ratio
    else:  # adaptive, as RoIAlign: ceil of the bin size (>= 1 here: a roi is at least one cell)
        grid_h = int(math.ceil(bin_h))
        grid_w = int(math.ceil(bin_w))
    return T(start_h), T(start_w), bin_h, bin_w, grid_h, grid_w, T(grid_h * grid_w)


def _round_half_away_numpy(v):
    """C's round() of a float array, exactly: |v| rounded half up, sign restored (2.5 -> 3, -2.5 -> -3)."""
    a = np.abs(v.astype(np.float64))
    q = np.floor(a)
    return (np.sign(v) * (q + (a - q >= 0.5))).astype(np.int64)  # a - q is exact (the fraction of a)


def warp_geometry_numpy(rois, spatial_scale, sampling_ratio, output_size):
    """All rois' geometry as (K,) arrays (start_h, start_w, bin_h, bin_w in T; grid_h, grid_w int64), checked.

    Raises ValueError when a scaled coordinate leaves roi_pool's [-MAX_CELL, MAX_CELL] (the kernels
    convert it to an int) or a roi needs too many samples (:func:`minirc.ops._roi_sampling.grid_sizes`).
    """
    T, (PH, PW) = rois.dtype.type, output_size
    check_cells(rois, rois.dtype, spatial_scale)
    cells = rois[:, 1:5] * T(spatial_scale)
    x1, y1, x2, y2 = (_round_half_away_numpy(cells[:, j]) for j in range(4))
    size_w, size_h = np.maximum(x2 - x1 + 1, 1).astype(T), np.maximum(y2 - y1 + 1, 1).astype(T)
    grid_h, grid_w = grid_sizes(size_h, size_w, output_size, sampling_ratio, rois, spatial_scale)
    return y1.astype(T), x1.astype(T), size_h / T(PH), size_w / T(PW), grid_h, grid_w


# ---- NumPy reference ----------------------------------------------------------------------------
def roi_warp_numpy(input, rois, batch, output_size, spatial_scale, sampling_ratio):
    input = to_host(input)
    (N, C, H, W), (PH, PW), K, T = input.shape, output_size, len(rois), input.dtype.type
    out = np.zeros((K, C, PH, PW), dtype=input.dtype)
    geometry = warp_geometry_numpy(rois, spatial_scale, sampling_ratio, output_size)
    for k in range(K):
        valid, corners, weights, gh, gw = roi_sample_grid(geometry, k, output_size, H, W, T)
        values = sample_values(input[batch[k]], valid, corners, weights)  # (C, PH, gh, PW, gw)
        acc = np.zeros((C, PH, PW), dtype=input.dtype)
        for iy in range(gh):  # serial sum in the kernels' order; off-map samples add nothing
            for ix in range(gw):
                acc = np.where(valid[:, iy, :, ix], acc + values[:, :, iy, :, ix], acc)
        out[k] = acc / T(gh * gw)
    return out


def roi_warp_backward_numpy(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio):
    grad_output = to_host(grad_output)
    (N, C, H, W), (K, _, PH, PW), T = input_shape, grad_output.shape, grad_output.dtype.type
    grad = np.zeros(input_shape, dtype=grad_output.dtype)
    geometry = warp_geometry_numpy(rois, spatial_scale, sampling_ratio, (PH, PW))
    for k in range(K):
        valid, corners, weights, gh, gw = roi_sample_grid(geometry, k, (PH, PW), H, W, T)
        add_mean_grad_numpy(grad[batch[k]], grad_output[k], valid, corners, weights, (gh, gw))
    return grad


# ---- Numba CPU ------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _forward_cpu_kernel(feat_t, rois, batch, scale, sampling_ratio, H, W, PH, PW, out3):
    """prange over rois on the channels-last input feat_t (N, H*W, C): a sample's four neighbours
    are contiguous C-vectors, and the loop over channels vectorises."""
    C = feat_t.shape[2]
    for k in prange(rois.shape[0]):
        sh, sw, bh, bw, gh, gw, count = warp_roi_geometry(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                          scale, sampling_ratio, PH, PW)
        plane = feat_t[batch[k]]
        acc = np.empty(C, dtype=feat_t.dtype)
        for ph in range(PH):
            for pw in range(PW):
                acc[:] = 0
                for iy in range(gh):
                    for ix in range(gw):
                        v, p1, p2, p3, p4, w1, w2, w3, w4 = sample_cells(sh, sw, bh, bw, gh, gw, ph, pw, iy, ix, H, W)
                        if v:
                            v1, v2, v3, v4 = plane[p1], plane[p2], plane[p3], plane[p4]
                            for c in range(C):
                                acc[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c]
                for c in range(C):
                    out3[k, c, ph * PW + pw] = acc[c] / count


@njit(cache=True)
def _add_scaled(row, go, w, count):
    """row += go * w / count, channel by channel (loops from 0 over slices: they vectorise)."""
    for c in range(row.shape[0]):
        row[c] += go[c] * w / count


@njit(cache=True, parallel=True)
def _backward_cpu_kernel(gout_t, rois, batch, scale, sampling_ratio, H, W, PH, PW, gin_t, n_blocks):
    """Thread t owns channels [c0, c1) of every pixel of the channels-last gin_t (N, H*W, C) and adds
    the rois in order, their bins, samples and neighbours in order: no atomics, and every element
    sees the same sequence of additions whatever the number of threads."""
    C = gin_t.shape[2]
    for t in prange(n_blocks):
        c0, c1 = C * t // n_blocks, C * (t + 1) // n_blocks
        for k in range(rois.shape[0]):
            sh, sw, bh, bw, gh, gw, count = warp_roi_geometry(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                              scale, sampling_ratio, PH, PW)
            plane = gin_t[batch[k]]
            for ph in range(PH):
                for pw in range(PW):
                    go = gout_t[k, ph * PW + pw, c0:c1]
                    for iy in range(gh):
                        for ix in range(gw):
                            v, p1, p2, p3, p4, w1, w2, w3, w4 = sample_cells(sh, sw, bh, bw, gh, gw, ph, pw, iy, ix,
                                                                             H, W)
                            if v:
                                _add_scaled(plane[p1, c0:c1], go, w1, count)
                                _add_scaled(plane[p2, c0:c1], go, w2, count)
                                _add_scaled(plane[p3, c0:c1], go, w3, count)
                                _add_scaled(plane[p4, c0:c1], go, w4, count)


def roi_warp_cpu(input, rois, batch, output_size, spatial_scale, sampling_ratio):
    feat = to_host(input)
    (N, C, H, W), (PH, PW), K = feat.shape, output_size, len(rois)
    out = np.empty((K, C, PH, PW), dtype=feat.dtype)
    _forward_cpu_kernel(channels_last(feat), rois, batch, feat.dtype.type(spatial_scale), sampling_ratio, H, W, PH, PW,
                        out.reshape(K, C, PH * PW))
    return out


def roi_warp_backward_cpu(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio):
    gout = to_host(grad_output)
    (N, C, H, W), (K, _, PH, PW) = input_shape, gout.shape
    gin_t = np.zeros((N, H * W, C), dtype=gout.dtype)
    _backward_cpu_kernel(channels_last(gout), rois, batch, gout.dtype.type(spatial_scale), sampling_ratio,
                         H, W, PH, PW, gin_t, channel_blocks(C))
    return from_channels_last(gin_t, input_shape)


# ---- Numba CUDA -----------------------------------------------------------------------------------
_geometry_d, _coord_d, _bilinear_d = (for_cuda(f) for f in (warp_roi_geometry, sample_coord, bilinear_neighbours))
_roi_grad_d = for_cuda(add_roi_mean_grad)


@cuda.jit
def _forward_cuda_kernel(feat, rois, batch, scale, sampling_ratio, out):
    K, C, PH, PW = out.shape
    H, W = feat.shape[2], feat.shape[3]
    for i in range(cuda.grid(1), K * C * PH * PW, cuda.gridsize(1)):  # one output element per thread
        pw, ph, c, k = i % PW, (i // PW) % PH, (i // (PW * PH)) % C, i // (PW * PH * C)
        sh, sw, bh, bw, gh, gw, count = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                    scale, sampling_ratio, PH, PW)
        b = batch[k]
        acc = type(count)(0.0)
        for iy in range(gh):
            y = _coord_d(sh, ph, bh, iy, gh)
            for ix in range(gw):
                x = _coord_d(sw, pw, bw, ix, gw)
                v, yl, xl, yh, xh, w1, w2, w3, w4 = _bilinear_d(y, x, H, W)
                if v:
                    acc += (w1 * feat[b, c, yl, xl] + w2 * feat[b, c, yl, xh]
                            + w3 * feat[b, c, yh, xl] + w4 * feat[b, c, yh, xh])
        out[k, c, ph, pw] = acc / count


@cuda.jit
def _backward_cuda_kernel(gout, rois, batch, scale, sampling_ratio, gin):
    """Deterministic: thread (b, c) owns gradient plane (b, c) and adds its rois in order."""
    N, C = gin.shape[0], gin.shape[1]
    K, PH, PW = gout.shape[0], gout.shape[2], gout.shape[3]
    for q in range(cuda.grid(1), N * C, cuda.gridsize(1)):
        b, c = q // C, q % C
        for k in range(K):
            if batch[k] == b:
                sh, sw, bh, bw, gh, gw, count = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                            scale, sampling_ratio, PH, PW)
                _roi_grad_d(gout, gin, k, b, c, sh, sw, bh, bw, gh, gw, count)


def roi_warp_cuda(input, rois, batch, output_size, spatial_scale, sampling_ratio):
    out, = launch_forward_cuda(_forward_cuda_kernel, input, rois, batch, output_size, spatial_scale, sampling_ratio)
    return out


def roi_warp_backward_cuda(grad_output, rois, batch, input_shape, spatial_scale, sampling_ratio):
    return launch_backward_cuda(_backward_cuda_kernel, grad_output, rois, batch, input_shape, spatial_scale,
                                sampling_ratio)


# ---- public entry points ------------------------------------------------------------------------
_IMPLS = {"numpy": roi_warp_numpy, "cpu": roi_warp_cpu, "cuda": roi_warp_cuda}
_BACKWARD_IMPLS = {"numpy": roi_warp_backward_numpy, "cpu": roi_warp_backward_cpu, "cuda": roi_warp_backward_cuda}


def roi_warp(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, *, backend=None):
    """RoIWarp: the box snapped to whole cells as :func:`minirc.ops.roi_pool` snaps it, then sampled and
    averaged as :func:`minirc.ops.roi_align` with ``aligned=False`` (the arguments are roi_align's).

    input: (N, C, H, W) float32/float64; boxes: (K, 5) [batch_index, x1, y1, x2, y2] in image pixels
    or a list of N arrays (L_i, 4) x1y1x2y2; output_size: int or (PH, PW);
    spatial_scale: feature size / image size (1/16 for a stride-16 map);
    sampling_ratio: samples per bin side, <= 0 for adaptive ceil(snapped roi size / pooled size).
    Returns (K, C, PH, PW) in the input dtype.
    """
    name = get_backend(backend)
    input, out_hw, scale, sampling_ratio, _, rois, batch = check_forward_args(input, boxes, output_size,
                                                                             spatial_scale, sampling_ratio)
    warp_geometry_numpy(rois, scale, sampling_ratio, out_hw)  # raises for rois past the limits
    if len(rois) == 0 or input.shape[1] == 0:
        return zeros_like_input((len(rois), input.shape[1]) + out_hw, input.dtype, input)
    check_feature_plane(input)
    return _IMPLS[name](input, rois, batch, out_hw, scale, sampling_ratio)


def roi_warp_backward(grad_output, boxes, input_shape, spatial_scale=1.0, sampling_ratio=-1, *, backend=None):
    """Gradient of :func:`roi_warp` w.r.t. its input (none w.r.t. the boxes, which are snapped).

    grad_output: (K, C, PH, PW); boxes as in :func:`roi_warp`; input_shape: (N, C, H, W).
    Returns (N, C, H, W) in grad_output's dtype.
    """
    name = get_backend(backend)
    grad_output, input_shape, rois, batch, scale, sampling_ratio, _ = check_backward_sampling_args(
        grad_output, boxes, input_shape, spatial_scale, sampling_ratio)
    if grad_output.size == 0 or 0 in input_shape:
        return zeros_like_input(input_shape, grad_output.dtype, grad_output)
    warp_geometry_numpy(rois, scale, sampling_ratio, tuple(grad_output.shape[2:]))
    return _BACKWARD_IMPLS[name](grad_output, rois, batch, input_shape, scale, sampling_ratio)
