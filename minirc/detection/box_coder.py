"""Box coding: a box expressed as deltas relative to a reference box (R-CNN, Girshick et al. 2014, App. C).

For a reference (anchor or proposal) with centre ``(cx, cy)`` and size ``(w, h)``, and a target with
``(gx, gy, gw, gh)``, the weighted deltas are::

    dx = wx * (gx - cx) / w      dy = wy * (gy - cy) / h
    dw = ww * log(gw / w)        dh = wh * log(gh / h)

Centre offsets are measured in units of the reference size (so one regressor serves all scales) and sizes
in log space (so scaling up and down are symmetric). Widths are ``x2 - x1``, **no +1** (torchvision,
detectron2; Detectron1 and old Caffe code used ``x2 - x1 + 1``). ``decode`` inverts ``encode`` and
clamps ``dw, dh`` from above at ``bbox_xform_clip = log(1000 / 16)`` after dividing by the weights, so an
untrained head cannot ask ``exp`` for a box 10^40 pixels wide. Conventions and the order of float32
operations follow torchvision ``models/detection/_utils.py::BoxCoder`` (see docs/box_coding.md).

Box coding runs on NumPy arrays outside the autograd tape: targets are constants, and decoded
proposals are detached, as in torchvision.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from minirc._checks import as_array, number

BBOX_XFORM_CLIP = math.log(1000.0 / 16)  # 4.135166556742356: widest decoded box = 62.5 x the reference


def _center_size(boxes: np.ndarray):
    """(x1, y1, x2, y2) -> centre x, centre y, width, height; columns as (N, 1) for broadcasting."""
    widths = boxes[:, 2:3] - boxes[:, 0:1]
    heights = boxes[:, 3:4] - boxes[:, 1:2]
    return boxes[:, 0:1] + 0.5 * widths, boxes[:, 1:2] + 0.5 * heights, widths, heights


class BoxCoder:
    """``BoxCoder(weights, bbox_xform_clip=log(1000/16))``; RPN weights ``(1, 1, 1, 1)``, box head ``(10, 10, 5, 5)``.

    ``encode(matched_gt_boxes (N, 4), anchors (N, 4)) -> (N, 4)`` deltas, in the gt boxes' dtype.
    ``decode(deltas (N, 4K), anchors (N, 4)) -> (N, 4K)`` boxes, in the deltas' dtype: K boxes per
    reference (K = 1 for the RPN, K = classes for the box head), interleaved ``[x1, y1, x2, y2] * K``.
    Both also accept lists of per-image arrays and then return a list (encode) or the concatenation
    (decode), as torchvision does.

    >>> coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    >>> d = coder.encode(np.array([[15., 25, 45, 110]]), np.array([[10., 20, 50, 100]]))
    >>> np.round(d, 6).tolist()
    [[0.0, 0.9375, -1.43841, 0.303123]]
    """

    def __init__(self, weights, bbox_xform_clip: float = BBOX_XFORM_CLIP):
        if (not isinstance(weights, (tuple, list)) or len(weights) != 4
                or not all(isinstance(w, numbers.Real) and not isinstance(w, bool) and w > 0 for w in weights)):
            raise ValueError(f"weights: expected 4 positive numbers (wx, wy, ww, wh), got {weights!r}")
        self.weights = tuple(float(w) for w in weights)
        self.bbox_xform_clip = number(bbox_xform_clip, "bbox_xform_clip")

    # ---- encode: boxes -> deltas (training targets) ------------------------------------------
    def encode(self, matched_gt_boxes, anchors):
        if isinstance(matched_gt_boxes, (list, tuple)):
            if len(matched_gt_boxes) == 0:
                return []
            counts = [len(b) for b in matched_gt_boxes]
            deltas = self.encode(np.concatenate(matched_gt_boxes), np.concatenate(anchors))
            return np.split(deltas, np.cumsum(counts)[:-1])
        gt = as_array(matched_gt_boxes, "matched_gt_boxes", ndim=2, last_dim=4, float_only=True,
                      allow_device=False)
        ref = as_array(anchors, "anchors", ndim=2, last_dim=4, allow_device=False)
        if ref.shape[0] != gt.shape[0]:
            raise ValueError(f"anchors: expected {gt.shape[0]} boxes, one per row of matched_gt_boxes, "
                             f"got {ref.shape[0]}")
        ref = ref.astype(gt.dtype, copy=False)
        wx, wy, ww, wh = (gt.dtype.type(w) for w in self.weights)
        ex_cx, ex_cy, ex_w, ex_h = _center_size(ref)
        gt_cx, gt_cy, gt_w, gt_h = _center_size(gt)
        dx = wx * (gt_cx - ex_cx) / ex_w
        dy = wy * (gt_cy - ex_cy) / ex_h
        dw = ww * np.log(gt_w / ex_w)  # no eps, no clamp: a degenerate gt gives -inf, as in torchvision
        dh = wh * np.log(gt_h / ex_h)
        return np.concatenate([dx, dy, dw, dh], axis=1)

    # ---- decode: deltas -> boxes (proposals, detections) ---------------------------------------
    def decode(self, deltas, anchors):
        if isinstance(anchors, (list, tuple)):
            anchors = np.concatenate(anchors) if len(anchors) else np.zeros((0, 4), np.float32)
        codes = as_array(deltas, "deltas", ndim=2, float_only=True, allow_device=False)
        if codes.shape[1] % 4 != 0:
            raise ValueError(f"deltas: expected (N, 4K) with the last dimension a multiple of 4, got {codes.shape}")
        ref = as_array(anchors, "anchors", ndim=2, last_dim=4, allow_device=False)
        if ref.shape[0] != codes.shape[0]:
            raise ValueError(f"anchors: expected {codes.shape[0]} boxes, one per row of deltas, got {ref.shape[0]}")
        ref = ref.astype(codes.dtype, copy=False)
        wx, wy, ww, wh = self.weights
        cx, cy, w, h = _center_size(ref)  # (N, 1) each, broadcast over the K boxes
        dx = codes[:, 0::4] / codes.dtype.type(wx)  # (N, K)
        dy = codes[:, 1::4] / codes.dtype.type(wy)
        # upper clamp only, after un-weighting: very negative sizes just give tiny boxes
        dw = np.minimum(codes[:, 2::4] / codes.dtype.type(ww), codes.dtype.type(self.bbox_xform_clip))
        dh = np.minimum(codes[:, 3::4] / codes.dtype.type(wh), codes.dtype.type(self.bbox_xform_clip))
        pred_cx = dx * w + cx
        pred_cy = dy * h + cy
        half_w = 0.5 * (np.exp(dw) * w)
        half_h = 0.5 * (np.exp(dh) * h)
        boxes = np.stack([pred_cx - half_w, pred_cy - half_h, pred_cx + half_w, pred_cy + half_h], axis=2)
        return boxes.reshape(codes.shape)  # (N, K, 4) -> (N, 4K)

    def __repr__(self):
        return f"BoxCoder(weights={self.weights}, bbox_xform_clip={self.bbox_xform_clip})"
