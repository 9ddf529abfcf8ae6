"""Differentiable RoIAlign and RoIPool (``torchvision.ops.roi_align`` / ``roi_pool``), and the two
variants of the Mask R-CNN paper's Table 2c: RoIWarp and RoIAlign with max aggregation.

Gradients flow into the feature map only: the boxes are constants (proposals and ground truth
are computed outside the tape, as in torchvision, which has no gradient w.r.t. rois either).
The kernels live in :mod:`minirc.ops.roi_align`, :mod:`minirc.ops.roi_pool`,
:mod:`minirc.ops.roi_warp` and :mod:`minirc.ops.roi_align_max`; the backward
runs on the backend the forward used and is deterministic (see those modules).
"""
from __future__ import annotations

from minirc.autograd import Function, Tensor
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops.roi_align import roi_align as _roi_align
from minirc.ops.roi_align import roi_align_backward as _roi_align_backward
from minirc.ops.roi_pool import roi_pool as _roi_pool
from minirc.ops.roi_align_max import roi_align_max as _roi_align_max
from minirc.ops.roi_align_max import roi_align_max_backward as _roi_align_max_backward
from minirc.ops.roi_pool import roi_pool_backward as _roi_pool_backward
from minirc.ops.roi_warp import roi_warp as _roi_warp
from minirc.ops.roi_warp import roi_warp_backward as _roi_warp_backward
from minirc.ops._rois import check_rois


def _as_rois(input, boxes):
    """(K, 5) host rois in the input's dtype from a (K, 5) array/Tensor or a list of (L, 4) boxes."""
    data = input.data if isinstance(input, Tensor) else input
    if isinstance(boxes, (list, tuple)):
        boxes = [b.data if isinstance(b, Tensor) else b for b in boxes]
    elif isinstance(boxes, Tensor):
        boxes = boxes.data
    if len(getattr(data, "shape", ())) != 4:
        raise ValueError(f"input: expected an (N, C, H, W) feature map, got shape {tuple(getattr(data, 'shape', ()))}")
    return check_rois(boxes, data.shape[0], data.dtype)[0]


def _in_rois_dtype(ctx, grad_out):
    """A host grad_out cast to the dtype of the forward (the rois were cast to the input's dtype)."""
    return grad_out if is_device_array(grad_out) else grad_out.astype(ctx.rois.dtype, copy=False)


def _save_for_backward(ctx, input, rois, *args):
    """What every pooling backward needs: the rois, the input's shape, the op's remaining arguments."""
    ctx.rois, ctx.input_shape, ctx.args = rois, tuple(input.shape), args


def _input_grad(ctx, grad_out, backward, *before_rois):
    """A pooling Function's gradients: for the input, ``backward(grad_out, *before_rois, rois, input_shape,
    *ctx.args)`` on the forward's backend (grad_out in the forward's dtype); none for the rois."""
    if not ctx.needs_grad[0]:
        return None, None
    grad_out = _in_rois_dtype(ctx, grad_out)
    return backward(grad_out, *before_rois, ctx.rois, ctx.input_shape, *ctx.args, backend=ctx.backend), None


class RoIAlign(Function):
    @staticmethod
    def forward(ctx, input, rois, output_size=7, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        ctx.backend = get_backend()
        _save_for_backward(ctx, input, rois, spatial_scale, sampling_ratio, aligned)
        return _roi_align(input, rois, output_size, spatial_scale, sampling_ratio, aligned,
                                backend=ctx.backend)

    @staticmethod
    def backward(ctx, grad_out):
        return _input_grad(ctx, grad_out, _roi_align_backward)


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign of ``input`` (N, C, H, W) Tensor over ``boxes``: (K, 5) [batch_index, x1, y1, x2, y2]
    or a list of per-image (L, 4) boxes, in image pixels. Returns a (K, C, PH, PW) Tensor.

    spatial_scale: feature size / image size; sampling_ratio <= 0: adaptive; aligned: see
    :func:`minirc.ops.roi_align` and docs/pixel_model.md.
    """
    rois = _as_rois(input, boxes)
    return RoIAlign.apply(input, rois, output_size=output_size, spatial_scale=spatial_scale,
                          sampling_ratio=sampling_ratio, aligned=aligned)


class RoIPool(Function):
    @staticmethod
    def forward(ctx, input, rois, output_size=7, spatial_scale=1.0):
        ctx.backend = get_backend()
        out, ctx.argmax = _roi_pool(input, rois, output_size, spatial_scale, return_argmax=True,
                                         backend=ctx.backend)
        _save_for_backward(ctx, input, rois)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _input_grad(ctx, grad_out, _roi_pool_backward, ctx.argmax)


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """RoIPool (max over integer bins after rounding the box to cells) of ``input`` (N, C, H, W)
    over ``boxes`` (K, 5) or a list of per-image (L, 4) boxes. Returns a (K, C, PH, PW) Tensor;
    the gradient goes to the argmax cell of every bin."""
    rois = _as_rois(input, boxes)
    return RoIPool.apply(input, rois, output_size=output_size, spatial_scale=spatial_scale)


class RoIWarp(Function):
    @staticmethod
    def forward(ctx, input, rois, output_size=7, spatial_scale=1.0, sampling_ratio=-1):
        ctx.backend = get_backend()
        _save_for_backward(ctx, input, rois, spatial_scale, sampling_ratio)
        return _roi_warp(input, rois, output_size, spatial_scale, sampling_ratio, backend=ctx.backend)

    @staticmethod
    def backward(ctx, grad_out):
        return _input_grad(ctx, grad_out, _roi_warp_backward)


def roi_warp(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1):
    """RoIWarp (the box snapped to whole cells as RoIPool snaps it, then RoIAlign's bilinear samples
    averaged, ``aligned=False``) of ``input`` (N, C, H, W) over ``boxes`` (K, 5) or a list of
    per-image (L, 4) boxes. Returns a (K, C, PH, PW) Tensor. See :func:`minirc.ops.roi_warp`."""
    rois = _as_rois(input, boxes)
    return RoIWarp.apply(input, rois, output_size=output_size, spatial_scale=spatial_scale,
                         sampling_ratio=sampling_ratio)


class RoIAlignMax(Function):
    @staticmethod
    def forward(ctx, input, rois, output_size=7, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
        ctx.backend = get_backend()
        out, ctx.argmax = _roi_align_max(input, rois, output_size, spatial_scale, sampling_ratio, aligned,
                                         return_argmax=True, backend=ctx.backend)
        _save_for_backward(ctx, input, rois, spatial_scale, sampling_ratio, aligned)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        return _input_grad(ctx, grad_out, _roi_align_max_backward, ctx.argmax)


def roi_align_max(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """RoIAlign's sample points, each bin the max of its samples, of ``input`` (N, C, H, W) over
    ``boxes`` (K, 5) or a list of per-image (L, 4) boxes. Returns a (K, C, PH, PW) Tensor; the
    gradient goes to the four neighbours of every bin's winning sample. See :func:`minirc.ops.roi_align_max`."""
    rois = _as_rois(input, boxes)
    return RoIAlignMax.apply(input, rois, output_size=output_size, spatial_scale=spatial_scale,
                             sampling_ratio=sampling_ratio, aligned=aligned)
