"""The 12 COCO summary numbers, per-class AP, and the evaluation parameters.

=========  =====================================================================================
AP         mean precision over IoU 0.50:0.05:0.95, 101 recall points, all categories; 100 dets
AP50/AP75  the same at IoU 0.50 / 0.75 only (PASCAL-VOC-like / strict)
APs/m/l    AP for objects of area < 32^2 / 32^2..96^2 / > 96^2 pixels (ground truth ``area``)
AR1/10/100 recall averaged over IoU 0.50:0.95 and categories, with at most 1 / 10 / 100 detections
           per image
ARs/m/l    AR100 by object size
=========  =====================================================================================

Each number is the mean of the defined (> -1) entries of the precision or recall table; when none
is defined (no ground truth at all in that range), the number is -1, as in the COCO API
(``COCOeval.summarize``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAT_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _default_iou_thresholds():
    # the COCO API's exact expression: the float values (0.7000000000000001, ...) matter at IoU ties
    return np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)


def _default_recall_thresholds():
    return np.linspace(.0, 1.00, int(np.round((1.00 - .0) / .01)) + 1, endpoint=True)


@dataclass(frozen=True)
class COCOParams:
    """Evaluation settings; the defaults are COCO's (``pycocotools.cocoeval.Params``, detection)."""
    iou_thresholds: np.ndarray = None      # (T,) default 0.50, 0.55, ..., 0.95
    recall_thresholds: np.ndarray = None   # (R,) default 0.00, 0.01, ..., 1.00
    max_dets: tuple = (1, 10, 100)         # detections per image kept, best scores first
    area_ranges: tuple = (("all", 0.0, 1e5 ** 2), ("small", 0.0, 32.0 ** 2),
                          ("medium", 32.0 ** 2, 96.0 ** 2), ("large", 96.0 ** 2, 1e5 ** 2))

    def __post_init__(self):
        if self.iou_thresholds is None:
            object.__setattr__(self, "iou_thresholds", _default_iou_thresholds())
        if self.recall_thresholds is None:
            object.__setattr__(self, "recall_thresholds", _default_recall_thresholds())
        object.__setattr__(self, "max_dets", tuple(sorted(int(m) for m in self.max_dets)))
        if len(self.max_dets) != 3 or self.max_dets[0] < 1:
            raise ValueError(f"max_dets: expected three limits >= 1 (for AR1, AR10, AR100), got {self.max_dets}")
        labels = [r[0] for r in self.area_ranges]
        if labels[:1] != ["all"] or not {"small", "medium", "large"} <= set(labels):
            raise ValueError(f"area_ranges: expected ('all', lo, hi) first and 'small', 'medium', "
                             f"'large' entries, got {labels}")


def _mean_defined(values) -> float:
    defined = values[values > -1]
    return -1.0 if defined.size == 0 else float(np.mean(defined))


def _iou_index(params, iou):
    return slice(None) if iou is None else np.where(iou == params.iou_thresholds)[0]


def average_precision(precision, params, iou=None, area="all", max_dets=None) -> float:
    """Mean of ``precision`` (T, R, K, A, M) over the defined entries of one slice."""
    a = [r[0] for r in params.area_ranges].index(area)
    m = params.max_dets.index(params.max_dets[-1] if max_dets is None else max_dets)
    return _mean_defined(precision[_iou_index(params, iou), :, :, a, m])


def average_recall(recall, params, iou=None, area="all", max_dets=None) -> float:
    a = [r[0] for r in params.area_ranges].index(area)
    m = params.max_dets.index(params.max_dets[-1] if max_dets is None else max_dets)
    return _mean_defined(recall[_iou_index(params, iou), :, a, m])


def summarize(precision, recall, params) -> dict:
    """The 12 standard numbers as a dict keyed by :data:`STAT_KEYS`."""
    d1, d10, d100 = params.max_dets
    ap = lambda **kw: average_precision(precision, params, **kw)   # noqa: E731
    ar = lambda **kw: average_recall(recall, params, **kw)         # noqa: E731
    values = (ap(), ap(iou=0.5), ap(iou=0.75), ap(area="small"), ap(area="medium"), ap(area="large"),
              ar(max_dets=d1), ar(max_dets=d10), ar(max_dets=d100),
              ar(area="small"), ar(area="medium"), ar(area="large"))
    return dict(zip(STAT_KEYS, values))


def per_category_ap(precision, params, iou=None, area="all", max_dets=None):
    """(K,) AP of each category (-1 where it has no ground truth in that area range)."""
    a = [r[0] for r in params.area_ranges].index(area)
    m = params.max_dets.index(params.max_dets[-1] if max_dets is None else max_dets)
    p = precision[_iou_index(params, iou), :, :, a, m]                # (T', R, K)
    return np.array([_mean_defined(p[:, :, k]) for k in range(p.shape[2])])


def format_summary(stats: dict, iou_type: str = "bbox") -> str:
    """The 12 numbers as the COCO API prints them, one per line."""
    rows = [("Average Precision", "0.50:0.95", "all", 100), ("Average Precision", "0.50", "all", 100),
            ("Average Precision", "0.75", "all", 100), ("Average Precision", "0.50:0.95", "small", 100),
            ("Average Precision", "0.50:0.95", "medium", 100), ("Average Precision", "0.50:0.95", "large", 100),
            ("Average Recall", "0.50:0.95", "all", 1), ("Average Recall", "0.50:0.95", "all", 10),
            ("Average Recall", "0.50:0.95", "all", 100), ("Average Recall", "0.50:0.95", "small", 100),
            ("Average Recall", "0.50:0.95", "medium", 100), ("Average Recall", "0.50:0.95", "large", 100)]
    lines = [f"COCO-style {iou_type} evaluation (minirc)"]
    for key, (title, iou, area, dets) in zip(STAT_KEYS, rows):
        lines.append(f" {title:<18} ({key:>5}) @[ IoU={iou:<9} | area={area:>6s} | maxDets={dets:>3d} ] "
                     f"= {stats[key]:0.3f}")
    return "\n".join(lines)
