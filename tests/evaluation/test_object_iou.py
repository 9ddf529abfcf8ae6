"""Per-object mask IoU (minirc/evaluation/object_iou.py): hand-computed cases."""
import numpy as np
import pytest

from minirc.evaluation.object_iou import best_mask_ious, mask_ious


def _gt():
    g = np.zeros((2, 4, 4), np.uint8)
    g[0, :2, :2] = 1  # 4 px, top left
    g[1, 2:, 2:] = 1  # 4 px, bottom right
    return {"masks": g, "labels": np.array([1, 2])}


def test_best_same_class_mask_by_hand():
    p = np.zeros((3, 1, 4, 4), np.float32)
    p[0, 0, :2, :3] = 0.9   # class 1: covers gt 0 plus 2 px -> IoU 4 / 6
    p[1, 0, 2:, 2:] = 0.4   # class 2 but below 0.5 after binarising -> empty mask, IoU 0
    p[2, 0, 2:, 2:] = 0.8   # exact mask of gt 1, but of class 1 -> does not count for gt 1
    pred = {"masks": p, "labels": np.array([1, 2, 1]), "scores": np.array([0.9, 0.9, 0.9])}
    np.testing.assert_allclose(best_mask_ious(_gt(), pred), [4 / 6, 0.0])
    pred["labels"] = np.array([1, 2, 2])
    np.testing.assert_allclose(best_mask_ious(_gt(), pred), [4 / 6, 1.0])
    pred["scores"] = np.array([0.9, 0.9, 0.3])  # below the score threshold: ignored
    np.testing.assert_allclose(best_mask_ious(_gt(), pred), [4 / 6, 0.0])


def test_empty_inputs():
    none = {"masks": np.zeros((0, 1, 4, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)}
    np.testing.assert_array_equal(best_mask_ious(_gt(), none), [0.0, 0.0])
    empty_gt = {"masks": np.zeros((0, 4, 4)), "labels": np.zeros(0, int)}
    assert best_mask_ious(empty_gt, none).shape == (0,)
    assert mask_ious(np.zeros((0, 4, 4)), np.zeros((2, 4, 4))).shape == (0, 2)


def test_size_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="pred_masks"):
        mask_ious(np.zeros((1, 4, 4)), np.zeros((1, 5, 4)))
