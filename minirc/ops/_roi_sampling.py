"""What roi_align, roi_warp and roi_align_max share: argument checks, the per-roi sample grid and its
limit, the NumPy reference of bilinear sampling over one roi, pieces of their cpu and cuda kernels,
and the host code around the kernels (channels-last copies, launches).

All three read a roi's bins at bilinear sample points (the per-sample math of
:mod:`minirc.ops._bilinear`, torchvision's border rule); roi_warp differs from RoIAlign only in where
the roi starts (it snaps it to whole cells first), roi_align_max only in how a bin aggregates its
samples (the max). A sample outside ``[-1, H] x [-1, W]`` is *off the map*: it passes no gradient,
and in roi_warp and roi_align_max its value is exactly 0 (it reads no pixel; roi_align's forward, as
torchvision's, reads pixel 0 with weight 0 there).

Limits (checked in Python before any kernel runs, so nothing inside a kernel can wrap or hang):
``MAX_SAMPLES_PER_ROI`` samples per roi (PH * PW * grid_h * grid_w, the loop count of one roi),
``_checks.MAX_ELEMENTS`` elements in the output; roi_warp's snapped cells obey roi_pool's
``MAX_CELL`` (docs/conventions.md, "Limits").
"""
from __future__ import annotations

import numbers

import numba
import numpy as np
from numba import njit

from minirc import _checks
from minirc.cuda_utils import blocks_for, device_zeros, like_input, to_device
from minirc.ops._bilinear import bilinear_neighbours, sample_coord
from minirc.ops._rois import check_backward_args, check_pool_args, check_rois, check_spatial_scale

# Samples of one roi (PH * PW * grid_h * grid_w): the cpu sample table of one roi has this many rows,
# and a cuda thread loops over grid_h * grid_w of them. 2**24 is an adaptive roi of about
# 4096 x 4096 feature cells.
MAX_SAMPLES_PER_ROI = 1 << 24


# ---- arguments ------------------------------------------------------------------------------------
def check_sampling_ratio(sampling_ratio) -> int:
    if not isinstance(sampling_ratio, numbers.Integral) or isinstance(sampling_ratio, bool):
        raise TypeError(f"sampling_ratio: expected an int (<= 0 means adaptive), got {sampling_ratio!r}")
    return int(sampling_ratio)


def check_aligned(aligned) -> bool:
    if not isinstance(aligned, (bool, np.bool_)):
        raise TypeError(f"aligned: expected a bool, got {aligned!r}")
    return bool(aligned)


def check_forward_args(input, boxes, output_size, spatial_scale, sampling_ratio, aligned=False):
    """A sampling op's forward arguments, checked in this order: input (N, C, H, W) float, output_size,
    spatial_scale, sampling_ratio, aligned, the boxes (as (K, 5) rois in the input's dtype), and the
    element count of the output (K, C, PH, PW).

    Returns (input, (PH, PW), spatial_scale, sampling_ratio, aligned, rois, batch).
    """
    input, out_hw, scale = check_pool_args(input, output_size, spatial_scale)
    sampling_ratio, aligned = check_sampling_ratio(sampling_ratio), check_aligned(aligned)
    rois, batch = check_rois(boxes, input.shape[0], input.dtype)
    _checks.elements((len(rois), input.shape[1]) + out_hw, "output_size", "the output (K, C, PH, PW)")
    return input, out_hw, scale, sampling_ratio, aligned, rois, batch


def check_backward_sampling_args(grad_output, boxes, input_shape, spatial_scale, sampling_ratio, aligned=False):
    """A sampling op's backward arguments, checked: grad_output (K, C, PH, PW) with boxes and input_shape
    (:func:`minirc.ops._rois.check_backward_args`), then spatial_scale, sampling_ratio, aligned.

    Returns (grad_output, input_shape, rois, batch, spatial_scale, sampling_ratio, aligned).
    """
    grad_output, input_shape, rois, batch = check_backward_args(grad_output, boxes, input_shape)
    scale = check_spatial_scale(spatial_scale)
    sampling_ratio, aligned = check_sampling_ratio(sampling_ratio), check_aligned(aligned)
    return grad_output, input_shape, rois, batch, scale, sampling_ratio, aligned


def check_feature_plane(input) -> None:
    """Raise ValueError for an (N, C, H, W) input with H or W = 0: there is no pixel to sample."""
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(f"input: expected a feature map with H, W >= 1 to pool from, "
                         f"got shape {tuple(input.shape)}")


def grid_sizes(roi_h, roi_w, output_size, sampling_ratio, rois, spatial_scale, usable=None):
    """(K,) int64 grid_h, grid_w from the roi sizes in cells (K,) in the input dtype, checked.

    Adaptive (sampling_ratio <= 0): ceil(roi size / pooled size) per side, computed in the input
    dtype as the kernels compute it; a grid side <= 0 (an empty aligned roi) is an empty grid (0).
    Raises ValueError when one roi would loop over more than MAX_SAMPLES_PER_ROI samples, or (adaptive
    only) is False in ``usable``, an optional (K,) bool mask of rois whose coordinates can be sampled.
    """
    (ph, pw), K, limit = output_size, len(roi_h), MAX_SAMPLES_PER_ROI
    if ph * pw > limit:
        raise ValueError(f"output_size: {(ph, pw)} makes {ph * pw} bins per roi; the limit is {limit} "
                         f"samples per roi")
    if sampling_ratio > 0:
        n = ph * pw * sampling_ratio * sampling_ratio
        if n > limit:
            raise ValueError(f"sampling_ratio: {sampling_ratio} with output_size {(ph, pw)} makes {n} "
                             f"samples per roi; the limit is {limit}")
        return np.full(K, sampling_ratio, np.int64), np.full(K, sampling_ratio, np.int64)
    T = roi_h.dtype.type
    with np.errstate(over="ignore", invalid="ignore"):
        gh = np.maximum(np.ceil(roi_h / T(ph)).astype(np.float64), 0)
        gw = np.maximum(np.ceil(roi_w / T(pw)).astype(np.float64), 0)
        n = float(ph * pw) * gh * gw
    ok = np.isfinite(n) & (n <= limit)
    bad = np.flatnonzero(~(ok if usable is None else usable & ok))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"boxes: roi {k} {rois[k].tolist()} with spatial_scale {spatial_scale} and "
                         f"output_size {(ph, pw)} needs {float(n[k]):.4g} samples (adaptive sampling: "
                         f"ceil(bin size) per bin side); the limit is {limit} per roi ({bad.size} roi(s) "
                         f"over it): clip the boxes to the image, or pass sampling_ratio > 0")
    return gh.astype(np.int64), gw.astype(np.int64)


def align_geometry_numpy(rois, spatial_scale, sampling_ratio, aligned, output_size, finite_only=False):
    """All rois' RoIAlign geometry as (K,) arrays: start_h, start_w, bin_h, bin_w in T; grid_h, grid_w
    int64 (0 for an empty grid). :func:`align_roi_geometry`, vectorised in the same dtype, checked by
    :func:`grid_sizes`; with ``finite_only`` adaptive sampling also refuses a roi whose scaled corners
    overflow T (roi_align's rule)."""
    T, (PH, PW) = rois.dtype.type, output_size
    off = T(0.5) if aligned else T(0)
    with np.errstate(over="ignore", invalid="ignore"):
        x1, y1, x2, y2 = (rois[:, j] * T(spatial_scale) - off for j in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # legacy: at least one cell
            roi_w, roi_h = np.maximum(roi_w, T(1)), np.maximum(roi_h, T(1))
    usable = np.isfinite(x1) & np.isfinite(y1) & np.isfinite(x2) & np.isfinite(y2) if finite_only else None
    grid_h, grid_w = grid_sizes(roi_h, roi_w, output_size, sampling_ratio, rois, spatial_scale, usable)
    return y1, x1, roi_h / T(PH), roi_w / T(PW), grid_h, grid_w


# ---- NumPy reference of the sampling ----------------------------------------------------------
def axis_samples(start, bin_size, grid, pooled, size, T):
    """Sample coordinates along one axis, as (pooled, grid) arrays: valid, low, high, and the weights
    of low and high. Torchvision's order of operations and border rule (minirc.ops._bilinear)."""
    p = np.arange(pooled, dtype=T)[:, None]
    i = np.arange(grid, dtype=T)[None, :]
    c = (start + p * bin_size) + ((i + T(0.5)) * bin_size) / T(grid)
    valid = (c >= -1.0) & (c <= size)                 # else: off the map
    c = np.where(valid & (c > 0), c, T(0))            # [-1, 0] reads index 0
    low = c.astype(np.int64)
    edge = low >= size - 1                            # [H-1, H] reads index H-1
    low = np.where(edge, size - 1, low)
    high = np.where(edge, low, low + 1)
    c = np.where(edge, low.astype(T), c)
    frac = c - low.astype(T)
    return valid, low, high, T(1) - frac, frac


def sample_grid(start_h, start_w, bin_h, bin_w, grid_h, grid_w, output_size, H, W, T):
    """Every sample of one roi, as (PH, grid_h, PW, grid_w) arrays: (valid, corners, weights).

    corners: the four (row, col) index arrays, weights: the four bilinear weights (0 off the map),
    ordered (low, low), (low, high), (high, low), (high, high) as torchvision's w1..w4.
    """
    PH, PW = output_size
    vy, yl, yh, hy, ly = axis_samples(start_h, bin_h, grid_h, PH, H, T)
    vx, xl, xh, hx, lx = axis_samples(start_w, bin_w, grid_w, PW, W, T)

    def rows(a):
        return a[:, :, None, None]

    def cols(a):
        return a[None, None, :, :]

    valid = rows(vy) & cols(vx)
    weights = [np.where(valid, rows(a) * cols(b), T(0)) for a, b in ((hy, hx), (hy, lx), (ly, hx), (ly, lx))]
    corners = [tuple(np.broadcast_arrays(rows(r), cols(c))) for r, c in ((yl, xl), (yl, xh), (yh, xl), (yh, xh))]
    return valid, corners, weights


def sample_values(feat, valid, corners, weights):
    """The bilinear values (C, PH, grid_h, PW, grid_w) of the samples over feat (C, H, W), 0 off the map."""
    with np.errstate(invalid="ignore"):  # 0 * inf is NaN here as in the kernels' float arithmetic
        terms = [w * feat[:, r, c] for (r, c), w in zip(corners, weights)]
        values = terms[0] + terms[1] + terms[2] + terms[3]  # left to right, as the kernels
    return np.where(valid, values, feat.dtype.type(0))


def roi_sample_grid(geometry, k, output_size, H, W, T):
    """Roi k's samples from the (K,) geometry arrays (start_h, start_w, bin_h, bin_w, grid_h, grid_w):
    (valid, corners, weights) as :func:`sample_grid`, then grid_h and grid_w as ints."""
    sh, sw, bh, bw, gh, gw = (a[k] for a in geometry)
    valid, corners, weights = sample_grid(sh, sw, bh, bw, int(gh), int(gw), output_size, H, W, T)
    return valid, corners, weights, int(gh), int(gw)


def add_mean_grad_numpy(grad, grad_roi, valid, corners, weights, grid):
    """The backward of a bin's mean for one roi: grad (C, H, W) += grad_roi[:, bin] * w / (grid_h * grid_w)
    into the four neighbours of every on-map sample, in the kernels' order (bin, sample, neighbour).

    grad_roi: (C, PH, PW); valid, corners, weights: (PH, grid_h, PW, grid_w) as :func:`sample_grid`.
    """
    (gh, gw), (_, PH, PW) = grid, grad_roi.shape
    count = grad.dtype.type(gh * gw)
    for ph in range(PH):
        for pw in range(PW):
            g = grad_roi[:, ph, pw]
            for iy in range(gh):
                for ix in range(gw):
                    s = (ph, iy, pw, ix)
                    if valid[s]:  # off-map samples pass no gradient
                        for (r, c), w in zip(corners, weights):
                            grad[:, r[s], c[s]] += g * w[s] / count


# ---- cpu: a kernel piece and the channels-last copies ---------------------------------------------
@njit(cache=True)
def sample_cells(sh, sw, bh, bw, gh, gw, ph, pw, iy, ix, H, W):
    """Sample (iy, ix) of bin (ph, pw) of a roi whose geometry is sh, sw, bh, bw, gh, gw: (on_map, its
    four neighbours as cells y * W + x of a channels-last (H * W, C) plane, their weights w1..w4), as
    :func:`minirc.ops._bilinear.bilinear_neighbours` at :func:`minirc.ops._bilinear.sample_coord`."""
    y = sample_coord(sh, ph, bh, iy, gh)
    x = sample_coord(sw, pw, bw, ix, gw)
    v, yl, xl, yh, xh, w1, w2, w3, w4 = bilinear_neighbours(y, x, H, W)
    return v, yl * W + xl, yl * W + xh, yh * W + xl, yh * W + xh, w1, w2, w3, w4


def channels_last(x):
    """(N, C, H, W) -> a contiguous (N, H * W, C) copy: a pixel's C values side by side, so the kernels'
    loops over channels read (and write) one contiguous run and vectorise."""
    N, C, H, W = x.shape
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).reshape(N, H * W, C)


def from_channels_last(x_t, shape):
    """The (N, H * W, C) array of :func:`channels_last` back as a contiguous (N, C, H, W) = shape array."""
    N, C, H, W = shape
    return np.ascontiguousarray(x_t.reshape(N, H, W, C).transpose(0, 3, 1, 2))


def channel_blocks(C: int) -> int:
    """How many blocks of channels a cpu backward splits C into, one per thread: runs of >= 16
    channels (one AVX-512 vector of float32), at most the number of threads."""
    return max(1, min(C // 16, numba.get_num_threads()))


# ---- cuda: kernel pieces and the host side -------------------------------------------------------------
@njit(cache=True)
def add_roi_mean_grad(gout, gin, k, b, c, sh, sw, bh, bw, gh, gw, count):
    """The backward of roi k's bin means into the gradient plane (b, c) of gin (N, C, H, W): every
    on-map sample of every bin adds gout[k, c, bin] * w / count into its four neighbours, in the order
    (bin, sample, neighbour). sh, sw, bh, bw, gh, gw: the roi's geometry (T, T, T, T, int, int).

    Called by the deterministic cuda kernels (through :func:`minirc.ops._bilinear.for_cuda`).
    """
    H, W = gin.shape[2], gin.shape[3]
    PH, PW = gout.shape[2], gout.shape[3]
    for ph in range(PH):
        for pw in range(PW):
            g = gout[k, c, ph, pw]
            for iy in range(gh):
                y = sample_coord(sh, ph, bh, iy, gh)
                for ix in range(gw):
                    x = sample_coord(sw, pw, bw, ix, gw)
                    v, yl, xl, yh, xh, w1, w2, w3, w4 = bilinear_neighbours(y, x, H, W)
                    if v:
                        gin[b, c, yl, xl] += g * w1 / count
                        gin[b, c, yl, xh] += g * w2 / count
                        gin[b, c, yh, xl] += g * w3 / count
                        gin[b, c, yh, xh] += g * w4 / count


def launch_forward_cuda(kernel, input, rois, batch, output_size, spatial_scale, *args, argmax=False):
    """``kernel(input, rois, batch, spatial_scale, *args, out[, argmax])`` on the device, one thread per
    output element; out (K, C, PH, PW) in the input dtype and argmax int32 start zeroed.

    spatial_scale is passed in the input dtype; the results come back where the input lives.
    Returns (out,) or (out, argmax).
    """
    d_in = to_device(input)
    shape = (len(rois), d_in.shape[1]) + tuple(output_size)
    outs = (device_zeros(shape, d_in.dtype),) + ((device_zeros(shape, np.int32),) if argmax else ())
    kernel[blocks_for(outs[0].size), 256](d_in, to_device(rois), to_device(batch),
                                          d_in.dtype.type(spatial_scale), *args, *outs)
    return tuple(like_input(o, input) for o in outs)


def launch_backward_cuda(kernel, grad_output, rois, batch, input_shape, spatial_scale, *args, threads=None):
    """``kernel(grad_output, rois, batch, spatial_scale, *args, grad)`` on the device into a zeroed
    grad (N, C, H, W) = input_shape, one thread per (image, channel) plane unless ``threads`` says.

    spatial_scale is passed in grad_output's dtype; the gradient comes back where grad_output lives.
    """
    d_g = to_device(grad_output)
    grad = device_zeros(tuple(input_shape), d_g.dtype)
    n = input_shape[0] * input_shape[1] if threads is None else threads
    kernel[blocks_for(n), 256](d_g, to_device(rois), to_device(batch), d_g.dtype.type(spatial_scale), *args, grad)
    return like_input(grad, grad_output)
