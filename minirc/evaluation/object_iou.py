"""Per-object mask quality: for each ground-truth object, the IoU of the best predicted mask of its class.

COCO's AP summarises detections over IoU thresholds; to see *which* objects a change helps (small
ones, thin ones), it helps to look at one number per object instead. For a ground-truth object g of
class c, its mask IoU is

    max over detections d with label c and score >= score_threshold of  |g & d| / |g | d|

with both masks binary (the prediction binarised at 0.5, as COCO's evaluator does), and 0 when no
such detection exists (a missed object scores 0, so a distribution shows misses too).
"""
from __future__ import annotations

import numpy as np


def mask_ious(gt_masks, pred_masks) -> np.ndarray:
    """IoU of every gt mask with every predicted mask: (M, H, W) x (D, H, W) binary -> (M, D) float64."""
    gt_masks, pred_masks = np.asarray(gt_masks), np.asarray(pred_masks)
    if gt_masks.ndim != 3 or pred_masks.ndim != 3 or gt_masks.shape[1:] != pred_masks.shape[1:]:
        raise ValueError(f"gt_masks, pred_masks: expected (M, H, W) and (D, H, W) of one size, "
                         f"got {gt_masks.shape} and {pred_masks.shape}")
    g = gt_masks.astype(bool).reshape(len(gt_masks), -1) if len(gt_masks) else np.zeros((0, 1), bool)
    d = pred_masks.astype(bool).reshape(len(pred_masks), -1) if len(pred_masks) else np.zeros((0, 1), bool)
    if g.shape[0] == 0 or d.shape[0] == 0:
        return np.zeros((g.shape[0], d.shape[0]), np.float64)
    inter = g.astype(np.float64) @ d.T.astype(np.float64)
    union = g.sum(1)[:, None] + d.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def best_mask_ious(target: dict, prediction: dict, score_threshold: float = 0.5) -> np.ndarray:
    """(M,) IoU of each gt object's best same-class predicted mask (0 if none), for one image.

    target: {"masks": (M, H, W) 0/1, "labels": (M,) int}; prediction: {"masks": (D, H, W) or
    (D, 1, H, W) probabilities or 0/1, "labels": (D,), "scores": (D,)}.
    """
    gt_masks, gt_labels = np.asarray(target["masks"]), np.asarray(target["labels"])
    keep = np.asarray(prediction["scores"]) >= score_threshold
    masks = np.asarray(prediction["masks"]).reshape(len(keep), *gt_masks.shape[1:])[keep] >= 0.5
    labels = np.asarray(prediction["labels"])[keep]
    ious = mask_ious(gt_masks, masks)
    same = gt_labels[:, None] == labels[None, :]
    return np.where(same, ious, 0.0).max(axis=1, initial=0.0)
