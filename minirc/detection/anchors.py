"""Anchors: the fixed reference boxes the RPN scores and regresses from (Faster R-CNN, Ren et al. 2015, Sec. 3.1.1).

Shape shorthand: L pyramid levels, A anchors per location, H W one level's grid size.

Conventions followed (torchvision ``models/detection/anchor_utils.py``; see docs/anchors.md):

* aspect ratio = **height / width**; a (size s, ratio r) anchor has ``w = s / sqrt(r)``, ``h = s * sqrt(r)``
  (area s*s before rounding);
* cell anchors are computed in float32 and **rounded half to even** (``np.round``, like ``torch.round``),
  so e.g. size 32 / ratio 0.5 is 46 x 22, not 45.25 x 22.63;
* inside a cell the order is **ratio-major**: for each ratio, every size (detectron2 is size-major);
* the stride of a level is ``padded_size // grid_size`` (integer floor, from the *padded batch* size),
  so the 13x17 'pool' grid of an 800x1088 batch has strides (61, 64), not 64;
* anchor centres sit at ``(k * stride_x, j * stride_y)``: the top-left corner of each cell, no +stride/2;
* the output of a level is **location-major**: index ``(y * W + x) * A + a``, which is the order the RPN
  head's outputs are flattened in (``minirc.detection.rpn``).
"""
from __future__ import annotations

import numbers

import numpy as np

from minirc._checks import pair

# torchvision's FPN defaults (faster_rcnn.py::_default_anchorgen): one size per level, three ratios each
DEFAULT_SIZES = ((32,), (64,), (128,), (256,), (512,))
DEFAULT_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * 5


def _as_nested(values, name: str):
    """Validate a tuple of tuples of positive numbers (one inner tuple per level)."""
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise TypeError(f"{name}: expected a non-empty tuple of tuples of numbers, got {values!r}")
    for level in values:
        if not isinstance(level, (tuple, list)) or len(level) == 0:
            raise TypeError(f"{name}: expected a non-empty tuple of numbers per level, got {level!r}")
        for v in level:
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not v > 0:
                raise ValueError(f"{name}: expected positive numbers, got {v!r} in {values!r}")
    return tuple(tuple(level) for level in values)


def cell_anchors(sizes, aspect_ratios) -> np.ndarray:
    """The anchors of one grid cell, centred on (0, 0): ``(len(ratios) * len(sizes), 4)`` float32.

    Row ``r * len(sizes) + s`` is ratio ``r``, size ``s`` (ratio-major, torchvision's order).
    """
    scales = np.asarray(sizes, dtype=np.float32)
    ratios = np.asarray(aspect_ratios, dtype=np.float32)
    # float32 throughout, as torchvision: the rounding below depends on these exact float32 values
    h_ratios = np.sqrt(ratios)
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (R, S) -> (R*S,): ratio-major
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    base = np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2)
    return np.round(base)  # round half to even, like torch.round


def grid_anchors(base: np.ndarray, grid_size, stride) -> np.ndarray:
    """Shift the cell anchors ``base (A, 4)`` over a ``grid_size (H, W)`` grid: ``(H*W*A, 4)``.

    Centres at ``(x * stride_w, y * stride_h)``; order location-major, ``(y * W + x) * A + a``.
    """
    (grid_h, grid_w), (stride_h, stride_w) = grid_size, stride
    shift_x = np.arange(grid_w, dtype=np.int64) * stride_w
    shift_y = np.arange(grid_h, dtype=np.int64) * stride_h
    sy, sx = np.meshgrid(shift_y, shift_x, indexing="ij")  # (H, W): y outer, x inner
    shifts = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4).astype(base.dtype)
    return (shifts + base.reshape(1, -1, 4)).reshape(-1, 4)  # (H*W, 1, 4) + (1, A, 4) -> (H*W*A, 4)


class AnchorGenerator:
    """Anchors for every level of a feature pyramid, with torchvision's numbers and order.

    sizes: one tuple of sizes (pixels, sqrt of the area) per level, e.g. ``((32,), (64,), ...)``;
        a flat tuple ``(32, 64)`` means one size per level.
    aspect_ratios: one tuple of ratios (height / width) per level; a flat tuple is used for every level.

    ``gen(image_size, feature_sizes)`` with ``image_size = (H, W)`` of the padded batch and
    ``feature_sizes = [(H_l, W_l), ...]`` returns a list of ``(H_l * W_l * A_l, 4)`` arrays
    (x1, y1, x2, y2 in input pixels), one per level. The same anchors serve every image of the batch.

    >>> gen = AnchorGenerator(sizes=((10,),), aspect_ratios=((1.0,),))
    >>> gen((15, 15), [(3, 3)])[0][:2].tolist()
    [[-5.0, -5.0, 5.0, 5.0], [0.0, -5.0, 10.0, 5.0]]
    """

    def __init__(self, sizes=DEFAULT_SIZES, aspect_ratios=DEFAULT_ASPECT_RATIOS):
        if isinstance(sizes, (tuple, list)) and sizes and not isinstance(sizes[0], (tuple, list)):
            sizes = tuple((s,) for s in sizes)  # flat sizes: one per level (torchvision does the same)
        if (isinstance(aspect_ratios, (tuple, list)) and aspect_ratios
                and not isinstance(aspect_ratios[0], (tuple, list))):
            aspect_ratios = (tuple(aspect_ratios),) * len(sizes)
        self.sizes = _as_nested(sizes, "sizes")
        self.aspect_ratios = _as_nested(aspect_ratios, "aspect_ratios")
        if len(self.sizes) != len(self.aspect_ratios):
            raise ValueError(f"aspect_ratios: expected one tuple per level ({len(self.sizes)} levels in sizes), "
                             f"got {len(self.aspect_ratios)}")
        self.cell_anchors = [cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def num_anchors_per_location(self) -> list[int]:
        """A for each level: ``len(sizes[l]) * len(aspect_ratios[l])``."""
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def strides(self, image_size, feature_sizes) -> list[tuple[int, int]]:
        """(stride_h, stride_w) per level: ``padded_size // grid_size`` (floor, as torchvision)."""
        image_h, image_w = pair(image_size, "image_size", minimum=1)
        grids = self._check_feature_sizes(feature_sizes)
        return [(image_h // gh, image_w // gw) for gh, gw in grids]

    def _check_feature_sizes(self, feature_sizes) -> list[tuple[int, int]]:
        if not isinstance(feature_sizes, (tuple, list)):
            raise TypeError(f"feature_sizes: expected a list of (height, width) pairs, got {feature_sizes!r}")
        if len(feature_sizes) != len(self.cell_anchors):
            raise ValueError(f"feature_sizes: expected one (height, width) per level ({len(self.cell_anchors)} "
                             f"levels of sizes/aspect_ratios), got {len(feature_sizes)}")
        return [pair(tuple(fs) if isinstance(fs, (tuple, list)) else fs, "feature_sizes", minimum=1)
                for fs in feature_sizes]

    def __call__(self, image_size, feature_sizes, dtype=np.float32) -> list[np.ndarray]:
        strides = self.strides(image_size, feature_sizes)
        grids = self._check_feature_sizes(feature_sizes)
        return [grid_anchors(base, grid, stride).astype(dtype, copy=False)
                for base, grid, stride in zip(self.cell_anchors, grids, strides)]

    def __repr__(self):
        return f"AnchorGenerator(sizes={self.sizes}, aspect_ratios={self.aspect_ratios})"
