"""GeneralizedRCNNTransform: what happens to images before the backbone and to detections after.

docs/semantics.md section 15 (torchvision ``detection/transform.py``). Per image, in this order:

1. normalise ``(img - mean) / std`` (float32, images RGB in [0, 1]);
2. resize by ``scale = min(min_size / min(h, w), max_size / max(h, w))`` (Python doubles), output
   ``floor(h * scale) x floor(w * scale)`` -- so 334x500 becomes 799x1197, not 800x1198 -- with
   bilinear ``align_corners=False`` (:func:`interpolate_bilinear`); gt boxes scale by ``new/old`` per
   axis, gt masks by nearest-neighbour resizing (:func:`interpolate_nearest`);
3. batch: zero-pad (in normalised space, at the bottom/right) to the largest H and W of the batch,
   each rounded up to a multiple of ``size_divisible`` (32).

``postprocess`` maps detections back: boxes scaled to the original size, masks pasted with
:func:`minirc.model.paste.paste_masks_in_image` (soft probabilities, not thresholded).

Everything here is plain NumPy outside the autograd tape: images are inputs, not parameters.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from minirc import _checks
from minirc.nn import Module

# ----- resizing kernels (PyTorch's interpolate, CPU) ---------------------------------------------


def _linear_axis(in_size: int, out_size: int, start: int = 0, stop: int | None = None):
    """Source indices and weights of one axis of bilinear ``align_corners=False`` resizing.

    PyTorch (``UpSample.h``: ``area_pixel_compute_source_index``): ``ratio = in / out`` in float32,
    ``src = ratio * (dst + 0.5) - 0.5`` clamped below at 0, ``i0 = min(floor(src), in - 1)``,
    ``i1 = i0 + (i0 < in - 1)``, ``l1 = clamp(src - i0, 0, 1)``, ``l0 = 1 - l1``; an axis whose size
    does not change is copied. The source coordinate is rounded to float32 once (as PyTorch's
    vectorised kernel does with a fused multiply-add), hence the float64 product.
    start, stop: only the output indices [start, stop) (each output depends on its index alone).
    """
    stop = out_size if stop is None else stop
    dst = np.arange(start, stop, dtype=np.float64)
    if in_size == out_size:
        idx = np.arange(start, stop)
        return idx, idx, np.ones(idx.size, np.float32), np.zeros(idx.size, np.float32)
    ratio = np.float32(in_size) / np.float32(out_size)
    src = (np.float64(ratio) * (dst + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    i1 = i0 + (i0 < in_size - 1)
    l1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, i1, (np.float32(1) - l1), l1


def interpolate_bilinear(x: np.ndarray, size, window=None) -> np.ndarray:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` on the last two axes.

    x: (..., H, W) float array; size: (out_h, out_w). Returns (..., out_h, out_w) in x's dtype.
    window: ``((r0, r1), (c0, c1))`` computes only output rows r0..r1-1 and columns c0..c1-1 (the
    same values as slicing the full result; what mask pasting needs of a box larger than the image).
    Weights are combined as PyTorch does: ``ly0 * (lx0 * a + lx1 * b) + ly1 * (lx0 * c + lx1 * d)``.
    """
    out_h, out_w = int(size[0]), int(size[1])
    if out_h <= 0 or out_w <= 0:
        raise ValueError(f"size: expected positive output height and width, got {tuple(size)}")
    if min(x.shape[-2:]) < 1:
        raise ValueError(f"input: cannot resize from an empty spatial size, got shape {tuple(x.shape)}")
    (r0, r1), (c0, c1) = window if window is not None else ((0, out_h), (0, out_w))
    _checks.elements(tuple(x.shape[:-2]) + (r1 - r0, c1 - c0), "size", "the resized output")
    y0, y1, ly0, ly1 = _linear_axis(x.shape[-2], out_h, r0, r1)
    x0, x1, lx0, lx1 = _linear_axis(x.shape[-1], out_w, c0, c1)
    dt = x.dtype.type
    ly0, ly1 = ly0.astype(dt)[:, None], ly1.astype(dt)[:, None]
    lx0, lx1 = lx0.astype(dt), lx1.astype(dt)
    top, bottom = x[..., y0, :], x[..., y1, :]  # (..., out_h, W)
    row_top = lx0 * top[..., x0] + lx1 * top[..., x1]  # (..., out_h, out_w)
    row_bottom = lx0 * bottom[..., x0] + lx1 * bottom[..., x1]
    return (ly0 * row_top + ly1 * row_bottom).astype(x.dtype, copy=False)


def _nearest_axis(in_size: int, out_size: int) -> np.ndarray:
    """PyTorch's legacy ``nearest``: ``min(floor(dst * (in / out as float32)), in - 1)``; exact 2x repeats."""
    dst = np.arange(out_size)
    if out_size == in_size:
        return dst
    if out_size == 2 * in_size:
        return dst >> 1
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(dst.astype(np.float32) * scale).astype(np.int64), in_size - 1)


def interpolate_nearest(x: np.ndarray, size) -> np.ndarray:
    """``F.interpolate(x, size, mode="nearest")`` on the last two axes (any dtype)."""
    if min(x.shape[-2:]) < 1:
        raise ValueError(f"input: cannot resize from an empty spatial size, got shape {tuple(x.shape)}")
    _checks.elements(tuple(x.shape[:-2]) + (int(size[0]), int(size[1])), "size", "the resized output")
    rows = _nearest_axis(x.shape[-2], int(size[0]))
    cols = _nearest_axis(x.shape[-1], int(size[1]))
    return x[..., rows[:, None], cols[None, :]]


# ----- sizes, boxes, batching ------------------------------------------------------------------

def resized_size(height: int, width: int, min_size: float, max_size: float):
    """Output ``(h, w)`` and the scale of torchvision's resize; all in Python doubles, floored.

    >>> resized_size(334, 500, 800, 1333)[:2]
    (799, 1197)
    """
    scale = min(float(min_size) / min(height, width), float(max_size) / max(height, width))
    return math.floor(height * scale), math.floor(width * scale), scale


def resize_boxes(boxes: np.ndarray, original_size, new_size) -> np.ndarray:
    """Scale (N, 4) x1y1x2y2 boxes by ``new / old`` per axis (ratios in float32, as torchvision)."""
    ratio_h = np.float32(new_size[0]) / np.float32(original_size[0])
    ratio_w = np.float32(new_size[1]) / np.float32(original_size[1])
    boxes = np.asarray(boxes, dtype=np.float32)
    return boxes * np.array([ratio_w, ratio_h, ratio_w, ratio_h], dtype=np.float32)


def padded_size(sizes, size_divisible: int = 32) -> tuple:
    """Largest ``(h, w)`` of the batch, each rounded up to a multiple of ``size_divisible``."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    stride = float(size_divisible)
    return int(math.ceil(h / stride) * stride), int(math.ceil(w / stride) * stride)


@dataclass
class ImageList:
    """A padded batch and the sizes of the images in it (torchvision's ``ImageList``).

    tensors: (N, 3, H, W) float32, H and W multiples of size_divisible, zero-padded bottom/right;
    image_sizes: per image the resized, unpadded ``(h, w)`` (for clipping and RoI scales).
    """
    tensors: np.ndarray
    image_sizes: list

    @property
    def padded_size(self) -> tuple:
        return tuple(self.tensors.shape[-2:])


def batch_images(images, size_divisible: int = 32) -> np.ndarray:
    """Stack (3, h_i, w_i) images into (N, 3, H, W), zeros below and right of each image."""
    H, W = padded_size([img.shape[-2:] for img in images], size_divisible)
    batch = np.zeros((len(images), images[0].shape[0], H, W), dtype=images[0].dtype)
    for i, img in enumerate(images):
        batch[i, :, :img.shape[-2], :img.shape[-1]] = img  # top-left placement
    return batch


# ----- the module -------------------------------------------------------------------------------

class GeneralizedRCNNTransform(Module):
    """``transform(images, targets) -> (ImageList, targets)`` and ``postprocess(detections, ...)``.

    images: list of (3, H, W) float32 arrays, RGB in [0, 1]; targets: None or one dict per image with
    "boxes" (M, 4) float32 and "masks" (M, H, W) uint8 (resized here; other keys pass through).
    Training picks the shorter side uniformly from ``min_size`` (``minirc.random`` generator);
    eval uses ``min_size[-1]``.
    """

    def __init__(self, min_size, max_size, image_mean, image_std, size_divisible: int = 32):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (tuple, list)) else (min_size,)
        self.max_size = max_size
        self.image_mean = np.asarray(image_mean, dtype=np.float32)
        self.image_std = np.asarray(image_std, dtype=np.float32)
        self.size_divisible = size_divisible
        # None: masks come back as float32 probabilities (torchvision); a number t: as bool masks
        # probability > t, pasted without a full-size float image per detection (bounded memory)
        self.mask_threshold = None

    def normalize(self, image: np.ndarray) -> np.ndarray:
        return (image - self.image_mean[:, None, None]) / self.image_std[:, None, None]

    def _pick_size(self) -> int:
        if self.training and len(self.min_size) > 1:
            from minirc.random import generator
            return self.min_size[int(generator().integers(len(self.min_size)))]
        return self.min_size[-1]

    def resize(self, image: np.ndarray, target: dict | None):
        h, w = image.shape[-2:]
        new_h, new_w, _ = resized_size(h, w, self._pick_size(), self.max_size)
        image = interpolate_bilinear(image, (new_h, new_w))
        if target is None:
            return image, None
        target = dict(target)
        target["boxes"] = resize_boxes(target["boxes"], (h, w), (new_h, new_w))
        if "masks" in target:
            target["masks"] = interpolate_nearest(np.asarray(target["masks"], dtype=np.uint8), (new_h, new_w))
        return image, target

    def forward(self, images, targets=None):
        out_images, out_targets = [], [] if targets is not None else None
        for i, image in enumerate(images):
            image = np.asarray(image)
            if image.ndim != 3 or image.shape[0] != 3 or image.dtype not in (np.float32, np.float64):
                raise TypeError(f"images[{i}]: expected a (3, H, W) float32 array with values in [0, 1], "
                                f"got shape {image.shape} and dtype {image.dtype}")
            image, target = self.resize(self.normalize(image.astype(np.float32, copy=False)),
                                        None if targets is None else targets[i])
            out_images.append(image)
            if targets is not None:
                out_targets.append(target)
        sizes = [tuple(int(s) for s in img.shape[-2:]) for img in out_images]
        return ImageList(batch_images(out_images, self.size_divisible), sizes), out_targets

    def postprocess(self, detections, image_sizes, original_sizes):
        """Boxes back to original pixels; (D, S, S) mask probabilities pasted to (D, H, W)."""
        from minirc.model.paste import paste_masks_in_image

        out = []
        for det, size, original in zip(detections, image_sizes, original_sizes):
            det = dict(det)
            det["boxes"] = resize_boxes(det["boxes"], size, original)
            if "masks" in det:
                det["masks"] = paste_masks_in_image(det["masks"], det["boxes"], original,
                                                    threshold=self.mask_threshold)
            out.append(det)
        return out

    def extra_repr(self):
        return (f"min_size={self.min_size}, max_size={self.max_size}, mean={self.image_mean.tolist()}, "
                f"std={self.image_std.tolist()}, size_divisible={self.size_divisible}")
