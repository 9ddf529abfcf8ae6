"""IoU between detections and ground truth, box or mask, with COCO's crowd rule.

COCO conventions (the COCO API's ``bbIou`` and ``rleIou`` in ``maskApi.c``):

* boxes are ``[x, y, w, h]`` in continuous pixels, area ``w * h`` (no ``+1``), and the
  intersection width is ``min(x_d + w_d, x_g + w_g) - max(x_d, x_g)`` in exactly that order of
  float64 operations, so minirc's IoUs equal the reference bit for bit;
* masks are RLEs of one size; intersection and union are pixel counts;
* against a **crowd** ground truth (``iscrowd=1``) the IoU is ``intersection / area(detection)``:
  the fraction of the detection inside the crowd region. A detection lying inside a crowd of
  people is then "matched" (and ignored) instead of counted as a false positive.

Shape shorthand: D detections, G ground-truth objects. Results are (D, G) float64.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minirc.evaluation.rle import rle_counts


def _crowd_flags(iscrowd, g: int) -> np.ndarray:
    if iscrowd is None:
        return np.zeros(g, dtype=bool)
    flags = np.asarray(iscrowd).reshape(-1).astype(bool)
    if flags.size != g:
        raise ValueError(f"iscrowd: expected {g} flags (one per ground-truth object), got {flags.size}")
    return flags


def box_iou_xywh(dt, gt, iscrowd=None) -> np.ndarray:
    """(D, 4) and (G, 4) COCO boxes ``[x, y, w, h]`` -> (D, G) IoU; crowd columns use area(dt)."""
    dt = np.asarray(dt, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    crowd = _crowd_flags(iscrowd, len(gt))
    dx, dy, dw, dh = (dt[:, i, None] for i in range(4))          # (D, 1) each
    gx, gy, gw, gh = (gt[None, :, i] for i in range(4))          # (1, G) each
    iw = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)       # same operand order as bbIou
    ih = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = iw * ih
    da, ga = dw * dh, gw * gh
    union = np.where(crowd[None, :], da, da + ga - inter)
    overlap = (iw > 0) & (ih > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(overlap, inter / np.where(overlap, union, 1.0), 0.0)


# ---- masks: intersections of run-length encodings ------------------------------------------------
def rle_intersection_numpy(a: np.ndarray, b: np.ndarray) -> int:
    """Foreground pixels shared by two RLEs (reference: via the foreground intervals)."""
    def intervals(c):
        ends = np.cumsum(np.asarray(c, dtype=np.int64))
        return ends[0::2][: len(ends) // 2], ends[1::2]          # [start, end) of each foreground run
    sa, ea = intervals(a)
    sb, eb = intervals(b)
    lo = np.maximum(sa[:, None], sb[None, :])
    hi = np.minimum(ea[:, None], eb[None, :])
    return int(np.clip(hi - lo, 0, None).sum())


@njit(cache=True)
def _pair_intersection(a, b):
    """Walk both run lists at once; count pixels where both are in a foreground run."""
    na, nb = a.size, b.size
    if na == 0 or nb == 0:
        return 0
    ia, ib = 0, 0
    end_a, end_b = np.int64(a[0]), np.int64(b[0])
    pos, inter = np.int64(0), np.int64(0)
    while ia < na and ib < nb:
        nxt = min(end_a, end_b)
        if (ia & 1) and (ib & 1):                    # odd-indexed runs are foreground
            inter += nxt - pos
        pos = nxt
        if end_a == nxt:
            ia += 1
            if ia < na:
                end_a += np.int64(a[ia])
        if end_b == nxt:
            ib += 1
            if ib < nb:
                end_b += np.int64(b[ib])
    return inter


@njit(cache=True)
def _intersections_kernel(dt_runs, dt_offsets, gt_runs, gt_offsets):
    d_n, g_n = dt_offsets.size - 1, gt_offsets.size - 1
    out = np.zeros((d_n, g_n), dtype=np.int64)
    for d in range(d_n):
        a = dt_runs[dt_offsets[d]:dt_offsets[d + 1]]
        for g in range(g_n):
            out[d, g] = _pair_intersection(a, gt_runs[gt_offsets[g]:gt_offsets[g + 1]])
    return out


def _pack(counts_list):
    """List of run arrays -> one concatenated uint32 array plus (n + 1,) offsets."""
    offsets = np.zeros(len(counts_list) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(c) for c in counts_list])
    runs = (np.concatenate([np.asarray(c, dtype=np.uint32) for c in counts_list])
            if counts_list else np.zeros(0, dtype=np.uint32))
    return runs, offsets


def counts_iou(dt_counts, gt_counts, iscrowd=None) -> np.ndarray:
    """IoU (D, G) between run-length lists of one mask size (the fast path of :func:`rle_iou`)."""
    crowd = _crowd_flags(iscrowd, len(gt_counts))
    if len(dt_counts) == 0 or len(gt_counts) == 0:
        return np.zeros((len(dt_counts), len(gt_counts)), dtype=np.float64)
    inter = _intersections_kernel(*_pack(dt_counts), *_pack(gt_counts)).astype(np.float64)
    da = np.array([np.asarray(c, dtype=np.int64)[1::2].sum() for c in dt_counts], dtype=np.float64)
    ga = np.array([np.asarray(c, dtype=np.int64)[1::2].sum() for c in gt_counts], dtype=np.float64)
    union = np.where(crowd[None, :], da[:, None], da[:, None] + ga[None, :] - inter)
    # i / u as doubles of integer counts; no overlap gives exactly 0 (the COCO API sets u = 1 then)
    return np.where(inter > 0, inter / np.where(inter > 0, union, 1.0), 0.0)


def rle_iou(dt, gt, iscrowd=None) -> np.ndarray:
    """(D, G) mask IoU between lists of COCO RLE dicts (``pycocotools.mask.iou`` for masks).

    All masks must have the same size; a crowd ground truth divides by the detection's area.
    """
    dt_parsed = [rle_counts(r, f"dt[{i}]") for i, r in enumerate(dt)]
    gt_parsed = [rle_counts(r, f"gt[{i}]") for i, r in enumerate(gt)]
    sizes = {(h, w) for h, w, _ in dt_parsed + gt_parsed}
    if len(sizes) > 1:
        raise ValueError(f"dt, gt: expected RLEs of one size, got sizes {sorted(sizes)}")
    return counts_iou([c for _, _, c in dt_parsed], [c for _, _, c in gt_parsed], iscrowd)
