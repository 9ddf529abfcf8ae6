"""From per-image matches to precision/recall tables (COCO API ``COCOeval.accumulate``).

For one category, one area range, one max-detections limit and one IoU threshold:

1. pool the (first ``max_dets``) detections of **all images** and sort them by score (stable:
   ties keep image order, then the per-image order);
2. drop the ignored ones; walking down the list, ``TP(n)`` and ``FP(n)`` count the matched and
   unmatched detections among the first ``n``; ``P`` is the number of non-ignored ground truth;
3. ``recall(n) = TP / P`` and ``precision(n) = TP / (TP + FP + eps)`` (``eps = np.spacing(1)``);
4. the **interpolated** precision at recall r is the best precision at any recall >= r -- a
   running maximum from the right ("the precision envelope"), so the curve never goes up;
5. it is read at the 101 recall points 0, 0.01, ..., 1 (the first detection whose recall reaches
   the point); recall points never reached get precision 0. **AP is the mean of those 101 values.**

A category with no non-ignored ground truth has no defined AP: its entries stay -1 and the
summaries skip them. Arrays: ``precision`` and ``scores`` (T, R, K, A, M), ``recall`` (T, K, A, M),
with T IoU thresholds, R = 101 recall points, K categories, A area ranges, M max-dets limits.
"""
from __future__ import annotations

import numpy as np


def precision_recall(matched, det_ignore, n_positives: int):
    """One threshold's curve from score-sorted detections.

    matched, det_ignore: (D,) bool. Returns ``recall`` and ``precision`` (both (D,) float64) over the
    detections in order (ignored ones contribute to neither count).
    """
    keep = ~det_ignore
    tp = np.cumsum(matched & keep).astype(np.float64)
    fp = np.cumsum(~matched & keep).astype(np.float64)
    return tp / n_positives, tp / (fp + tp + np.spacing(1))


def interpolate(recall, precision, scores, recall_thresholds):
    """101-point interpolation: (R,) precision and (R,) score at each recall threshold.

    Envelope first (the best precision at this or any higher recall), then for each recall point r
    the first detection with recall >= r; points beyond the last recall reached get 0.
    """
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if precision.size else precision
    idx = np.searchsorted(recall, recall_thresholds, side="left")
    reached = idx < recall.size
    q = np.zeros(len(recall_thresholds))
    s = np.zeros(len(recall_thresholds))
    q[reached] = envelope[idx[reached]]
    s[reached] = scores[idx[reached]]
    return q, s


def accumulate(per_image: dict, n_images: int, n_categories: int, params):
    """Tables from ``per_image[(k, a, i)]`` records (absent: no ground truth and no detection).

    A record holds ``scores`` (D,) sorted, ``matched`` and ``det_ignore`` (T, D), ``gt_ignore`` (G,).
    Returns ``precision`` (T, R, K, A, M), ``recall`` (T, K, A, M), ``scores`` (T, R, K, A, M).
    """
    n_t, n_r = len(params.iou_thresholds), len(params.recall_thresholds)
    n_a, n_m = len(params.area_ranges), len(params.max_dets)
    precision = -np.ones((n_t, n_r, n_categories, n_a, n_m))   # -1: undefined (no ground truth)
    recall = -np.ones((n_t, n_categories, n_a, n_m))
    scores = -np.ones((n_t, n_r, n_categories, n_a, n_m))
    for k in range(n_categories):
        for a in range(n_a):
            records = [per_image[k, a, i] for i in range(n_images) if (k, a, i) in per_image]
            if not records:
                continue
            n_pos = int(sum(np.count_nonzero(~e["gt_ignore"]) for e in records))
            if n_pos == 0:
                continue
            for m, max_det in enumerate(params.max_dets):
                det_scores = np.concatenate([e["scores"][:max_det] for e in records])
                order = np.argsort(-det_scores, kind="mergesort")      # pooled over images
                matched = np.concatenate([e["matched"][:, :max_det] for e in records], axis=1)[:, order]
                ignore = np.concatenate([e["det_ignore"][:, :max_det] for e in records], axis=1)[:, order]
                for t in range(n_t):
                    rc, pr = precision_recall(matched[t], ignore[t], n_pos)
                    recall[t, k, a, m] = rc[-1] if rc.size else 0.0
                    precision[t, :, k, a, m], scores[t, :, k, a, m] = interpolate(
                        rc, pr, det_scores[order], params.recall_thresholds)
    return precision, recall, scores
