"""Multi-scale RoI pooling over FPN levels: ``LevelMapper`` and ``MultiScaleRoIAlign``.

Shape shorthand: N images, C channels, L levels, K RoIs (all images), P pooled size.

FPN paper (Lin et al. 2017), Eqn. (1): an RoI of width w and height h (input-image pixels) is
pooled from level ``k = floor(k0 + log2(sqrt(w * h) / 224))``, with k0 = 4: a 224 x 224 box, the
ImageNet pre-training size, reads P4 (stride 16, the single map of the C4 Faster R-CNN), and each
halving of the box side moves one level finer. torchvision (``torchvision/ops/poolers.py``)
computes it in float32 as ``floor(4 + log2(sqrt(area) / 224) + 1e-6)`` (eps after the log) and
clamps to the levels present (P2..P5 -> 2..5). detectron2 puts its eps inside the log
(``log2(sqrt(area) / 224 + 1e-8)``); notebooks/06_fpn_level_assignment compares the conventions.

The scale of every level is inferred, as in torchvision, from the feature heights alone,
``2 ** round(log2(feat_h / max_image_h))``, on the first call, and then **cached**: later calls
reuse the first batch's scales (set ``pooler.scales = None`` to infer them again).
"""
from __future__ import annotations

import numpy as np

from minirc import _checks
from minirc.autograd import Tensor
from minirc.model.config import POOLER_TYPES
from minirc.nn import functional as F
from minirc.nn.module import Module
from minirc.ops._rois import convert_boxes_to_roi_format
from minirc.tensor_math import cat


def _host(a):
    return a.numpy() if isinstance(a, Tensor) else np.asarray(a)


class LevelMapper:
    """Map boxes to FPN levels (FPN Eqn. (1)); returns level indices 0 .. k_max - k_min.

    k_min, k_max: the finest and coarsest levels present (2 and 5 for P2..P5);
    canonical_scale (224) and canonical_level (4): the box side that maps to level 4; eps: added
    after the log so that a side of exactly 224 * 2**j lands on level 4 + j despite rounding.
    """

    def __init__(self, k_min: int, k_max: int, canonical_scale: int = 224, canonical_level: int = 4,
                 eps: float = 1e-6):
        self.k_min, self.k_max = int(k_min), int(k_max)
        self.s0, self.lvl0, self.eps = canonical_scale, canonical_level, eps

    def __call__(self, boxlists) -> np.ndarray:
        """boxlists: a list of per-image (L_i, 4) x1y1x2y2 boxes (or one (K, 4) array) -> (K,) int64.

        A box with negative area (x2 < x1 xor y2 < y1) has no level: -1. (torchvision casts the NaN
        to int64, which gives an index that matches no level, so the box's pooled features stay 0;
        MultiScaleRoIAlign reproduces that for -1.) Zero-area boxes go to the finest level.
        """
        boxes = [_host(b) for b in boxlists] if isinstance(boxlists, (list, tuple)) else [_host(boxlists)]
        boxes = np.concatenate([b.reshape(-1, 4) for b in boxes]) if boxes else np.zeros((0, 4), np.float32)
        T = boxes.dtype.type if boxes.dtype in (np.float32, np.float64) else np.float32
        boxes = boxes.astype(T, copy=False)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])  # no +1 (torchvision box_area)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.sqrt(area)
            level = np.floor(T(self.lvl0) + np.log2(s / T(self.s0)) + T(self.eps))  # in T, as torchvision
        invalid = np.isnan(level)  # sqrt of a negative area
        level = np.clip(np.where(invalid, self.k_min, level), self.k_min, self.k_max).astype(np.int64) - self.k_min
        level[invalid] = -1
        return level


def infer_scale(feature_size: int, image_size: int) -> float:
    """2 ** round(log2(feature_size / image_size)), log2 in float32 and round half to even (torch)."""
    approx = np.float32(float(feature_size) / float(image_size))
    return float(2.0 ** float(np.round(np.log2(approx))))


class MultiScaleRoIAlign(Module):
    """RoI pooling from the FPN level that fits each box (``torchvision.ops.MultiScaleRoIAlign``).

    featmap_names: names to pick from a dict of features (torchvision: ['0', '1', '2', '3']); with a
        list of features, every entry is a level, finest first (P2..P5 only, not the 'pool' P6);
    output_size: int or (PH, PW) (7 for the box head, 14 for the mask head);
    sampling_ratio: samples per bin side (torchvision's detector uses 2; <= 0 adaptive);
    pooler_type: one of ``minirc.model.config.POOLER_TYPES``: "roi_align" (torchvision: aligned=False),
        "roi_align_aligned" (detectron2's ROIAlignV2: aligned=True), "roi_pool" (Fast R-CNN's quantized
        max pooling), "roi_warp" (RoIPool's snapped box, bilinear average) or "roi_align_max"
        (RoIAlign's samples, aligned=False, max per bin): the rows of the Mask R-CNN paper's Table 2c.
    level: None (FPN level assignment, above) or k: every RoI is pooled from the one map of stride
        2**k (P4: 16, P5: 32), as in the Mask R-CNN paper's single-map C4 and C5 models; the map is
        found by its inferred scale, and a level whose map is not among the features is a ValueError.
    Call: pooler(features, boxes, image_sizes) with features a list of (N, C, H_l, W_l) Tensors,
    boxes a list of N (L_i, 4) x1y1x2y2 arrays in input pixels, image_sizes N (h, w) pairs.
    Returns (K, C, PH, PW), K = sum L_i, rows in the order of the boxes; the gradient flows into
    each level's feature map.
    """

    def __init__(self, featmap_names=None, output_size=7, sampling_ratio: int = 2, *,
                 canonical_scale: int = 224, canonical_level: int = 4, pooler_type: str = "roi_align",
                 level: int | None = None):
        super().__init__()
        self.featmap_names = None if featmap_names is None else list(featmap_names)
        self.output_size = _checks.pair(output_size, "output_size", minimum=1)
        if not isinstance(sampling_ratio, (int, np.integer)) or isinstance(sampling_ratio, bool):
            raise TypeError(f"sampling_ratio: expected an int (<= 0 means adaptive), got {sampling_ratio!r}")
        self.sampling_ratio = int(sampling_ratio)
        self.pooler_type = _checks.one_of(pooler_type, "pooler_type", POOLER_TYPES)
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level
        self.level = None if level is None else _checks.positive_int(level, "level")
        self.scales = None      # per-level feature/image scale, inferred on the first call
        self.map_levels = None  # the LevelMapper built with them

    def extra_repr(self) -> str:
        return (f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
                f"sampling_ratio={self.sampling_ratio}, pooler_type={self.pooler_type!r}"
                + ("" if self.level is None else f", level={self.level}"))

    def _levels(self, features):
        if isinstance(features, dict):
            names = self.featmap_names if self.featmap_names is not None else list(features)
            missing = [n for n in names if n not in features]
            if missing:
                raise ValueError(f"features: expected the feature maps {names}, missing {missing}")
            features = [features[n] for n in names]
        if not isinstance(features, (list, tuple)) or not features:
            raise ValueError("features: expected a non-empty list (or dict) of (N, C, H, W) feature maps")
        shapes = [tuple(f.shape) for f in features]
        if any(len(s) != 4 for s in shapes) or len({s[:2] for s in shapes}) != 1:
            raise ValueError(f"features: expected (N, C, H, W) maps with the same N and C, got shapes {shapes}")
        return list(features)

    def setup_scales(self, features, image_sizes):
        """Infer each level's scale from its height and the largest image height; build the mapper."""
        max_h = max(int(h) for h, _ in image_sizes)
        self.scales = [infer_scale(f.shape[2], max_h) for f in features]
        k_min = int(-np.log2(np.float32(self.scales[0])))
        k_max = int(-np.log2(np.float32(self.scales[-1])))
        self.map_levels = LevelMapper(k_min, k_max, self.canonical_scale, self.canonical_level)

    def _fixed_level(self, features):
        """The map of stride 2**level (by the inferred scales) and its scale."""
        strides = [int(round(1.0 / s)) for s in self.scales]
        if 2 ** self.level not in strides:
            raise ValueError(f"level: expected the level of one of the feature maps (strides {strides}: levels "
                             f"{[int(np.log2(s)) for s in strides]}), got {self.level} (stride {2 ** self.level})")
        i = strides.index(2 ** self.level)
        return features[i], self.scales[i]

    def _pool(self, feature, rois, scale):
        kind, size, sr = self.pooler_type, self.output_size, self.sampling_ratio
        if kind == "roi_pool":
            return F.roi_pool(feature, rois, size, scale)
        if kind == "roi_warp":
            return F.roi_warp(feature, rois, size, scale, sr)
        if kind == "roi_align_max":
            return F.roi_align_max(feature, rois, size, scale, sr, aligned=False)
        return F.roi_align(feature, rois, size, scale, sr, aligned=kind == "roi_align_aligned")

    def forward(self, features, boxes, image_sizes):
        features = self._levels(features)
        n_images = features[0].shape[0]
        if not isinstance(boxes, (list, tuple)) or len(boxes) != n_images or len(image_sizes) != n_images:
            raise ValueError(f"boxes, image_sizes: expected one (L, 4) array and one (h, w) per image "
                             f"({n_images} images), got {len(boxes)} and {len(image_sizes)}")
        if self.scales is None or self.map_levels is None:
            self.setup_scales(features, image_sizes)
        if len(self.scales) != len(features):
            raise ValueError(f"features: the cached scales are for {len(self.scales)} levels, got "
                             f"{len(features)} (set pooler.scales = None to infer them again)")
        dtype = features[0].dtype
        rois = convert_boxes_to_roi_format([_host(b) for b in boxes], dtype)
        if self.level is not None:  # one map for every roi: no mapping
            feature, scale = self._fixed_level(features)
            return self._pool(feature, rois, scale)
        if len(features) == 1 or len(rois) == 0:  # one level: no mapping; no rois: (0, C, PH, PW)
            return self._pool(features[0], rois, self.scales[0])
        levels = self.map_levels(boxes)
        outputs, order = [], []
        for level, (feature, scale) in enumerate(zip(features, self.scales)):
            idx = np.flatnonzero(levels == level)
            if idx.size:
                outputs.append(self._pool(feature, rois[idx], scale))
                order.append(idx)
        unmapped = np.flatnonzero(levels < 0)  # inverted boxes: zero features, as in torchvision
        if unmapped.size:
            outputs.append(Tensor(np.zeros((unmapped.size, features[0].shape[1]) + self.output_size, dtype)))
            order.append(unmapped)
        order = np.concatenate(order)
        pooled = outputs[0] if len(outputs) == 1 else cat(outputs, axis=0)  # rows grouped by level
        if np.array_equal(order, np.arange(len(rois))):
            return pooled
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return pooled[inverse]  # back to the order of the boxes (a gather; its backward scatters)
