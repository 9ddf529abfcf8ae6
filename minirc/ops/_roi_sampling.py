"""What roi_warp and roi_align_max share: argument checks, the per-roi sample grid and its limits,
and the NumPy reference of bilinear sampling over one roi.

Both ops read a roi's bins at bilinear sample points exactly as RoIAlign does (the per-sample math of
:mod:`minirc.ops._bilinear`, torchvision's border rule); they differ from RoIAlign only in where the
roi starts (roi_warp snaps it to whole cells first) or in how a bin aggregates its samples
(roi_align_max takes the max). A sample outside ``[-1, H] x [-1, W]`` is *off the map*: its value is
exactly 0 (it reads no pixel) and it passes no gradient.

Limits (checked in Python before any kernel runs, so nothing inside a kernel can wrap or hang):
``MAX_SAMPLES_PER_ROI`` samples per roi (PH * PW * grid_h * grid_w, the loop count of one roi),
``MAX_ELEMENTS`` elements in the output, ``MAX_CELL`` for a box coordinate times spatial_scale
where a kernel converts it to an integer cell. The values are those of roi_align and roi_pool.
"""
from __future__ import annotations

import numbers

import numpy as np

from minirc import _checks

MAX_SAMPLES_PER_ROI = 1 << 24  # an adaptive roi of about 4096 x 4096 feature cells
MAX_ELEMENTS = 2**31 - 1       # elements of the output (K, C, PH, PW) (int32 flat indices stay valid)
MAX_CELL = 2**31 - 1           # |coordinate * spatial_scale| where it is rounded to an int cell


def check_sampling_ratio(sampling_ratio) -> int:
    if not isinstance(sampling_ratio, numbers.Integral) or isinstance(sampling_ratio, bool):
        raise TypeError(f"sampling_ratio: expected an int (<= 0 means adaptive), got {sampling_ratio!r}")
    return int(sampling_ratio)


def check_aligned(aligned) -> bool:
    if not isinstance(aligned, (bool, np.bool_)):
        raise TypeError(f"aligned: expected a bool, got {aligned!r}")
    return bool(aligned)


def check_output_elements(shape) -> None:
    count = 1
    for s in shape:
        count *= int(s)
    if count > MAX_ELEMENTS:
        raise ValueError(f"output_size: the output (K, C, PH, PW) of shape {tuple(shape)} would hold {count} "
                         f"elements; the limit is {MAX_ELEMENTS}")


def grid_sizes(roi_h, roi_w, output_size, sampling_ratio, rois, spatial_scale):
    """(K,) int64 grid_h, grid_w from the roi sizes in cells (K,) in the input dtype, checked.

    Adaptive (sampling_ratio <= 0): ceil(roi size / pooled size) per side, computed in the input
    dtype as the kernels compute it; a grid side <= 0 (an empty aligned roi) is an empty grid (0).
    Raises ValueError when one roi would loop over more than MAX_SAMPLES_PER_ROI samples.
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
    bad = np.flatnonzero(~(np.isfinite(n) & (n <= limit)))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"boxes: roi {k} {rois[k].tolist()} with spatial_scale {spatial_scale} and "
                         f"output_size {(ph, pw)} needs {float(n[k]):.4g} samples (adaptive sampling: "
                         f"ceil(bin size) per bin side); the limit is {limit} per roi ({bad.size} roi(s) "
                         f"over it): clip the boxes to the image, or pass sampling_ratio > 0")
    return gh.astype(np.int64), gw.astype(np.int64)


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


def check_spatial_scale(spatial_scale) -> float:
    scale = _checks.number(spatial_scale, "spatial_scale", low=0.0)
    if scale == 0.0 or not np.isfinite(scale):
        raise ValueError(f"spatial_scale: expected a finite number > 0, got {spatial_scale!r}")
    return scale
