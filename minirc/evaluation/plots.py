"""Plots of an evaluation: precision-recall curves and per-class AP (matplotlib, imported lazily)."""
from __future__ import annotations

import numpy as np


def _axes(ax, figsize=(5, 4)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_precision_recall(result, category=None, ious=(0.5, 0.75), area: str = "all", ax=None):
    """Interpolated precision-recall curves (the 101 points AP averages) of a ``COCOEvalResult``.

    category: a category name or id (default: the mean over categories that have ground truth);
    ious: IoU thresholds to draw, one curve each, labelled with the AP at that threshold.
    """
    ax = _axes(ax)
    p = result.params
    a = [r[0] for r in p.area_ranges].index(area)
    if category is None:
        ks, title = list(range(len(result.category_ids))), "all categories (mean)"
    else:
        if category in result.category_names:
            k = result.category_names.index(category)
        elif category in result.category_ids:
            k = result.category_ids.index(category)
        else:
            raise ValueError(f"category: expected one of {result.category_names}, got {category!r}")
        ks, title = [k], str(result.category_names[k])
    for iou in ious:
        t = np.flatnonzero(np.isclose(p.iou_thresholds, iou))
        if t.size == 0:
            raise ValueError(f"ious: {iou} is not one of the evaluated thresholds {p.iou_thresholds}")
        curves = result.precision[t[0], :, ks, a, -1]                      # (len(ks), R)
        curves = curves[(curves > -1).all(axis=1)]
        if curves.size == 0:
            continue
        curve = curves.mean(axis=0)
        ax.plot(p.recall_thresholds, curve, label=f"IoU {iou:.2f}: AP = {curve.mean():.3f}")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_title(f"{result.iou_type} precision-recall, {title}, area={area}")
    ax.legend(loc="lower left")
    return ax


def plot_per_class_ap(result, iou=None, area: str = "all", ax=None):
    """Horizontal bars of each category's AP (categories without ground truth are left out)."""
    ap = result.per_class_ap(iou=iou, area=area)
    names = [n for n, v in ap.items() if v > -1]
    values = [ap[n] for n in names]
    ax = _axes(ax, figsize=(5, 0.4 * len(names) + 1.2))
    ax.barh(names, values, color="tab:blue")
    ax.set_xlim(0, 1.0)
    ax.set_xlabel("AP" if iou is None else f"AP at IoU {iou}")
    ax.set_ylabel("category")
    ax.set_title(f"{result.iou_type} AP per category (area={area})")
    for y, v in enumerate(values):
        ax.text(min(v + 0.01, 0.9), y, f"{v:.3f}", va="center")
    return ax
