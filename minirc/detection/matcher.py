"""Matcher: give every anchor (or proposal) one ground-truth box, or a negative code.

Shape shorthand: M ground-truth boxes, N predictions (anchors or proposals).

Conventions followed (torchvision ``models/detection/_utils.py::Matcher``; see docs/matching.md):

* the input is the quality matrix ``(M gt, N predictions)``, usually ``box_iou(gt, anchors)``;
* each prediction takes its best gt (``argmax`` over gts: the **lowest** gt index wins a tie);
* best IoU ``< low`` -> ``-1`` (background), ``low <= IoU < high`` -> ``-2`` (ignored),
  ``>= high`` -> the gt index (both comparisons as written: ``>=`` high is a match);
* ``allow_low_quality_matches`` (the RPN's "best-anchor rule", Faster R-CNN Sec. 3.1.2): for each gt, every
  prediction whose IoU **equals** that gt's best IoU (ties included, compared exactly in the matrix dtype)
  gets back its own argmax gt, even if that gt is another one, and even if it was below ``low``.
"""
from __future__ import annotations

import numpy as np

from minirc._checks import as_array, number


class Matcher:
    """``Matcher(high_threshold, low_threshold, allow_low_quality_matches=False)``.

    ``matcher(match_quality_matrix)`` with a ``(M, N)`` float matrix returns ``(N,)`` int64 matches:
    a gt index in ``[0, M)``, ``Matcher.BELOW_LOW_THRESHOLD`` (-1) or ``Matcher.BETWEEN_THRESHOLDS`` (-2).
    An empty matrix raises ``ValueError`` (callers handle images without gt before matching).

    >>> Matcher(0.7, 0.3, True)(np.array([[0.15, 0.45, 0.2, 0.6], [0.3, 0.65, 0.05, 0.1],
    ...                                    [0.05, 0.4, 0.25, 0.4]])).tolist()
    [-2, 1, -1, 0]
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        self.high_threshold = number(high_threshold, "high_threshold")
        self.low_threshold = number(low_threshold, "low_threshold")
        if self.low_threshold > self.high_threshold:
            raise ValueError(f"low_threshold: expected a value <= high_threshold ({high_threshold}), "
                             f"got {low_threshold}")
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, match_quality_matrix) -> np.ndarray:
        quality = as_array(match_quality_matrix, "match_quality_matrix", ndim=2, allow_device=False)
        if quality.size == 0:
            if quality.shape[0] == 0:
                raise ValueError("match_quality_matrix: got 0 ground-truth rows; an image without objects "
                                 "must be labelled all-background before matching (as the RPN does)")
            raise ValueError(f"match_quality_matrix: got 0 prediction columns (shape {quality.shape})")
        # (M, N) -> (N,): best gt per prediction; np.argmax returns the first maximum (lowest gt index)
        all_matches = np.argmax(quality, axis=0).astype(np.int64)
        matched_vals = quality[all_matches, np.arange(quality.shape[1])]
        matches = all_matches.copy()
        matches[matched_vals < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        between = (matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)
        matches[between] = self.BETWEEN_THRESHOLDS
        if self.allow_low_quality_matches:
            self._set_low_quality_matches(matches, all_matches, quality)
        return matches

    @staticmethod
    def best_prediction_pairs(quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(gt indices, prediction indices) of every pair whose quality equals its gt's best, ties included."""
        best_per_gt = quality.max(axis=1)  # (M,)
        return np.nonzero(quality == best_per_gt[:, None])

    def _set_low_quality_matches(self, matches, all_matches, quality) -> None:
        # A prediction rescued by gt g gets its *own* best gt back (all_matches), not necessarily g:
        # torchvision's rule, which this reproduces on purpose.
        _, preds = self.best_prediction_pairs(quality)
        matches[preds] = all_matches[preds]

    def __repr__(self):
        return (f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
                f"allow_low_quality_matches={self.allow_low_quality_matches})")
