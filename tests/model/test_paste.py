"""Mask pasting (docs/semantics.md section 16, case T9) and the bilinear / nearest resizing it shares with the transform."""
import numpy as np
import pytest

from minirc.model.paste import expand_boxes, expand_masks, paste_mask_in_image, paste_masks_in_image
from minirc.model.transform import interpolate_bilinear, interpolate_nearest


def _t9_mask():
    m = np.zeros((1, 28, 28), np.float32)
    m[0, 7:21, 7:21] = 1
    return m


T9_BOX = np.array([[10.3, 20.7, 40.2, 50.9]], np.float32)


def test_t9_expanded_box_and_sizes():
    padded, scale = expand_masks(_t9_mask(), padding=1)
    assert padded.shape == (1, 30, 30) and scale == 30 / 28
    assert padded[0, 0].sum() == 0 and padded[0, 8:22, 8:22].min() == 1  # ones shifted by the pad
    assert expand_boxes(T9_BOX, scale).astype(np.int64).tolist() == [[9, 19, 41, 51]]


def test_t9_paste_values():
    out = paste_masks_in_image(_t9_mask(), T9_BOX, (64, 64))
    assert out.shape == (1, 64, 64) and out.dtype == np.float32
    rows, cols = np.nonzero(out[0] >= 0.5)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (28, 42, 18, 32)
    assert out.sum() == pytest.approx(238.843, abs=1e-3)
    # the pasted block is the padded mask resized to the 33x33 integer box, placed at (x=9, y=19)
    padded, _ = expand_masks(_t9_mask())
    np.testing.assert_array_equal(out[0, 19:52, 9:42], interpolate_bilinear(padded[0], (33, 33)))
    assert out[0, :19].sum() == 0 and out[0, :, :9].sum() == 0


def test_truncation_toward_zero_and_clipping_at_the_border():
    box = np.array([[-3.9, -2.2, 20.0, 9.0]], np.float32)
    grown = expand_boxes(box, 30 / 28)
    assert grown[0, 0] < -4 and grown.astype(np.int64)[0, 0] == -4  # -4.7 -> -4, not -5
    m = np.random.default_rng(0).random((1, 28, 28)).astype(np.float32)
    x1, y1, x2, y2 = grown.astype(np.int64)[0]
    full = interpolate_bilinear(expand_masks(m)[0][0], (y2 - y1 + 1, x2 - x1 + 1))
    out = paste_masks_in_image(m, box, (12, 16))[0]
    np.testing.assert_array_equal(out[:min(y2 + 1, 12), :min(x2 + 1, 16)],
                                  full[-y1:-y1 + min(y2 + 1, 12), -x1:-x1 + min(x2 + 1, 16)])


def test_boxes_outside_and_degenerate_paste_safely():
    m = np.ones((3, 28, 28), np.float32)
    boxes = np.array([[40, -5, 43, -5], [100, 100, 120, 130], [5, 5, 5, 5]], np.float32)
    out = paste_masks_in_image(m, boxes, (32, 48))
    assert out.shape == (3, 32, 48)
    assert out[0].sum() == 0 and out[1].sum() == 0  # wholly outside: nothing (torchvision raises here)
    assert out[2].sum() > 0  # a zero-size box still covers its one pixel


def test_empty_and_4d_input():
    assert paste_masks_in_image(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4), np.float32), (5, 7)).shape == (0, 5, 7)
    m = np.random.default_rng(1).random((2, 1, 14, 14)).astype(np.float32)
    b = np.array([[1, 1, 8, 9], [0, 2, 5, 5]], np.float32)
    np.testing.assert_array_equal(paste_masks_in_image(m, b, (10, 10)), paste_masks_in_image(m[:, 0], b, (10, 10)))
    with pytest.raises(ValueError, match="masks"):
        paste_masks_in_image(m, b[:1], (10, 10))


def test_paste_mask_in_image_direct():
    m = np.zeros((30, 30), np.float32)
    out = paste_mask_in_image(m + 1, np.array([2, 3, 4, 5]), 8, 8)
    assert out[3:6, 2:5].min() == 1 and out.sum() == 9


# ----- the resizing kernels ---------------------------------------------------------------------

def test_bilinear_by_hand():
    x = np.array([[[0.0, 1.0]]], np.float32)
    np.testing.assert_allclose(interpolate_bilinear(x, (1, 4)), [[[0, 0.25, 0.75, 1]]])
    # downsampling 4 -> 2: sources at 0.5 and 2.5
    x = np.arange(4, dtype=np.float32)[None, None]
    np.testing.assert_allclose(interpolate_bilinear(x, (1, 2)), [[[0.5, 2.5]]])
    y = np.random.default_rng(0).random((2, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(interpolate_bilinear(y, (5, 6)), y)  # same size: a copy
    np.testing.assert_allclose(interpolate_bilinear(np.full((3, 4), 0.3, np.float32), (7, 9)), 0.3, rtol=1e-6)


def test_nearest_by_hand():
    x = np.array([[1, 2, 3]], np.uint8)
    assert interpolate_nearest(x, (1, 5)).tolist() == [[1, 1, 2, 2, 3]]  # floor(dst * 0.6)
    assert interpolate_nearest(x, (2, 6)).tolist() == [[1, 1, 2, 2, 3, 3]] * 2  # exact 2x repeats
    assert interpolate_nearest(x, (1, 2)).tolist() == [[1, 2]]  # floor(dst * 1.5) = 0, 1
    assert interpolate_nearest(x, (1, 2)).dtype == np.uint8


def test_against_torchvision():
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torch.nn.functional")
    roi_heads = pytest.importorskip("torchvision.models.detection.roi_heads")
    rng = np.random.default_rng(0)
    x = rng.random((3, 48, 61)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(x)[None], size=(80, 106), mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(interpolate_bilinear(x, (80, 106)), ref, atol=3e-7)
    masks = rng.random((30, 1, 28, 28)).astype(np.float32)
    boxes = (rng.random((30, 4)) * 50 - 4).astype(np.float32)
    boxes[:, 2:] = boxes[:, :2] + 1 + rng.random((30, 2)).astype(np.float32) * 30
    ref = roi_heads.paste_masks_in_image(torch.from_numpy(masks), torch.from_numpy(boxes), (60, 70))[:, 0].numpy()
    np.testing.assert_allclose(paste_masks_in_image(masks, boxes, (60, 70)), ref, atol=3e-7)
