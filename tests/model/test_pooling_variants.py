"""Every RoI pooler type and single-level pooling (roi_heads.pool_level) in the whole detector: the
model builds, trains a step (forward and backward) and predicts; the stride-16/32 presets."""
import numpy as np
import pytest

import minirc.random
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN
from minirc.optim import SGD

LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def _example(size=64, boxes=((8, 10, 40, 50), (30, 5, 60, 30)), labels=(1, 3)):
    """One image with filled rectangles (one mask per box) and its target dict."""
    img = np.random.default_rng(1).random((3, size, size)).astype(np.float32) * 0.2
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes), size, size), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        m[y1:y2, x1:x2] = 1
        img[:, y1:y2, x1:x2] += 0.6
    return img, {"boxes": boxes, "labels": np.asarray(labels, np.int64), "masks": masks}


def _train_step(cfg, size=64):
    """One SGD step on one image; returns the model, the losses and whether the box head moved."""
    minirc.random.manual_seed(0)
    model = MaskRCNN(cfg)
    img, target = _example(size)
    before = model.roi_heads.box_head.fc6.weight.data.copy()
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = model([img], [target])
    sum(losses.values()).backward()
    opt.step()
    return model, losses, not np.array_equal(before, model.roi_heads.box_head.fc6.weight.data)


@pytest.mark.parametrize("pooler_type", C.POOLER_TYPES)
def test_every_pooler_type_trains_and_predicts(pooler_type):
    model, losses, moved = _train_step(C.override(C.tiny(), {"roi_heads.pooler_type": pooler_type}))
    assert set(losses) == LOSS_KEYS and all(np.isfinite(v.item()) for v in losses.values())
    assert moved  # the gradient came back through the pooler into the heads
    assert model.roi_heads.box_roi_pool.pooler_type == model.roi_heads.mask_roi_pool.pooler_type == pooler_type
    model.eval()
    det = model([_example()[0]])[0]
    assert det["masks"].ndim == 3 and len(det["masks"]) == len(det["boxes"])


@pytest.mark.parametrize("level", [4, 5])
def test_pool_level_reaches_both_poolers_and_the_backbone(level):
    cfg = C.override(C.tiny(), {"roi_heads.pool_level": level, "roi_heads.pooler_type": "roi_warp"})
    model, losses, moved = _train_step(cfg)
    assert all(np.isfinite(v.item()) for v in losses.values()) and moved
    for pooler in (model.roi_heads.box_roi_pool, model.roi_heads.mask_roi_pool):
        assert pooler.level == level and pooler.scales[level - 2] == 2.0 ** -level


@pytest.mark.parametrize("name, level", [("shapes_stride16", 4), ("shapes_stride32", 5)])
def test_single_level_presets_train_one_step(name, level):
    cfg = C.preset(name)
    assert cfg.roi_heads.pool_level == level
    assert C.override(cfg, {"roi_heads.pool_level": None}) == C.shapes_demo()  # nothing else differs
    _, losses, moved = _train_step(cfg, size=128)
    assert set(losses) == LOSS_KEYS and all(np.isfinite(v.item()) for v in losses.values()) and moved


@pytest.mark.parametrize("value", [1, 6, 4.0, "4", True])
def test_bad_pool_level_names_the_field(value):
    with pytest.raises(ValueError, match=r"RoIHeadsConfig\.pool_level: expected None .* or a level in \(2, 3, 4, 5\)"):
        C.override(C.tiny(), {"roi_heads.pool_level": value})
