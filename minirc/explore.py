"""Explorers for the notebooks: what RoI pooling reads, which objects the anchors miss, what NMS keeps.

Each explorer is a drawing function with plain arguments, so a notebook calls the same code twice:
once for a static grid of small multiples (which GitHub and the docs site show) and once through
:func:`interactive`, which attaches ipywidgets sliders when ipywidgets is installed (the
``notebooks`` extra) and prints a note otherwise.

Coordinates are minirc's pixel model (``docs/pixel_model.md``): pixel ``j`` covers ``[j, j+1)`` and
its value sits at ``j + 0.5``; a stride-``s`` feature cell ``j`` covers image pixels ``[s j, s j + s)``.
Images are drawn with ``extent=(0, W, H, 0)``, so boxes and points land where their coordinates say.
"""
from __future__ import annotations

import importlib

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from minirc.detection.anchors import AnchorGenerator
from minirc.ops._bilinear import align_roi_geometry, sample_coord
from minirc.ops.box_iou import box_iou
from minirc.ops.nms import nms
from minirc.ops.roi_align import roi_align
from minirc.ops.roi_pool import pool_bin_range, pool_roi_geometry, roi_pool
from minirc.visualize import draw_boxes

POOLINGS = ("RoIPool", "RoIAlign aligned=False", "RoIAlign aligned=True")
POOLING_COLORS = {"RoIPool": "tab:red", "RoIAlign aligned=False": "tab:orange", "RoIAlign aligned=True": "tab:blue"}


# ---- RoI pooling --------------------------------------------------------------------------------
def cell_average(image, stride: int) -> np.ndarray:
    """An 'ideal' stride-s feature map of an (H, W) image: cell (i, j) is the mean of its s x s pixels."""
    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape
    if h % stride or w % stride:
        raise ValueError(f"image: expected a shape divisible by the stride {stride}, got {image.shape}")
    return image.reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3)).astype(np.float32)


def pool_box(kind: str, feature, box, output_size: int, stride: int, sampling_ratio: int = 2) -> np.ndarray:
    """(output_size, output_size) crop of an (H, W) feature map for one box in image pixels.

    kind: one of :data:`POOLINGS`; sampling_ratio: RoIAlign's samples per bin side (-1: adaptive).
    """
    if kind not in POOLINGS:
        raise ValueError(f"kind: expected one of {POOLINGS}, got {kind!r}")
    rois = np.array([[0, *box]], np.float32)
    x = np.asarray(feature, np.float32)[None, None]
    if kind == "RoIPool":
        return roi_pool(x, rois, output_size, 1 / stride)[0, 0]
    return roi_align(x, rois, output_size, 1 / stride, sampling_ratio, kind.endswith("True"))[0, 0]


def paste_bilinear(mask, box, height: int, width: int) -> np.ndarray:
    """Bilinear paste of an (S, S) mask into an (height, width) image over ``box`` (continuous coords).

    Image pixel centre ``x + 0.5`` maps to mask coordinate ``(x + 0.5 - x1) * S / w``: that is
    RoIAlign with ``aligned=True`` and one sample per output pixel, run on the mask with the image
    window as the box. The mask gets a ring of zero cells first (torchvision's padded paste does the
    same), so it fades to 0 over half a mask cell outside the box instead of copying its border.
    Unlike the detector's paste (``minirc.model.paste``, torchvision's integer conventions) it adds
    no error of its own, so it isolates the pooling's.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    padded = np.pad(np.asarray(mask, np.float32), 1)
    s = padded.shape[0] - 2
    sx, sy = s / (x2 - x1), s / (y2 - y1)  # mask cells per image pixel
    window = [0, 1 - x1 * sx, 1 - y1 * sy, 1 + (width - x1) * sx, 1 + (height - y1) * sy]  # +1: the zero ring
    return roi_align(padded[None, None], np.array([window], np.float32), (height, width), 1.0, 1, True)[0, 0]


def mask_iou(a, b) -> float:
    """IoU of two boolean masks of the same shape (0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def roipool_bin_edges(box, stride: int, output_size: int, map_size: int = 10 ** 6):
    """RoIPool's bins as image-pixel extents: (xs, ys), each a list of ``(lo, hi)`` per bin.

    The corners are rounded to cells (C's round, inclusive ends) and each bin is the whole cells
    ``[floor(p * bin), ceil((p + 1) * bin))`` of the rounded region, clipped to ``map_size`` cells.
    """
    sh, sw, bh, bw = pool_roi_geometry(*np.float32(box), np.float32(1 / stride), output_size, output_size)
    bh, bw = np.float32(bh), np.float32(bw)  # the compiled helper hands back Python floats
    xs = [tuple(stride * v for v in pool_bin_range(sw, p, bw, map_size)) for p in range(output_size)]
    ys = [tuple(stride * v for v in pool_bin_range(sh, p, bh, map_size)) for p in range(output_size)]
    return xs, ys


def align_read_points(box, stride: int, output_size: int, sampling_ratio: int, aligned: bool) -> np.ndarray:
    """(P, 2) image-pixel positions (x, y) whose content RoIAlign's samples read.

    The kernel treats cell ``i``'s value as sitting at index coordinate ``i``; the value (a cell
    average) belongs to the continuous centre ``i + 0.5``. So a sample at index coordinate ``c``
    reads the content at ``(c + 0.5) * stride`` px: the sub-bin centres of the box for
    ``aligned=True``, half a cell further down-right for the legacy ``aligned=False``.
    """
    f = np.float32
    sh, sw, bh, bw, gh, gw, _ = align_roi_geometry(*(f(v) for v in box), f(1 / stride), aligned, sampling_ratio,
                                                   output_size, output_size)
    ys = [sample_coord(f(sh), p, f(bh), i, gh) for p in range(output_size) for i in range(gh)]
    xs = [sample_coord(f(sw), p, f(bw), i, gw) for p in range(output_size) for i in range(gw)]
    gx, gy = np.meshgrid(np.asarray(xs, np.float64), np.asarray(ys, np.float64))
    return (np.stack([gx.ravel(), gy.ravel()], 1) + 0.5) * stride


def roi_case(offset: float = 0.25, box_size: float = 40.0, stride: int = 16, kind: str = "RoIAlign aligned=True",
             sampling_ratio: int = 2, output_size: int = 14) -> dict:
    """One RoI experiment: a disc inscribed in a box whose corner sits ``offset`` cells past a cell corner.

    The feature map is the cell average of the disc's mask (a head that reproduced its input would
    predict exactly the crop); the crop is pooled with ``kind`` and pasted back over the box.
    Returns a dict with ``gt`` (H, W) bool, ``box``, ``feature``, ``crop``, ``pasted`` (H, W)
    float, ``iou`` (pasted >= 0.5 against ``gt``) and the arguments.
    """
    if not 0 <= offset < 1:
        raise ValueError(f"offset: expected a fraction of a cell in [0, 1), got {offset}")
    if box_size <= 0:
        raise ValueError(f"box_size: expected a positive size in pixels, got {box_size}")
    corner = 2 * stride + offset * stride
    size = int(np.ceil((corner + box_size + 2 * stride) / stride)) * stride
    box = (corner, corner, corner + box_size, corner + box_size)
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    centre, radius = corner + box_size / 2, box_size / 2
    gt = (xx - centre) ** 2 + (yy - centre) ** 2 <= radius ** 2
    feature = cell_average(gt, stride)
    crop = pool_box(kind, feature, box, output_size, stride, sampling_ratio)
    pasted = paste_bilinear(crop, box, size, size)
    return dict(gt=gt, box=box, feature=feature, crop=crop, pasted=pasted, iou=mask_iou(pasted >= 0.5, gt),
                offset=offset, box_size=box_size, stride=stride, kind=kind, sampling_ratio=sampling_ratio,
                output_size=output_size)


def _zoom(ax, case):
    x1, y1, x2, y2 = case["box"]
    pad = case["stride"]
    ax.set(xlim=(x1 - pad, x2 + 1.5 * pad), ylim=(y2 + 1.5 * pad, y1 - pad), aspect="equal")


def draw_roi_reads(ax, case: dict):
    """The disc (grey), the feature cells (thin lines), the box (black) and what the pooling reads:
    RoIPool's whole-cell bins (outlines, inset so that shared cells stay visible) or the points
    whose content RoIAlign's samples read (dots)."""
    size, s, kind = case["gt"].shape[0], case["stride"], case["kind"]
    ax.imshow(case["gt"], cmap="Greys", vmin=0, vmax=2.5, extent=(0, size, size, 0), interpolation="nearest")
    for v in range(0, size + 1, s):
        ax.axvline(v, color="0.7", lw=0.6)
        ax.axhline(v, color="0.7", lw=0.6)
    if kind == "RoIPool":
        xs, ys = roipool_bin_edges(case["box"], s, case["output_size"], size // s)
        for i, (y0, y1) in enumerate(ys):
            for j, (x0, x1) in enumerate(xs):
                inset = 0.06 * s * ((i + j) % 2 + 0.5)
                ax.add_patch(Rectangle((x0 + inset, y0 + inset), x1 - x0 - 2 * inset, y1 - y0 - 2 * inset,
                                       fill=False, ec=("tab:red", "tab:purple")[(i + j) % 2], lw=0.8))
    else:
        pts = align_read_points(case["box"], s, case["output_size"], case["sampling_ratio"], kind.endswith("True"))
        ax.plot(pts[:, 0], pts[:, 1], ".", ms=2.5, color=POOLING_COLORS[kind])
    draw_boxes(ax, np.array([case["box"]]), "black", lw=1.5)
    _zoom(ax, case)
    what = "whole-cell bins" if kind == "RoIPool" else f"sample reads, sampling_ratio {case['sampling_ratio']}"
    ax.set(title=f"{kind}: {what}", xlabel="image x (px)", ylabel="image y (px)")
    return ax


def draw_roi_crop(ax, case: dict):
    """The pooled (output_size x output_size) crop of the ideal feature map, with a colorbar."""
    im = ax.imshow(case["crop"], cmap="gray", vmin=0, vmax=1)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="pooled value")
    n = case["output_size"]
    ax.set(title=f"pooled {n}x{n} crop", xlabel="bin x", ylabel="bin y")
    return ax


def draw_roi_paste(ax, case: dict, show_image: bool = True):
    """The crop pasted back over the box (image), its 0.5 contour (pooling colour) and the disc's outline (lime)."""
    size = case["gt"].shape[0]
    if show_image:
        im = ax.imshow(case["pasted"], cmap="magma", vmin=0, vmax=1, extent=(0, size, size, 0))
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="pasted mask value")
    centres = np.arange(size) + 0.5
    ax.contour(centres, centres, case["gt"].astype(float), levels=[0.5], colors="lime", linewidths=1.5)
    if case["pasted"].max() >= 0.5:
        ax.contour(centres, centres, case["pasted"], levels=[0.5], colors=[POOLING_COLORS[case["kind"]]],
                   linewidths=1.5)
    draw_boxes(ax, np.array([case["box"]]), "white" if show_image else "black", lw=0.8, ls="--")
    _zoom(ax, case)
    ax.set(title=f"pasted back: mask IoU {case['iou']:.3f}", xlabel="image x (px)", ylabel="image y (px)")
    return ax


def roi_explorer_figure(offset: float = 0.25, box_size: float = 40.0, stride: int = 16,
                        kind: str = "RoIAlign aligned=True", sampling_ratio: int = 2, output_size: int = 14):
    """Three panels for one RoI: what the pooling reads, the crop, the paste against the ground truth."""
    case = roi_case(offset, box_size, stride, kind, sampling_ratio, output_size)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    draw_roi_reads(axes[0], case)
    draw_roi_crop(axes[1], case)
    draw_roi_paste(axes[2], case)
    fig.suptitle(f"{box_size:g} px disc, box corner {offset:g} cell past a stride-{stride} cell corner "
                 f"(lime: ground truth; coloured: the pasted mask's 0.5 contour)")
    fig.tight_layout()
    return fig


# ---- anchor coverage ----------------------------------------------------------------------------
def anchor_coverage(gt_boxes, image_size, sizes=((32,), (64,), (128,), (256,), (512,)),
                    aspect_ratios=(0.5, 1.0, 2.0), strides=(4, 8, 16, 32, 64)):
    """Best anchor of every ground-truth box: ``(best_iou (M,) float32, best_anchor (M, 4) float32)``.

    gt_boxes: (M, 4) x1y1x2y2 in pixels; image_size: (H, W), padded (a multiple of the largest
    stride); sizes: one tuple of anchor sizes per level; aspect_ratios: height / width, shared by
    the levels. The anchors are torchvision's (``minirc.detection.AnchorGenerator``).
    """
    h, w = image_size
    if len(sizes) != len(strides):
        raise ValueError(f"sizes: expected one tuple per level ({len(strides)} strides), got {len(sizes)}")
    gen = AnchorGenerator(sizes=tuple(tuple(s) for s in sizes), aspect_ratios=(tuple(aspect_ratios),) * len(sizes))
    anchors = np.concatenate(gen((h, w), [(h // s, w // s) for s in strides]))
    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    if len(gt) == 0:
        return np.zeros(0, np.float32), np.zeros((0, 4), np.float32)
    iou = box_iou(gt, anchors)
    return iou.max(axis=1), anchors[iou.argmax(axis=1)]


def draw_anchor_coverage(ax, gt_boxes, image_size, sizes=((32,), (64,), (128,), (256,), (512,)),
                         aspect_ratios=(0.5, 1.0, 2.0), threshold: float = 0.7, image=None):
    """Ground-truth boxes with a positive anchor (IoU >= threshold) in green, those without in red,
    each labelled with its index and best IoU; the best anchor of each uncovered box dotted.
    Returns the indices of the uncovered boxes."""
    h, w = image_size
    best, anchor = anchor_coverage(gt_boxes, image_size, sizes, aspect_ratios)
    gt = np.asarray(gt_boxes, np.float32).reshape(-1, 4)
    missed = np.flatnonzero(best < threshold)
    if image is not None:
        ax.imshow(image, extent=(0, w, h, 0), alpha=0.5)
    for i, (b, v) in enumerate(zip(gt, best)):
        color = "tab:red" if v < threshold else "tab:green"
        draw_boxes(ax, b[None], color, lw=1.6 if v < threshold else 1.0)
        ax.text(max(b[0], 0) + 1, max(b[1], 0) + 1, f"{i}: {v:.2f}", color=color, fontsize=7, va="top", clip_on=True)
    draw_boxes(ax, anchor[missed], "tab:red", lw=0.8, ls=":")
    ratios = ", ".join(f"{r:g}" for r in aspect_ratios)
    ax.set(xlim=(0, w), ylim=(h, 0), aspect="equal", xlabel="x (px)", ylabel="y (px)",
           title=f"ratios {ratios}, IoU >= {threshold:g}:\n{len(missed)} of {len(gt)} boxes without a positive")
    return missed


def anchor_coverage_figure(gt_boxes, image_size, size_scale: float = 1.0, ratios: str = "0.5, 1, 2",
                           threshold: float = 0.7):
    """One panel: the coverage of FPN anchors of sizes ``size_scale * (32 ... 512)`` and the given ratios."""
    sizes = tuple((32 * size_scale * 2 ** k,) for k in range(5))
    aspect = tuple(float(r) for r in ratios.split(","))
    fig, ax = plt.subplots(figsize=(6, 6))
    draw_anchor_coverage(ax, gt_boxes, image_size, sizes, aspect, threshold)
    ax.set_title(f"anchor sizes {size_scale:g} x (32 ... 512), " + ax.get_title(), fontsize=9)
    fig.tight_layout()
    return fig


# ---- NMS ----------------------------------------------------------------------------------------
SCORE_ORDERS = ("as scored", "reversed", "largest first")


def reorder_scores(boxes, scores, order: str) -> np.ndarray:
    """Scores that rank the boxes ``as scored``, ``reversed``, or ``largest first`` (by area)."""
    scores = np.asarray(scores, np.float32)
    if order == "as scored":
        return scores
    if order == "reversed":
        ranking = np.argsort(scores, kind="stable")  # lowest first gets the highest score
    elif order == "largest first":
        b = np.asarray(boxes, np.float64)
        ranking = np.argsort(-(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), kind="stable")
    else:
        raise ValueError(f"order: expected one of {SCORE_ORDERS}, got {order!r}")
    out = np.empty(len(scores), np.float32)
    out[ranking] = np.sort(scores)[::-1]  # the same score values, handed out in the new order
    return out


def nms_steps(boxes, scores, threshold: float):
    """Greedy NMS written out: ``(kept, suppressed_by)``, with ``suppressed_by[i]`` the kept box whose
    IoU with box i is > threshold. ``kept`` equals :func:`minirc.ops.nms.nms` (asserted)."""
    boxes, scores = np.asarray(boxes, np.float32), np.asarray(scores, np.float32)
    remaining, kept, suppressed_by = list(np.argsort(-scores, kind="stable")), [], {}
    while remaining:
        best = int(remaining.pop(0))
        kept.append(best)
        if remaining:
            ious = box_iou(boxes[best][None], boxes[remaining])[0]
            for r, v in zip(remaining, ious):
                if v > threshold:
                    suppressed_by[int(r)] = best
        remaining = [r for r in remaining if int(r) not in suppressed_by]
    assert kept == nms(boxes, scores, threshold).tolist()
    return kept, suppressed_by


def draw_nms(ax, boxes, scores, threshold: float = 0.7, order: str = "as scored", image=None):
    """Kept boxes solid (labelled index, rank and score), suppressed boxes dashed grey with the box that
    suppressed them. Returns the kept indices."""
    boxes = np.asarray(boxes, np.float32)
    scores = reorder_scores(boxes, scores, order)
    kept, suppressed_by = nms_steps(boxes, scores, threshold)
    if image is not None:
        h, w = np.asarray(image).shape[:2]
        ax.imshow(image, extent=(0, w, h, 0), alpha=0.35)
    colors = plt.get_cmap("tab10")
    for i, b in enumerate(boxes):
        if i in suppressed_by:
            draw_boxes(ax, b[None], "0.5", lw=0.8, ls="--")
            ax.text(b[2] - 1, b[3] - 1, f"{i} (by {suppressed_by[i]})", fontsize=6, color="0.35", ha="right",
                    va="bottom")
        else:
            c = colors(kept.index(i) % 10)
            draw_boxes(ax, b[None], c, lw=2)
            ax.text(b[0] + 1, b[1] + 1, f"{i}: #{kept.index(i) + 1}, {scores[i]:.2f}", fontsize=7, color=c, va="top")
    pad = 10
    ax.set(xlim=(boxes[:, 0].min() - pad, boxes[:, 2].max() + pad),
           ylim=(boxes[:, 3].max() + pad, boxes[:, 1].min() - pad), aspect="equal", xlabel="x (px)", ylabel="y (px)",
           title=f"IoU > {threshold:g}, {order}: keeps {len(kept)} of {len(boxes)}")
    return kept


def nms_figure(boxes, scores, threshold: float = 0.7, order: str = "as scored", image=None):
    """One panel of :func:`draw_nms`."""
    fig, ax = plt.subplots(figsize=(6, 6))
    draw_nms(ax, boxes, scores, threshold, order, image)
    fig.tight_layout()
    return fig


# ---- widgets ------------------------------------------------------------------------------------
def _widget(widgets, name, control):
    """``(lo, hi, step, start)`` -> a slider (float if any entry is), a list -> a dropdown (first entry)."""
    if isinstance(control, tuple):
        lo, hi, step, start = control
        kind = widgets.FloatSlider if any(isinstance(v, float) for v in control) else widgets.IntSlider
        return kind(value=start, min=lo, max=hi, step=step, description=name, continuous_update=False)
    if isinstance(control, list):
        return widgets.Dropdown(options=control, value=control[0], description=name)
    raise TypeError(f"{name}: expected (lo, hi, step, start) or a list of choices, got {control!r}")


def interactive(figure_fn, **controls) -> None:
    """Sliders for ``figure_fn(**values)`` (a function that draws a figure) when ipywidgets is installed.

    controls: per argument, ``(lo, hi, step, start)`` for a slider or a list of choices for a dropdown.
    Without ipywidgets it prints a note instead, so a notebook runs the same either way (CI's test
    extra has no widgets).
    """
    try:
        widgets = importlib.import_module("ipywidgets")
    except ImportError:
        print("ipywidgets is not installed: no sliders here (pip install 'minirc[notebooks]'); "
              "the static figure above shows the same drawing.")
        return

    def redraw(**values):
        figure_fn(**values)
        plt.show()

    widgets.interact(redraw, **{name: _widget(widgets, name, c) for name, c in controls.items()})
