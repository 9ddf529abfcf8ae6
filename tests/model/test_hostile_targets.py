"""Training data is checked where it enters the model: boxes clipped to the image, masks 0/1,
pixels finite (and a warning, with the fix, for values far outside [0, 1])."""
import numpy as np
import pytest

import minirc.random
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN


def _model():
    minirc.random.manual_seed(0)
    return MaskRCNN(C.tiny())


def _example(boxes, h=64, w=80):
    img = np.random.default_rng(0).random((3, h, w)).astype(np.float32) * 0.2
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes), h, w), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, np.clip(boxes, 0, [w, h, w, h]).astype(int)):
        m[y1:y2, x1:x2] = 1
        img[:, y1:y2, x1:x2] += 0.6
    return img, {"boxes": boxes, "labels": np.ones(len(boxes), np.int64), "masks": masks}


def test_a_huge_target_box_trains_as_the_clipped_box():
    # gt boxes join the proposals: a 6e10 px box used to size RoIAlign's sample tables and segfault
    img, target = _example([[8, 10, 6e10, 6e10], [30, 5, 70, 30]])
    losses = _model()([img], [target])
    assert all(np.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    clipped = dict(target, boxes=np.array([[8, 10, 80, 64], [30, 5, 70, 30]], np.float32))
    same = _model()([img], [clipped])
    assert {k: v.item() for k, v in losses.items()} == {k: v.item() for k, v in same.items()}


def test_a_box_outside_the_image_is_an_error():
    img, target = _example([[8, 10, 40, 50]])
    target["boxes"] = np.array([[100, 10, 140, 50]], np.float32)
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\].*inside the 64x80 image; box 0"):
        _model()([img], [target])


def test_masks_must_be_0_1():
    img, target = _example([[8, 10, 40, 50], [30, 5, 70, 30]])
    target["masks"] = target["masks"] * np.uint8(255)
    with pytest.raises(ValueError, match=r"targets\[0\]\['masks'\]: expected 0/1 values, mask 0 holds "
                                         r"values up to 255 .*divide by 255"):
        _model()([img], [target])
    target["masks"] = target["masks"] > 0  # bool is fine
    _model()([img], [target])


def test_nan_pixels_are_an_image_problem():
    img, target = _example([[8, 10, 40, 50]])
    img[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"images\[1\]: expected finite pixel values .* 1 NaN/inf"):
        _model()([np.full_like(img, 0.5), img], [target, target])
    model = _model()
    model.eval()
    with pytest.raises(ValueError, match=r"images\[0\]: expected finite"):
        model([img])


def test_0_255_images_warn_with_the_fix():
    img, target = _example([[8, 10, 40, 50]])
    with pytest.warns(UserWarning, match=r"images\[0\]: pixel values span .*divide by 255"):
        _model()([img * 255], [target])
