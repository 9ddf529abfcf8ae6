"""MaskRCNNConfig: torchvision defaults, presets, dict round trips, clear errors."""
import dataclasses
import json

import pytest

from minirc.model import config as C


def test_defaults_are_torchvision():
    cfg = C.MaskRCNNConfig()
    assert cfg == C.torchvision_resnet50()
    assert cfg.num_classes == 91
    assert cfg.transform.min_size == (800,) and cfg.transform.max_size == 1333
    assert cfg.backbone.out_channels == (256, 512, 1024, 2048)
    assert cfg.rpn.pre_nms_top_n_test == 1000 and cfg.rpn.post_nms_top_n_train == 2000
    assert cfg.roi_heads.batch_size_per_image == 512 and cfg.roi_heads.positive_fraction == 0.25
    assert cfg.roi_heads.bbox_reg_weights == (10.0, 10.0, 5.0, 5.0)
    assert cfg.roi_heads.smooth_l1_beta == pytest.approx(1 / 9)
    assert cfg.roi_heads.pooler_type == "roi_align"  # torchvision: aligned=False
    assert cfg.mask_head.resolution == 28 and cfg.mask_head.loss == "sigmoid"


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_presets_round_trip_through_json(name):
    cfg = C.preset(name)
    back = C.MaskRCNNConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg  # lists come back as tuples


def test_frozen_and_override():
    cfg = C.tiny()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.num_classes = 3
    new = C.override(cfg, {"mask_head.loss": "softmax", "roi_heads.pooler_type": "roi_pool", "num_classes": 7})
    assert new.mask_head.loss == "softmax" and new.roi_heads.pooler_type == "roi_pool" and new.num_classes == 7
    assert cfg.mask_head.loss == "sigmoid"  # the original is untouched
    with pytest.raises(ValueError, match="rpn.nope"):
        C.override(cfg, {"rpn.nope": 1})


def test_from_dict_names_unknown_fields():
    d = C.tiny().to_dict()
    d["rpn"]["nms_threshold"] = 0.5
    with pytest.raises(ValueError, match=r"config\.rpn.*nms_threshold"):
        C.MaskRCNNConfig.from_dict(d)


@pytest.mark.parametrize("changes, match", [
    ({"mask_head.loss": "l2"}, "loss"),
    ({"roi_heads.pooler_type": "roi_warp_max"}, "pooler_type"),
    ({"roi_heads.pool_level": 6}, "pool_level"),
    ({"roi_heads.pool_level": 4.0}, "pool_level"),
    ({"backbone.block": "wide"}, "block"),
    ({"backbone.trainable_layers": 6}, "trainable_layers"),
    ({"num_classes": 1}, "num_classes"),
    ({"anchors.sizes": [[32], [64]], "anchors.aspect_ratios": [[1.0], [1.0]]}, "anchors.sizes"),
])
def test_bad_values_raise_naming_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        C.override(C.tiny(), changes)


def test_preset_name_error():
    with pytest.raises(ValueError, match="tiny"):
        C.preset("huge")
