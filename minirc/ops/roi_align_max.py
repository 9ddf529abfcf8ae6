"""RoIAlign with max aggregation (the Mask R-CNN paper's Table 2c row "RoIAlign, bilinear, max").

Shape shorthand: N images, C channels, H W feature size, K RoIs, PH PW pooled size.
Inputs:  input (N, C, H, W) float32/float64; boxes (K, 5) [batch_index, x1, y1, x2, y2] in image
         pixels (or a list of per-image (L, 4) x1y1x2y2 arrays); spatial_scale = feature/image size.
Outputs: (K, C, PH, PW) maxima and their argmax (K, C, PH, PW) int32: the winning sample's index
         iy * grid_w + ix inside its bin, -1 when no on-map sample won (what the backward needs).

The sample points are RoIAlign's (:mod:`minirc.ops.roi_align`, torchvision's geometry, ``aligned``
supported: no rounding anywhere); only the aggregation changes, from the mean of a bin's samples to
their max. Convention followed: mmcv's ``roi_align`` with ``pool_mode="max"``
(``mmcv/ops/csrc/common/cuda/roi_align_cuda_kernel.cuh``), with the empty bin defined:

* a sample off the map (outside [-1, H] x [-1, W]) has the value 0 and takes part in the max, as in
  the mean (a bin partly off the map of negative features therefore outputs 0); a sample on the map
  is its bilinear value, border pixels clamped (:mod:`minirc.ops._bilinear`);
* the running max starts at -FLT_MAX and only a strictly greater sample replaces it: ties keep the
  first sample in (iy, ix) order, NaN samples never win, a bin of -inf samples outputs -FLT_MAX;
* a bin whose winner is off the map (value 0) has argmax -1 and passes no gradient; a bin with no
  sample at all (an ``aligned=True`` roi of size <= 0: an empty grid) outputs 0, argmax -1.

The backward adds the bin's gradient times the bilinear weights w1..w4 of the argmax sample into
its four neighbours, in the order (roi, bin, neighbour) on every backend: bit-identical, deterministic.

Backends: numpy (per roi, the sample grid as arrays); cpu (forward: prange over rois on a
channels-last copy of the input, every channel's running max advancing together; backward: prange
over (image, channel) planes, rois in order); cuda (forward: one thread per output element;
backward: one thread per plane).
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array, to_device, to_host
from minirc.ops._bilinear import align_roi_geometry, bilinear_neighbours, for_cuda, sample_coord
from minirc.ops._roi_sampling import (align_geometry_numpy, channels_last, check_backward_sampling_args,
                                      check_feature_plane, check_forward_args, launch_backward_cuda,
                                      launch_forward_cuda, roi_sample_grid, sample_cells, sample_values)
from minirc.ops._rois import zeros_like_input

FLT_MAX = float(np.finfo(np.float32).max)  # the running max starts here, as RoIPool's, also for float64


# ---- NumPy reference ----------------------------------------------------------------------------
def roi_align_max_numpy(input, rois, batch, output_size, spatial_scale, sampling_ratio, aligned):
    input = to_host(input)
    (N, C, H, W), (PH, PW), K, T = input.shape, output_size, len(rois), input.dtype.type
    out = np.zeros((K, C, PH, PW), dtype=input.dtype)
    argmax = np.full((K, C, PH, PW), -1, dtype=np.int32)
    geometry = align_geometry_numpy(rois, spatial_scale, sampling_ratio, aligned, output_size)
    for k in range(K):
        valid, corners, weights, gh, gw = roi_sample_grid(geometry, k, output_size, H, W, T)
        if gh == 0 or gw == 0:
            continue  # no sample: 0, argmax -1
        values = sample_values(input[batch[k]], valid, corners, weights)  # (C, PH, gh, PW, gw), 0 off the map
        best = np.full((C, PH, PW), -FLT_MAX, dtype=input.dtype)
        idx = np.full((C, PH, PW), -1, dtype=np.int32)
        for iy in range(gh):  # samples in order; only a strictly greater one replaces the max
            for ix in range(gw):
                v = values[:, :, iy, :, ix]
                take = v > best
                best = np.where(take, v, best)
                idx = np.where(take, np.where(valid[:, iy, :, ix], iy * gw + ix, -1), idx)
        out[k], argmax[k] = best, idx
    return out, argmax


def roi_align_max_backward_numpy(grad_output, argmax, rois, batch, input_shape, spatial_scale, sampling_ratio,
                                 aligned):
    grad_output, argmax = to_host(grad_output), to_host(argmax)
    (N, C, H, W), (K, _, PH, PW), T = input_shape, grad_output.shape, grad_output.dtype.type
    grad = np.zeros(input_shape, dtype=grad_output.dtype)
    geometry = align_geometry_numpy(rois, spatial_scale, sampling_ratio, aligned, (PH, PW))
    for k in range(K):
        valid, corners, weights, gh, gw = roi_sample_grid(geometry, k, (PH, PW), H, W, T)
        for ph in range(PH):
            for pw in range(PW):
                a = argmax[k, :, ph, pw]
                chans = np.flatnonzero(a >= 0)
                if chans.size == 0:
                    continue
                s = (ph, a[chans] // gw, pw, a[chans] % gw)  # each channel's winning sample
                on_map = valid[s]
                chans, s = chans[on_map], (ph, s[1][on_map], pw, s[3][on_map])
                g = grad_output[k, chans, ph, pw]
                for (r, c), w in zip(corners, weights):  # neighbours in order; channels never repeat
                    grad[batch[k], chans, r[s], c[s]] += g * w[s]
    return grad


# ---- Numba CPU ------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _forward_cpu_kernel(feat_t, rois, batch, scale, aligned, sampling_ratio, H, W, PH, PW, out3, arg3):
    """prange over rois on the channels-last input feat_t (N, H*W, C): the running maxima of all
    channels advance together over each sample's four contiguous C-vectors (vectorised)."""
    C = feat_t.shape[2]
    lowest, zero = feat_t.dtype.type(-FLT_MAX), feat_t.dtype.type(0)
    for k in prange(rois.shape[0]):
        sh, sw, bh, bw, gh, gw, _ = align_roi_geometry(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                       scale, aligned, sampling_ratio, PH, PW)
        gh, gw = max(gh, 0), max(gw, 0)
        plane = feat_t[batch[k]]
        best, idx = np.empty(C, dtype=feat_t.dtype), np.empty(C, dtype=np.int32)
        for ph in range(PH):
            for pw in range(PW):
                best[:] = zero if gh * gw == 0 else lowest
                idx[:] = -1
                for iy in range(gh):
                    for ix in range(gw):
                        v, p1, p2, p3, p4, w1, w2, w3, w4 = sample_cells(sh, sw, bh, bw, gh, gw, ph, pw, iy, ix, H, W)
                        if v:
                            s = np.int32(iy * gw + ix)
                            v1, v2, v3, v4 = plane[p1], plane[p2], plane[p3], plane[p4]
                            for c in range(C):
                                val = w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c]
                                take = val > best[c]
                                best[c] = val if take else best[c]
                                idx[c] = s if take else idx[c]
                        else:  # off the map: the value 0, no gradient
                            for c in range(C):
                                take = zero > best[c]
                                best[c] = zero if take else best[c]
                                idx[c] = -1 if take else idx[c]
                for c in range(C):
                    out3[k, c, ph * PW + pw] = best[c]
                    arg3[k, c, ph * PW + pw] = idx[c]


@njit(cache=True)
def _add_plane_grad(gout, rois, batch, scale, aligned, sampling_ratio, argmax, gin, q):
    """Gradient plane q = (b, c) of gin (N, C, H, W): the rois of image b in order, their bins in order,
    each adding its gradient times the weights w1..w4 of its argmax sample into that sample's four
    neighbours. The whole backward of one thread, on the cpu and on cuda."""
    N, C, H, W = gin.shape
    K, PH, PW = gout.shape[0], gout.shape[2], gout.shape[3]
    b, c = q // C, q % C
    for k in range(K):
        if batch[k] != b:
            continue
        sh, sw, bh, bw, gh, gw, _ = align_roi_geometry(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                       scale, aligned, sampling_ratio, PH, PW)
        for ph in range(PH):
            for pw in range(PW):
                a = argmax[k, c, ph, pw]
                if a < 0:
                    continue
                y = sample_coord(sh, ph, bh, a // gw, gh)
                x = sample_coord(sw, pw, bw, a % gw, gw)
                v, yl, xl, yh, xh, w1, w2, w3, w4 = bilinear_neighbours(y, x, H, W)
                if v:
                    g = gout[k, c, ph, pw]
                    gin[b, c, yl, xl] += g * w1
                    gin[b, c, yl, xh] += g * w2
                    gin[b, c, yh, xl] += g * w3
                    gin[b, c, yh, xh] += g * w4


@njit(cache=True, parallel=True)
def _backward_cpu_kernel(gout, rois, batch, scale, aligned, sampling_ratio, argmax, gin):
    """Thread (b, c) owns gradient plane (b, c) (:func:`_add_plane_grad`): race-free, deterministic."""
    for q in prange(gin.shape[0] * gin.shape[1]):
        _add_plane_grad(gout, rois, batch, scale, aligned, sampling_ratio, argmax, gin, q)


def roi_align_max_cpu(input, rois, batch, output_size, spatial_scale, sampling_ratio, aligned):
    feat = to_host(input)
    (N, C, H, W), (PH, PW), K = feat.shape, output_size, len(rois)
    out = np.empty((K, C, PH, PW), dtype=feat.dtype)
    argmax = np.empty((K, C, PH, PW), dtype=np.int32)
    _forward_cpu_kernel(channels_last(feat), rois, batch, feat.dtype.type(spatial_scale), aligned, sampling_ratio,
                        H, W, PH, PW, out.reshape(K, C, PH * PW), argmax.reshape(K, C, PH * PW))
    return out, argmax


def roi_align_max_backward_cpu(grad_output, argmax, rois, batch, input_shape, spatial_scale, sampling_ratio,
                               aligned):
    gout, arg = np.ascontiguousarray(to_host(grad_output)), np.ascontiguousarray(to_host(argmax))
    grad = np.zeros(input_shape, dtype=gout.dtype)
    _backward_cpu_kernel(gout, rois, batch, gout.dtype.type(spatial_scale), aligned, sampling_ratio, arg, grad)
    return grad


# ---- Numba CUDA -----------------------------------------------------------------------------------
_geometry_d, _coord_d, _bilinear_d = (for_cuda(f) for f in (align_roi_geometry, sample_coord, bilinear_neighbours))
_plane_grad_d = for_cuda(_add_plane_grad)


@cuda.jit
def _forward_cuda_kernel(feat, rois, batch, scale, aligned, sampling_ratio, out, argmax):
    K, C, PH, PW = out.shape
    H, W = feat.shape[2], feat.shape[3]
    for i in range(cuda.grid(1), K * C * PH * PW, cuda.gridsize(1)):  # one output element per thread
        pw, ph, c, k = i % PW, (i // PW) % PH, (i // (PW * PH)) % C, i // (PW * PH * C)
        sh, sw, bh, bw, gh, gw, cnt = _geometry_d(rois[k, 1], rois[k, 2], rois[k, 3], rois[k, 4],
                                                  scale, aligned, sampling_ratio, PH, PW)
        T = type(cnt)
        gh, gw = max(gh, 0), max(gw, 0)
        b = batch[k]
        best = T(0.0) if gh * gw == 0 else T(-FLT_MAX)
        idx = -1
        for iy in range(gh):
            y = _coord_d(sh, ph, bh, iy, gh)
            for ix in range(gw):
                x = _coord_d(sw, pw, bw, ix, gw)
                v, yl, xl, yh, xh, w1, w2, w3, w4 = _bilinear_d(y, x, H, W)
                val = T(0.0)
                if v:
                    val = (w1 * feat[b, c, yl, xl] + w2 * feat[b, c, yl, xh]
                           + w3 * feat[b, c, yh, xl] + w4 * feat[b, c, yh, xh])
                if val > best:
                    best = val
                    idx = iy * gw + ix if v else -1
        out[k, c, ph, pw] = best
        argmax[k, c, ph, pw] = idx


@cuda.jit
def _backward_cuda_kernel(gout, rois, batch, scale, aligned, sampling_ratio, argmax, gin):
    """Deterministic: thread (b, c) owns gradient plane (b, c) (:func:`_add_plane_grad`, as on the cpu)."""
    for q in range(cuda.grid(1), gin.shape[0] * gin.shape[1], cuda.gridsize(1)):
        _plane_grad_d(gout, rois, batch, scale, aligned, sampling_ratio, argmax, gin, q)


def roi_align_max_cuda(input, rois, batch, output_size, spatial_scale, sampling_ratio, aligned):
    return launch_forward_cuda(_forward_cuda_kernel, input, rois, batch, output_size, spatial_scale,
                               aligned, sampling_ratio, argmax=True)


def roi_align_max_backward_cuda(grad_output, argmax, rois, batch, input_shape, spatial_scale, sampling_ratio,
                                aligned):
    return launch_backward_cuda(_backward_cuda_kernel, grad_output, rois, batch, input_shape, spatial_scale,
                                aligned, sampling_ratio, to_device(argmax))


# ---- public entry points ------------------------------------------------------------------------
_IMPLS = {"numpy": roi_align_max_numpy, "cpu": roi_align_max_cpu, "cuda": roi_align_max_cuda}
_BACKWARD_IMPLS = {"numpy": roi_align_max_backward_numpy, "cpu": roi_align_max_backward_cpu,
                   "cuda": roi_align_max_backward_cuda}


def roi_align_max(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False, *,
                  return_argmax=False, backend=None):
    """RoIAlign's sample points, each bin the max of its samples (mmcv's ``roi_align(pool_mode="max")``).

    input: (N, C, H, W) float32/float64; boxes: (K, 5) [batch_index, x1, y1, x2, y2] in image pixels
    or a list of N arrays (L_i, 4) x1y1x2y2; output_size: int or (PH, PW);
    spatial_scale: feature size / image size; sampling_ratio: samples per bin side, <= 0 adaptive;
    aligned: False = torchvision's legacy pixel model, True = detectron2's half-pixel shift.
    Returns (K, C, PH, PW) in the input dtype, or ``(output, argmax)`` with ``return_argmax=True``
    (argmax: int32 index iy * grid_w + ix of the winning sample in its bin, -1 for no gradient).
    """
    name = get_backend(backend)
    input, out_hw, scale, sampling_ratio, aligned, rois, batch = check_forward_args(
        input, boxes, output_size, spatial_scale, sampling_ratio, aligned)
    align_geometry_numpy(rois, scale, sampling_ratio, aligned, out_hw)  # raises for rois past the limits
    if len(rois) == 0 or input.shape[1] == 0:
        shape = (len(rois), input.shape[1]) + out_hw
        out, arg = zeros_like_input(shape, input.dtype, input), zeros_like_input(shape, np.int32, input)
    else:
        check_feature_plane(input)
        out, arg = _IMPLS[name](input, rois, batch, out_hw, scale, sampling_ratio, aligned)
    return (out, arg) if return_argmax else out


def _check_argmax(argmax, grad_output, grid_h, grid_w):
    """argmax: the int array the forward returned; every entry -1 or a sample of its roi's grid."""
    argmax = _checks.as_array(argmax, "argmax", ndim=4)
    if tuple(argmax.shape) != tuple(grad_output.shape):
        raise ValueError(f"argmax: expected the shape of grad_output {tuple(grad_output.shape)}, "
                         f"got {tuple(argmax.shape)}")
    host = to_host(argmax)
    if host.dtype.kind not in "iu":
        raise TypeError(f"argmax: expected the int32 array roi_align_max returned, got dtype {host.dtype}")
    count = (grid_h * grid_w)[:, None, None, None]
    bad = np.flatnonzero(((host < -1) | (host >= count)).any(axis=(1, 2, 3)))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"argmax: roi {k} has {int(count[k, 0, 0, 0])} samples per bin, so entries must lie "
                         f"in [-1, {int(count[k, 0, 0, 0])}); got values in [{int(host[k].min())}, "
                         f"{int(host[k].max())}] ({bad.size} bad roi(s))")
    return argmax if is_device_array(argmax) else host.astype(np.int32, copy=False)


def roi_align_max_backward(grad_output, argmax, boxes, input_shape, spatial_scale=1.0, sampling_ratio=-1,
                           aligned=False, *, backend=None):
    """Gradient of :func:`roi_align_max` w.r.t. its input: each bin's gradient, times the bilinear
    weights of its argmax sample, into that sample's four neighbours.

    grad_output, argmax: (K, C, PH, PW) (argmax from ``roi_align_max(..., return_argmax=True)``);
    boxes, spatial_scale, sampling_ratio, aligned: as given to the forward; input_shape: (N, C, H, W).
    Returns (N, C, H, W) in grad_output's dtype.
    """
    name = get_backend(backend)
    grad_output, input_shape, rois, batch, scale, sampling_ratio, aligned = check_backward_sampling_args(
        grad_output, boxes, input_shape, spatial_scale, sampling_ratio, aligned)
    if grad_output.size == 0 or 0 in input_shape:
        return zeros_like_input(input_shape, grad_output.dtype, grad_output)
    *_, grid_h, grid_w = align_geometry_numpy(rois, scale, sampling_ratio, aligned, tuple(grad_output.shape[2:]))
    argmax = _check_argmax(argmax, grad_output, grid_h, grid_w)
    return _BACKWARD_IMPLS[name](grad_output, argmax, rois, batch, input_shape, scale, sampling_ratio, aligned)
