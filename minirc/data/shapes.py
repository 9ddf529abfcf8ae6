"""Synthetic "shapes": a detection and instance-segmentation data set drawn from a seed.

The classic toy set for Mask R-CNN (matterport's ``train_shapes`` notebook popularised the idea),
rebuilt here so that it needs no download and every item can be regenerated on its own:
item ``i`` of ``ShapesDataset(seed=s)`` is drawn from ``np.random.default_rng([s, i])`` and from
nothing else, so ``ds[7]`` is the same array whether or not ``ds[0..6]`` were ever built.

One image: a background (flat colour or a linear gradient between two colours), 1..max_objects
filled shapes of random class, size, position, rotation and colour painted one after another
(later shapes cover earlier ones), then Gaussian pixel noise. A fraction of images has no object.

Shape shorthand: M objects, H W image size, K classes including background (index 0).

Targets follow torchvision's detection convention (see docs/data.md):

* ``masks``  (M, H, W) uint8: the **visible** pixels of each object (occlusion-correct: a pixel
  belongs to the last shape painted over it). Objects whose visible part is too small are dropped;
* ``boxes``  (M, 4) float32 x1y1x2y2: the tight box of the visible mask in continuous pixel
  coordinates, pixel ``(i, j)`` covering ``[j, j+1) x [i, i+1)`` -- so ``x2 = max column + 1``;
* ``labels`` (M,) int64 in 1..K-1; ``area`` (M,) float32 visible pixel count; ``iscrowd`` (M,)
  uint8 zeros; ``image_id`` int (the index).

Shapes are rasterised at pixel centres ``(j + 0.5, i + 0.5)`` (docs/conventions.md), without
anti-aliasing: the image and the mask describe exactly the same pixels.
"""
from __future__ import annotations

import numbers

import numpy as np

from minirc._checks import number, positive_int

SHAPES = ("circle", "square", "triangle", "cross", "star")
BACKGROUND = "__background__"


# ---- rasterisers: boolean masks of one shape, tested at pixel centres ---------------------------
def rasterize_circle(cx: float, cy: float, r: float, height: int, width: int) -> np.ndarray:
    """(height, width) bool: pixel centres within distance ``r`` of ``(cx, cy)``."""
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r * r


def rasterize_polygon(vertices: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width) bool: pixel centres inside a closed polygon (even-odd rule).

    vertices: (V, 2) [x, y] in pixels. A horizontal ray from each centre towards +x crosses the
    boundary an odd number of times exactly when the centre is inside (works for non-convex stars).
    """
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
    inside = np.zeros((height, width), dtype=bool)
    nxt = np.roll(vertices, -1, axis=0)
    for (x0, y0), (x1, y1) in zip(vertices, nxt):
        if y0 == y1:  # a horizontal edge is never crossed by a horizontal ray
            continue
        spans = (y0 > ys) != (y1 > ys)                      # (H, 1): edge straddles this row
        x_cross = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)     # (H, 1): where the row meets the edge
        inside ^= spans & (xs < x_cross)
    return inside


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(V, 2) vertices of a polygonal shape of "radius" ``r`` (centre to farthest point)."""
    if kind == "square":
        unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) / np.sqrt(2.0)
    elif kind == "triangle":
        t = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        unit = np.stack([np.cos(t), -np.sin(t)], axis=1)
    elif kind == "star":  # five points, inner radius 0.45 of the outer one
        t = np.pi / 2 + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        unit = np.stack([rad * np.cos(t), -rad * np.sin(t)], axis=1)
    elif kind == "cross":  # a plus sign; its farthest corners at distance 1
        a, b = 0.36, 1.0  # arm half-width, arm half-length
        unit = np.array([[-a, -b], [a, -b], [a, -a], [b, -a], [b, a], [a, a],
                         [a, b], [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a]]) / np.hypot(a, b)
    else:
        raise ValueError(f"kind: expected one of {SHAPES}, got {kind!r}")
    return _rotate(unit, angle) * r + np.array([cx, cy])


def rasterize_shape(kind: str, cx: float, cy: float, r: float, angle: float,
                    height: int, width: int) -> np.ndarray:
    """(height, width) bool mask of one shape; ``angle`` in radians (ignored for circles)."""
    if kind == "circle":
        return rasterize_circle(cx, cy, r * 0.9, height, width)  # 0.9: similar area to a square
    return rasterize_polygon(shape_polygon(kind, cx, cy, r, angle), height, width)


# ---- targets from visible masks ------------------------------------------------------------
def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """(M, H, W) masks -> (M, 4) float32 tight boxes x1y1x2y2 in continuous coordinates.

    A mask covering columns 3..5 spans ``[3, 6)``: ``x1 = 3``, ``x2 = 6`` (max index + 1).
    Empty masks give zero boxes.
    """
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        if rows.size:
            boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def _image_size_sampler(image_size):
    """Accept an int, (H, W), or ((h_min, h_max), (w_min, w_max)) inclusive ranges."""
    if isinstance(image_size, numbers.Integral) and not isinstance(image_size, bool):
        image_size = (int(image_size), int(image_size))
    try:
        h, w = image_size
    except (TypeError, ValueError):
        raise TypeError(f"image_size: expected an int, (H, W) or ((h_min, h_max), (w_min, w_max)), "
                        f"got {image_size!r}") from None
    ranges = []
    for v in (h, w):
        lo, hi = (v, v) if isinstance(v, numbers.Integral) else tuple(v)
        if not (isinstance(lo, numbers.Integral) and isinstance(hi, numbers.Integral)) or not 16 <= lo <= hi:
            raise ValueError(f"image_size: expected sizes that are ints >= 16 (ranges as (min, max)), "
                             f"got {image_size!r}")
        ranges.append((int(lo), int(hi)))
    return tuple(ranges)


class ShapesDataset:
    """Deterministic synthetic shapes: ``ds[i] -> (image (3, H, W) float32 in [0, 1], target dict)``.

    num_images: length of the data set.
    image_size: int, (H, W), or ((h_min, h_max), (w_min, w_max)) for a random size per image.
    classes: shape kinds, any of ``SHAPES``; label ``k`` is ``classes[k - 1]`` (0 is background).
    max_objects: objects per non-empty image are drawn uniformly from 1..max_objects (before drops).
    seed: the data set's seed; two data sets with different seeds share no images (use one for
        training, another for held-out evaluation).
    empty_fraction: probability that an image has no object (negatives-only images).
    size_range: shape radius as a fraction of the image's shorter side, (min, max).
    max_overlap: a new shape's box may overlap an earlier one's by at most this IoU (placement is
        retried a few times); occlusion still happens, but no shape is hidden by design.
    min_visible: an object is dropped when less than this fraction of its pixels (or fewer than
        ``min_pixels``) remain visible after later shapes are painted.
    noise: maximum standard deviation of the Gaussian pixel noise (drawn per image in [0, noise]).
    """

    def __init__(self, num_images: int = 1000, image_size=(128, 128), classes=("circle", "square", "triangle"),
                 max_objects: int = 4, seed: int = 0, empty_fraction: float = 0.1,
                 size_range=(0.08, 0.22), max_overlap: float = 0.3, min_visible: float = 0.3,
                 min_pixels: int = 12, noise: float = 0.05):
        self.num_images = positive_int(num_images, "num_images", minimum=0)
        self._size_ranges = _image_size_sampler(image_size)
        self.image_size = image_size
        classes = tuple(classes)
        if not classes or any(c not in SHAPES for c in classes) or len(set(classes)) != len(classes):
            raise ValueError(f"classes: expected distinct names from {SHAPES}, got {classes!r}")
        self.classes = classes
        self.max_objects = positive_int(max_objects, "max_objects")
        self.seed = positive_int(seed, "seed", minimum=0)
        self.empty_fraction = number(empty_fraction, "empty_fraction", 0.0, 1.0)
        lo, hi = (number(v, "size_range", 0.01, 0.5) for v in size_range)
        if lo > hi:
            raise ValueError(f"size_range: expected (min, max) with min <= max, got {size_range!r}")
        self.size_range = (lo, hi)
        self.max_overlap = number(max_overlap, "max_overlap", 0.0, 1.0)
        self.min_visible = number(min_visible, "min_visible", 0.0, 1.0)
        self.min_pixels = positive_int(min_pixels, "min_pixels")
        self.noise = number(noise, "noise", 0.0, 1.0)

    # ---- the data set protocol -----------------------------------------------------------
    @property
    def class_names(self) -> tuple:
        return (BACKGROUND,) + self.classes

    @property
    def num_classes(self) -> int:
        """K, background included (what a detector's ``num_classes`` must be)."""
        return len(self.classes) + 1

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {index!r}")
        if index < 0:
            index += self.num_images
        if not 0 <= index < self.num_images:
            raise IndexError(f"index: expected 0 <= index < {self.num_images}, got {index}")
        return self._generate(int(index))

    def __repr__(self):
        return (f"ShapesDataset(num_images={self.num_images}, image_size={self.image_size!r}, "
                f"classes={self.classes!r}, max_objects={self.max_objects}, seed={self.seed})")

    def config(self) -> dict:
        """The constructor arguments as plain JSON types (stored in checkpoints)."""
        return {"num_images": self.num_images, "image_size": self.image_size, "classes": list(self.classes),
                "max_objects": self.max_objects, "seed": self.seed, "empty_fraction": self.empty_fraction,
                "size_range": list(self.size_range), "max_overlap": self.max_overlap,
                "min_visible": self.min_visible, "min_pixels": self.min_pixels, "noise": self.noise}

    # ---- generation -------------------------------------------------------------------------
    def _generate(self, index: int):
        rng = np.random.default_rng([self.seed, index])  # the item's own stream: regenerable alone
        (h_lo, h_hi), (w_lo, w_hi) = self._size_ranges
        height, width = int(rng.integers(h_lo, h_hi + 1)), int(rng.integers(w_lo, w_hi + 1))
        image, bg_colour = self._background(rng, height, width)

        n = 0 if rng.random() < self.empty_fraction else int(rng.integers(1, self.max_objects + 1))
        full_masks, labels, colours, boxes = [], [], [], []
        for _ in range(n):
            placed = self._place(rng, height, width, boxes)
            if placed is None:
                continue
            kind_index, mask, box = placed
            colour = self._colour(rng, bg_colour, colours)
            image[:, mask] = colour[:, None]
            full_masks.append(mask)
            labels.append(kind_index + 1)
            colours.append(colour)
            boxes.append(box)

        masks, keep = self._visible_masks(full_masks, height, width)
        sigma = rng.uniform(0.0, self.noise)
        image += rng.normal(0.0, 1.0, size=image.shape).astype(np.float32) * np.float32(sigma)
        np.clip(image, 0.0, 1.0, out=image)

        labels = np.asarray(labels, dtype=np.int64)[keep] if keep else np.zeros(0, dtype=np.int64)
        target = {
            "boxes": masks_to_boxes(masks),
            "labels": labels.reshape(-1),
            "masks": masks,
            "image_id": index,
            "area": masks.sum(axis=(1, 2), dtype=np.int64).astype(np.float32),
            "iscrowd": np.zeros(len(masks), dtype=np.uint8),
        }
        return image, target

    def _background(self, rng, height, width):
        """(3, H, W) float32 background and its mean colour (3,)."""
        c0 = rng.uniform(0.0, 1.0, size=3)
        if rng.random() < 0.5:  # flat
            image = np.broadcast_to(c0[:, None, None], (3, height, width)).astype(np.float32)
            return image, c0
        c1 = np.clip(c0 + rng.uniform(-0.35, 0.35, size=3), 0.0, 1.0)
        theta = rng.uniform(0.0, 2 * np.pi)
        ys, xs = np.mgrid[0:height, 0:width] + 0.5
        t = (xs / width - 0.5) * np.cos(theta) + (ys / height - 0.5) * np.sin(theta) + 0.5  # ~[0, 1]
        t = np.clip(t, 0.0, 1.0)[None]
        image = (c0[:, None, None] * (1 - t) + c1[:, None, None] * t).astype(np.float32)
        return image, (c0 + c1) / 2

    def _place(self, rng, height, width, boxes):
        """Draw one shape; retry its position so its box overlaps earlier boxes by <= max_overlap."""
        kind_index = int(rng.integers(len(self.classes)))
        kind = self.classes[kind_index]
        short = min(height, width)
        r = rng.uniform(*self.size_range) * short
        # squares and crosses stay near axis-aligned so that a square never becomes a diamond
        spread = np.pi / 12 if kind in ("square", "cross") else np.pi
        angle = rng.uniform(-spread, spread)
        for _ in range(10):
            cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
            mask = rasterize_shape(kind, cx, cy, r, angle, height, width)
            if mask.sum() < self.min_pixels:
                continue
            box = masks_to_boxes(mask[None])[0]
            if not boxes or _max_iou(box, np.asarray(boxes)) <= self.max_overlap:
                return kind_index, mask, box
        return None

    def _colour(self, rng, bg_colour, used):
        """A colour far enough from the background and from the other shapes to be seen."""
        best, best_gap = None, -1.0
        for _ in range(20):
            c = rng.uniform(0.0, 1.0, size=3)
            gap = min([np.linalg.norm(c - bg_colour)] + [np.linalg.norm(c - u) * 1.5 for u in used])
            if gap > best_gap:
                best, best_gap = c, gap
            if gap >= 0.45:
                break
        return best.astype(np.float32)

    def _visible_masks(self, full_masks, height, width):
        """Occlusion: walk from the top shape down; each keeps the pixels no later shape took."""
        covered = np.zeros((height, width), dtype=bool)
        visible = [None] * len(full_masks)
        for k in range(len(full_masks) - 1, -1, -1):
            visible[k] = full_masks[k] & ~covered
            covered |= full_masks[k]
        keep = [k for k, (v, f) in enumerate(zip(visible, full_masks))
                if v.sum() >= max(self.min_pixels, self.min_visible * f.sum())]
        masks = np.zeros((len(keep), height, width), dtype=np.uint8)
        for j, k in enumerate(keep):
            masks[j] = visible[k]
        return masks, keep


def _max_iou(box: np.ndarray, boxes: np.ndarray) -> float:
    """Largest IoU of one box with (N, 4) boxes (no +1: continuous coordinates, as torchvision)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    return float(np.max(inter / (area(box) + area(boxes) - inter)))
