"""Greedy matching of detections to ground truth in one image and one category (COCO rules).

For every IoU threshold ``t`` separately (COCO API ``COCOeval.evaluateImg``):

1. Ground truth gets an **ignore** flag when it is a crowd region or its ``area`` lies outside the
   area range being evaluated; ignored objects are moved **last** (a stable sort).
2. Detections are taken in decreasing score (stable sort: ties keep file order), at most
   ``max_dets`` of them.
3. Each detection, in that order, picks among the ground truth not yet taken (crowds can be taken
   any number of times) the one with the **highest IoU >= t** (ties: the later one). Once it has a
   candidate among the regular objects it stops before the ignored ones: a regular match always
   beats an ignored one. Threshold used: ``min(t, 1 - 1e-10)``, so ``t = 1`` still accepts IoU 1.
4. A detection matched to an ignored object is ignored (neither true nor false positive); an
   unmatched detection whose own ``area`` is outside the range is ignored too.

Shape shorthand: T IoU thresholds, D detections (sorted, at most max_dets), G ground truth.
``greedy_match_numpy`` is the plain-Python spec; ``greedy_match`` is the same code compiled by
Numba (the tests check they agree).
"""
from __future__ import annotations

import numpy as np
from numba import njit


def greedy_match_numpy(ious, gt_ignore, gt_crowd, thresholds):
    """ious (D, G) with ground truth already sorted regular-first -> (match (T, D), ignored (T, D)).

    match[t, d]: index (in the sorted ground truth) of the object detection d matched at
    threshold t, or -1. ignored[t, d]: d matched an ignored object.
    """
    n_t, n_d, n_g = thresholds.shape[0], ious.shape[0], ious.shape[1]
    match = np.full((n_t, n_d), -1, dtype=np.int64)
    ignored = np.zeros((n_t, n_d), dtype=np.bool_)
    for t in range(n_t):
        taken = np.zeros(n_g, dtype=np.bool_)
        for d in range(n_d):
            best = min(thresholds[t], 1.0 - 1e-10)
            m = -1
            for g in range(n_g):
                if taken[g] and not gt_crowd[g]:
                    continue                      # a regular object matches one detection only
                if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                    break                         # have a regular match; ignored ones come last
                if ious[d, g] < best:
                    continue
                best = ious[d, g]
                m = g
            if m > -1:
                match[t, d] = m
                ignored[t, d] = gt_ignore[m]
                taken[m] = True
    return match, ignored


greedy_match = njit(cache=True)(greedy_match_numpy)


def evaluate_image(ious, gt_area, gt_crowd, det_area, area_range, thresholds, match_fn=greedy_match):
    """Match one (image, category) pair for one area range.

    ious: (D, G) float64, detections sorted by score (and cut to max_dets), ground truth in file
    order; gt_area (G,), gt_crowd (G,) bool, det_area (D,); area_range (lo, hi), inclusive.
    Returns a dict: ``matched`` (T, D) bool, ``det_ignore`` (T, D) bool, ``gt_ignore`` (G,) bool
    and ``match`` (T, D) int -- the matched ground truth's index in file order, or -1.
    """
    lo, hi = area_range
    gt_area, det_area = np.asarray(gt_area, dtype=np.float64), np.asarray(det_area, dtype=np.float64)
    gt_crowd = np.asarray(gt_crowd, dtype=bool)
    gt_ignore = gt_crowd | (gt_area < lo) | (gt_area > hi)
    order = np.argsort(gt_ignore, kind="mergesort")            # regular objects first, stable
    n_t, n_d = len(thresholds), len(det_area)
    if len(order) and n_d:
        ious_sorted = np.ascontiguousarray(np.asarray(ious, dtype=np.float64)[:, order])
        match, ignored = match_fn(ious_sorted, gt_ignore[order], gt_crowd[order],
                                  np.asarray(thresholds, dtype=np.float64))
    else:
        match = np.full((n_t, n_d), -1, dtype=np.int64)
        ignored = np.zeros((n_t, n_d), dtype=bool)
    matched = match >= 0
    outside = (det_area < lo) | (det_area > hi)
    det_ignore = ignored | (~matched & outside[None, :])
    return {"matched": matched, "det_ignore": det_ignore, "gt_ignore": gt_ignore,
            "match": np.where(matched, order[np.maximum(match, 0)] if len(order) else -1, -1)}
