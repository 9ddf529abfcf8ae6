"""Pasting the S x S mask probabilities of the detections back into the image (docs/semantics.md section 16, case T9).

torchvision ``roi_heads.py::paste_masks_in_image``, step by step:

1. pad each S x S mask with ``padding`` (1) zero pixels per side -> (S + 2) x (S + 2), and grow the
   box about its centre by ``scale = (S + 2) / S`` so the padded mask covers the same image region
   (the zero border lets the bilinear resize fade to 0 at the box edge instead of clamping);
2. truncate the grown box to int64 (toward zero, so -4.3 -> -4);
3. resize the padded mask to ``h = int(y2 - y1 + 1)`` by ``w = int(x2 - x1 + 1)`` pixels (the box's
   integer pixel count; bilinear, ``align_corners=False``);
4. copy the part inside the image into a zero (H, W) canvas.

The result is soft probabilities in [0, 1]; thresholding (``>= 0.5`` in torchvision's docs,
``> 0.5`` in its COCO evaluator) is left to the caller.
"""
from __future__ import annotations

import numpy as np

from minirc import _checks
from minirc.model.transform import interpolate_bilinear

MAX_COORD = 2**31 - 1  # |grown box coordinate| in pixels: cast to int64, then pixel counts added


def expand_masks(masks: np.ndarray, padding: int = 1):
    """(D, S, S) -> (D, S + 2p, S + 2p) zero-padded masks and the Python-float scale (S + 2p) / S."""
    s = masks.shape[-1]
    scale = float(s + 2 * padding) / s
    padded = np.pad(masks, [(0, 0)] * (masks.ndim - 2) + [(padding, padding), (padding, padding)])
    return padded, scale


def expand_boxes(boxes: np.ndarray, scale: float) -> np.ndarray:
    """Grow (D, 4) boxes about their centres by ``scale``, in float32 (the scale is cast to float32)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    s = np.float32(scale)
    half = np.float32(0.5)
    w_half = (boxes[:, 2] - boxes[:, 0]) * half * s
    h_half = (boxes[:, 3] - boxes[:, 1]) * half * s
    cx = (boxes[:, 2] + boxes[:, 0]) * half
    cy = (boxes[:, 3] + boxes[:, 1]) * half
    return np.stack([cx - w_half, cy - h_half, cx + w_half, cy + h_half], axis=1)


def paste_mask_in_image(mask: np.ndarray, box, im_h: int, im_w: int, canvas=None, threshold=None) -> np.ndarray:
    """One padded mask into an (im_h, im_w) canvas; ``box`` is the grown integer box (x1, y1, x2, y2).

    canvas: a zero (im_h, im_w) array to paste into (default: a new one in the mask's dtype);
    threshold: paste ``probability > threshold`` (for a bool canvas) instead of the probabilities.
    """
    x1, y1, x2, y2 = (int(v) for v in box)
    w = max(x2 - x1 + 1, 1)  # +1: an integer box [x1, x2] covers x2 - x1 + 1 pixels
    h = max(y2 - y1 + 1, 1)
    if canvas is None:
        canvas = np.zeros((im_h, im_w), dtype=mask.dtype)
    xa, xb = max(x1, 0), min(x2 + 1, im_w)
    ya, yb = max(y1, 0), min(y2 + 1, im_h)
    if xb > xa and yb > ya:  # a box wholly outside the image pastes nothing
        # only the part inside the image is resized: a box far larger than the image costs no more
        part = interpolate_bilinear(mask, (h, w), ((ya - y1, yb - y1), (xa - x1, xb - x1)))
        canvas[ya:yb, xa:xb] = part if threshold is None else part > threshold
    return canvas


def paste_masks_in_image(masks, boxes, image_size, padding: int = 1, threshold=None) -> np.ndarray:
    """Paste D mask probability maps into the image.

    masks: (D, S, S) or (D, 1, S, S) float, probabilities of each detection's class;
    boxes: (D, 4) float32 x1y1x2y2 in the pixels of the target image;
    image_size: (H, W). Returns (D, H, W) float32 soft probabilities (not thresholded), or with
    ``threshold`` (e.g. 0.5) (D, H, W) bool masks ``probability > threshold`` -- the rule of the COCO
    results writer and the drawings -- a quarter of the memory, each detection's probabilities only
    ever existing inside its box.

    >>> m = np.zeros((1, 28, 28), np.float32); m[0, 7:21, 7:21] = 1
    >>> out = paste_masks_in_image(m, np.array([[10.3, 20.7, 40.2, 50.9]], np.float32), (64, 64))
    >>> round(float(out.sum()), 3)
    238.843
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim == 4:
        masks = masks[:, 0]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if masks.ndim != 3 or masks.shape[0] != boxes.shape[0]:
        raise ValueError(f"masks: expected (D, S, S) with D = {boxes.shape[0]} (one per box), got {masks.shape}")
    im_h, im_w = int(image_size[0]), int(image_size[1])
    dtype = np.float32 if threshold is None else np.bool_
    if min(im_h, im_w) < 0:
        raise ValueError(f"image_size: expected (H, W) >= 0, got {tuple(image_size)}")
    _checks.elements((masks.shape[0], im_h, im_w), "image_size", "the pasted masks (D, H, W)")
    if masks.shape[0] == 0:
        return np.zeros((0, im_h, im_w), dtype=dtype)
    if min(masks.shape[1:]) < 1:
        raise ValueError(f"masks: expected (D, S, S) with S >= 1, got shape {masks.shape}")
    padded, scale = expand_masks(masks, padding)
    grown = expand_boxes(boxes, scale)
    bad = np.flatnonzero(~np.all(np.abs(grown) <= MAX_COORD, axis=1))  # NaN fails too
    if bad.size:
        raise ValueError(f"boxes: expected finite coordinates within +-{MAX_COORD} pixels (the limit), "
                         f"box {int(bad[0])} is {boxes[bad[0]].tolist()}")
    int_boxes = grown.astype(np.int64)  # truncation toward zero, as .to(int64)
    out = np.zeros((masks.shape[0], im_h, im_w), dtype=dtype)  # pasted in place: no per-mask canvases
    for m, b, canvas in zip(padded, int_boxes, out):
        paste_mask_in_image(m, b, im_h, im_w, canvas, threshold)
    return out
