"""Pictures of detections: boxes, masks, labels and scores drawn on an image with matplotlib.

Coordinates: images are shown with ``extent=(0, W, H, 0)``, so pixel ``(i, j)`` covers the square
``[j, j+1) x [i, i+1)`` -- minirc's pixel model (docs/conventions.md) -- and a box
``x1y1x2y2`` is drawn exactly where its continuous coordinates say, with no half-pixel fudge.
Soft masks (the model's per-pixel probabilities) are shown where ``mask > mask_threshold`` (0.5,
torchvision's reference evaluator uses ``> 0.5``).
"""
from __future__ import annotations

import numpy as np

from minirc.cuda_utils import to_host


def _colour(k: int):
    import matplotlib

    return matplotlib.colormaps["tab10"](int(k) % 10)


def to_hwc(image) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) for imshow (clipped)."""
    image = np.asarray(to_host(image), dtype=np.float32)
    if image.ndim != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image: expected (3, H, W) or (1, H, W), got shape {image.shape}")
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    return np.clip(image.transpose(1, 2, 0), 0.0, 1.0)


def draw_instances(ax, image, boxes=None, labels=None, scores=None, masks=None, class_names=None,
                   score_threshold: float = 0.5, mask_threshold: float = 0.5, title: str | None = None,
                   alpha: float = 0.45):
    """Draw an image and its instances on a matplotlib ``ax``.

    image: (3, H, W) float32 in [0, 1]; boxes: (D, 4) x1y1x2y2; labels: (D,) int; scores: (D,) or
    None (ground truth: everything is drawn); masks: (D, H, W) soft or binary.
    Instances with ``score < score_threshold`` are skipped. Colours follow the label, so the same
    class has the same colour in a ground-truth panel and a prediction panel.
    """
    hwc = to_hwc(image)
    h, w = hwc.shape[:2]
    boxes = np.zeros((0, 4)) if boxes is None else np.asarray(to_host(boxes), dtype=np.float64).reshape(-1, 4)
    n = len(boxes)
    labels = np.ones(n, np.int64) if labels is None else np.asarray(to_host(labels)).reshape(-1)
    keep = np.ones(n, bool) if scores is None else np.asarray(to_host(scores)).reshape(-1) >= score_threshold
    overlay = hwc.copy()
    if masks is not None:
        masks = np.asarray(to_host(masks))
        for k in np.flatnonzero(keep):
            m = masks[k] > mask_threshold
            overlay[m] = (1 - alpha) * overlay[m] + alpha * np.asarray(_colour(labels[k])[:3])
    ax.imshow(overlay, extent=(0, w, h, 0), interpolation="nearest")
    if masks is not None:
        for k in np.flatnonzero(keep):  # outline each mask so touching instances stay apart
            if (masks[k] > mask_threshold).any():
                ax.contour(np.arange(w) + 0.5, np.arange(h) + 0.5, (masks[k] > mask_threshold).astype(float),
                           levels=[0.5], colors=[_colour(labels[k])], linewidths=1.0)
    from matplotlib.patches import Rectangle

    for k in np.flatnonzero(keep):
        x1, y1, x2, y2 = boxes[k]
        colour = _colour(labels[k])
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
        name = class_names[labels[k]] if class_names is not None and labels[k] < len(class_names) else str(labels[k])
        text = name if scores is None else f"{name} {float(np.asarray(to_host(scores)).reshape(-1)[k]):.2f}"
        ax.text(x1, y1, text, fontsize=7, color="white", va="bottom", ha="left",
                bbox=dict(facecolor=colour, alpha=0.8, pad=1, edgecolor="none"))
    return label_pixel_axes(ax, w, h, title)


def label_pixel_axes(ax, width: float, height: float, title: str | None = None):
    """Image axes in pixels: x to the right, y downwards (row 0 at the top), as the boxes are."""
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    if title:
        ax.set_title(title, fontsize=9)
    return ax


def draw_boxes(ax, boxes, color, lw: float = 1.0, ls: str = "-", alpha: float = 1.0):
    """Outline boxes ``(N, 4)`` x1y1x2y2 (continuous pixel coordinates) on ``ax``; no labels."""
    from matplotlib.patches import Rectangle

    for x1, y1, x2, y2 in np.asarray(to_host(boxes), dtype=float).reshape(-1, 4):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, ec=color, lw=lw, ls=ls, alpha=alpha))
    return ax


def show_prediction(image, prediction, class_names=None, score_threshold: float = 0.5, path=None, title=None):
    """One image with one prediction dict (``boxes``, ``labels``, ``scores``, ``masks``); returns the figure."""
    import matplotlib.pyplot as plt

    image = to_host(image)
    h, w = np.asarray(image).shape[1:]
    fig, ax = plt.subplots(figsize=(max(4.0, 6.0 * w / max(h, w)), max(4.0, 6.0 * h / max(h, w))))
    n = int(np.sum(np.asarray(to_host(prediction["scores"])) >= score_threshold))
    draw_instances(ax, image, prediction.get("boxes"), prediction.get("labels"), prediction.get("scores"),
                   prediction.get("masks"), class_names, score_threshold,
                   title=title or f"{n} detections with score >= {score_threshold}")
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def show_predictions_vs_ground_truth(images, targets, predictions, class_names=None, score_threshold: float = 0.5,
                                     path=None, title: str = "ground truth (top) vs predictions (bottom)"):
    """A grid: one column per image, ground truth on top, the model's predictions below."""
    import matplotlib.pyplot as plt

    n = len(images)
    if not (len(targets) == len(predictions) == n) or n == 0:
        raise ValueError(f"images, targets, predictions: expected the same non-zero length, got "
                         f"{n}, {len(targets)}, {len(predictions)}")
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.6), squeeze=False)
    for j, (image, t, p) in enumerate(zip(images, targets, predictions)):
        draw_instances(axes[0, j], image, t["boxes"], t["labels"], None, t.get("masks"), class_names,
                       title=f"ground truth ({len(t['boxes'])})")
        kept = int(np.sum(np.asarray(to_host(p["scores"])) >= score_threshold))
        draw_instances(axes[1, j], image, p["boxes"], p["labels"], p["scores"], p.get("masks"), class_names,
                       score_threshold, title=f"predicted ({kept} with score >= {score_threshold:g})")
    for ax in axes.flat:
        ax.tick_params(labelsize=6)
        ax.xaxis.label.set_size(7)
        ax.yaxis.label.set_size(7)
    fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=100)
    return fig
