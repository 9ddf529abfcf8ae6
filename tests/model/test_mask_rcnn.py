"""The whole detector: loss keys and output shapes on the tiny config, empty cases, target checks,
torchvision's state-dict layout (Appendix A) and the weight loader."""
import numpy as np
import pytest

import minirc.random
from minirc.autograd import Tensor
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN, load_torchvision_state_dict, torchvision_key

LOSS_KEYS = {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}


def _model(**changes):
    minirc.random.manual_seed(0)
    return MaskRCNN(C.override(C.tiny(), changes) if changes else C.tiny())


def _example(h, w, boxes, labels, seed=0):
    """An image with filled rectangles (one mask per box) and its target dict."""
    img = np.random.default_rng(seed).random((3, h, w)).astype(np.float32) * 0.2
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    masks = np.zeros((len(boxes), h, w), np.uint8)
    for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
        m[y1:y2, x1:x2] = 1
        img[:, y1:y2, x1:x2] += 0.6
    return img, {"boxes": boxes, "labels": np.asarray(labels, np.int64), "masks": masks}


def _batch():
    a = _example(64, 80, [[8, 10, 40, 50], [30, 5, 70, 30]], [1, 3], seed=1)
    b = _example(72, 64, [[20, 20, 50, 60]], [2], seed=2)
    return [a[0], b[0]], [a[1], b[1]]


def test_training_returns_the_five_losses_and_gradients():
    model = _model()
    images, targets = _batch()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    assert all(isinstance(v, Tensor) and v.size == 1 and np.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_eval_outputs_in_original_image_sizes():
    model = _model(**{"roi_heads.score_thresh": 0.0})
    model.eval()
    images, _ = _batch()
    out = model(images)
    assert len(out) == 2
    for det, img in zip(out, images):
        d = len(det["boxes"])
        assert 0 < d <= 20  # tiny(): detections_per_img = 20
        assert det["boxes"].shape == (d, 4) and det["boxes"].dtype == np.float32
        assert det["labels"].dtype == np.int64 and det["labels"].min() >= 1 and det["labels"].max() <= 3
        assert det["scores"].shape == (d,) and np.all(np.diff(det["scores"]) <= 0)
        assert det["masks"].shape == (d,) + img.shape[1:] and det["masks"].dtype == np.float32
        assert det["masks"].min() >= 0 and det["masks"].max() <= 1  # soft; threshold at 0.5 yourself
    assert all(p.grad is None for p in model.parameters())  # eval records no graph


def test_images_without_objects():
    model = _model()
    images, targets = _batch()
    empty = {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
             "masks": np.zeros((0, 72, 64), np.uint8)}
    losses = model(images, [targets[0], empty])
    assert set(losses) == LOSS_KEYS and all(np.isfinite(v.item()) for v in losses.values())
    losses = model(images[1:], [empty])  # nothing to find anywhere: no positive RoI, no mask loss
    assert losses["loss_mask"].item() == 0 and losses["loss_box_reg"].item() == 0
    assert np.isfinite(losses["loss_classifier"].item())
    sum(losses.values()).backward()


def test_empty_proposals_and_empty_detections():
    model = _model(**{"rpn.score_thresh": 2.0})  # sigmoid(objectness) never reaches 2: no proposals
    images, targets = _batch()
    images, targets = images[1:], targets[1:]
    losses = model(images, targets)  # the appended gt boxes are still sampled
    assert set(losses) == LOSS_KEYS and all(np.isfinite(v.item()) for v in losses.values())
    model.eval()
    for det, img in zip(model(images), images):
        assert det["boxes"].shape == (0, 4) and det["scores"].shape == (0,) and det["labels"].shape == (0,)
        assert det["masks"].shape == (0,) + img.shape[1:]
    model = _model(**{"roi_heads.score_thresh": 1.0})  # softmax scores never exceed 1: no detections
    model.eval()
    assert [len(d["boxes"]) for d in model(images)] == [0]


@pytest.mark.parametrize("pooler_type, mask_loss", [("roi_pool", "softmax"), ("roi_align", "sigmoid"),
                                                    ("roi_align_aligned", "softmax")])
def test_switches(pooler_type, mask_loss):
    model = _model(**{"roi_heads.pooler_type": pooler_type, "mask_head.loss": mask_loss})
    images, targets = _batch()
    losses = model(images[1:], targets[1:])
    assert all(np.isfinite(v.item()) for v in losses.values())
    model.eval()
    assert model(images[:1])[0]["masks"].ndim == 3


def test_same_seed_same_losses():
    images, targets = _batch()
    a = {k: v.item() for k, v in _model()(images[:1], targets[:1]).items()}
    b = {k: v.item() for k, v in _model()(images[:1], targets[:1]).items()}
    assert a == b


@pytest.mark.parametrize("field, value, error, match", [
    ("boxes", np.array([[8, 10, 40, 50], [30, 5, 30, 30]], np.float32), ValueError, r"targets\[1\]\['boxes'\].*box 1"),
    ("boxes", np.array([[8, 10, 40, 50], [30, 50, 70, 30]], np.float32), ValueError, r"x2 > x1 and y2 > y1"),
    ("boxes", np.array([[8, 10, 40, 50], [30, 5, 70, 30]], np.int64), TypeError, r"targets\[1\]\['boxes'\].*float"),
    ("boxes", np.zeros((2, 5), np.float32), ValueError, r"targets\[1\]\['boxes'\].*\(M, 4\)"),
    ("labels", np.array([1, 4]), ValueError, r"targets\[1\]\['labels'\].*1\.\.3.*4"),
    ("labels", np.array([0, 1]), ValueError, r"targets\[1\]\['labels'\].*background"),
    ("labels", np.array([1.0, 2.0]), TypeError, r"targets\[1\]\['labels'\].*int64"),
    ("labels", np.array([1]), ValueError, r"targets\[1\]\['labels'\].*\(2,\)"),
    ("masks", np.zeros((2, 64, 64), np.uint8), ValueError, r"targets\[1\]\['masks'\].*\(2, 64, 80\)"),
    ("masks", np.zeros((1, 64, 80), np.uint8), ValueError, r"targets\[1\]\['masks'\]"),
    ("masks", np.zeros((2, 64, 80), np.float32), TypeError, r"targets\[1\]\['masks'\].*uint8"),
])
def test_bad_targets_name_the_image_and_field(field, value, error, match):
    model = _model()
    img, target = _example(64, 80, [[8, 10, 40, 50], [30, 5, 70, 30]], [1, 3])
    bad = dict(target, **{field: value})
    with pytest.raises(error, match=match):
        model([img, img], [target, bad])


def test_bad_calls():
    model = _model()
    img, target = _example(64, 80, [[8, 10, 40, 50]], [1])
    with pytest.raises(ValueError, match="targets: required in training"):
        model([img])
    with pytest.raises(ValueError, match="targets"):
        model([img, img], [target])
    with pytest.raises(ValueError, match=r"targets\[0\].*'masks'"):
        model([img], [{"boxes": target["boxes"], "labels": target["labels"]}])
    with pytest.raises(ValueError, match=r"images\[0\].*\(3, H, W\)"):
        model([img.transpose(1, 2, 0)], [target])
    with pytest.raises(TypeError, match="images"):
        model(img, [target])


# ----- torchvision compatibility ----------------------------------------------------------------

def _bn(prefix, c):
    return {f"{prefix}.{n}": (c,) for n in ("weight", "bias", "running_mean", "running_var")}


def expected_torchvision_shapes():
    """docs/semantics.md section 20, written out: maskrcnn_resnet50_fpn's 307 state-dict entries."""
    s = {"backbone.body.conv1.weight": (64, 3, 7, 7), **_bn("backbone.body.bn1", 64)}
    in_ch = 64
    for layer, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=1):
        for b in range(blocks):
            p = f"backbone.body.layer{layer}.{b}"
            s[f"{p}.conv1.weight"] = (width, in_ch if b == 0 else 4 * width, 1, 1)
            s.update(_bn(f"{p}.bn1", width))
            s[f"{p}.conv2.weight"] = (width, width, 3, 3)
            s.update(_bn(f"{p}.bn2", width))
            s[f"{p}.conv3.weight"] = (4 * width, width, 1, 1)
            s.update(_bn(f"{p}.bn3", 4 * width))
            if b == 0:
                s[f"{p}.downsample.0.weight"] = (4 * width, in_ch, 1, 1)
                s.update(_bn(f"{p}.downsample.1", 4 * width))
        in_ch = 4 * width
    for i, c in enumerate((256, 512, 1024, 2048)):
        s.update({f"backbone.fpn.inner_blocks.{i}.0.weight": (256, c, 1, 1), f"backbone.fpn.inner_blocks.{i}.0.bias": (256,)})
    for i in range(4):
        s.update({f"backbone.fpn.layer_blocks.{i}.0.weight": (256, 256, 3, 3), f"backbone.fpn.layer_blocks.{i}.0.bias": (256,)})
    s.update({"rpn.head.conv.0.0.weight": (256, 256, 3, 3), "rpn.head.conv.0.0.bias": (256,),
              "rpn.head.cls_logits.weight": (3, 256, 1, 1), "rpn.head.cls_logits.bias": (3,),
              "rpn.head.bbox_pred.weight": (12, 256, 1, 1), "rpn.head.bbox_pred.bias": (12,),
              "roi_heads.box_head.fc6.weight": (1024, 12544), "roi_heads.box_head.fc6.bias": (1024,),
              "roi_heads.box_head.fc7.weight": (1024, 1024), "roi_heads.box_head.fc7.bias": (1024,),
              "roi_heads.box_predictor.cls_score.weight": (91, 1024), "roi_heads.box_predictor.cls_score.bias": (91,),
              "roi_heads.box_predictor.bbox_pred.weight": (364, 1024), "roi_heads.box_predictor.bbox_pred.bias": (364,)})
    for i in range(4):
        s.update({f"roi_heads.mask_head.{i}.0.weight": (256, 256, 3, 3), f"roi_heads.mask_head.{i}.0.bias": (256,)})
    s.update({"roi_heads.mask_predictor.conv5_mask.weight": (256, 256, 2, 2),
              "roi_heads.mask_predictor.conv5_mask.bias": (256,),
              "roi_heads.mask_predictor.mask_fcn_logits.weight": (91, 256, 1, 1),
              "roi_heads.mask_predictor.mask_fcn_logits.bias": (91,)})
    return s


@pytest.fixture(scope="module")
def resnet50_model():
    return MaskRCNN(C.torchvision_resnet50())  # 44M float32 parameters, built once


def test_torchvision_resnet50_layout(resnet50_model):
    shapes = {k: tuple(v.shape) for k, v in resnet50_model.state_dict().items()}
    expected = expected_torchvision_shapes()
    assert len(expected) == 307
    assert shapes == expected
    params = list(resnet50_model.parameters())
    assert len(params) == 95  # the other 212 entries are FrozenBN buffers
    assert sum(p.size for p in params) == 44_401_393  # MaskRCNN_ResNet50_FPN_Weights.COCO_V1.meta
    assert sum(p.size for p in params if p.requires_grad) == 44_178_993  # conv1 and layer1 frozen
    assert resnet50_model.backbone.body.bn1.eps == 0.0  # the COCO_V1 weights' eps


def test_torchvision_resnet50_against_torch(resnet50_model):
    pytest.importorskip("torch")
    tvd = pytest.importorskip("torchvision.models.detection")
    ref = tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91)
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(resnet50_model.state_dict()) == list(ref_shapes)  # same keys, same order
    assert {k: tuple(v.shape) for k, v in resnet50_model.state_dict().items()} == ref_shapes


def test_legacy_key_names():
    assert torchvision_key("rpn.head.conv.weight") == "rpn.head.conv.0.0.weight"
    assert torchvision_key("backbone.fpn.inner_blocks.2.bias") == "backbone.fpn.inner_blocks.2.0.bias"
    assert torchvision_key("backbone.fpn.layer_blocks.0.weight") == "backbone.fpn.layer_blocks.0.0.weight"
    assert torchvision_key("roi_heads.mask_head.mask_fcn1.weight") == "roi_heads.mask_head.0.0.weight"
    assert torchvision_key("roi_heads.mask_head.mask_fcn4.bias") == "roi_heads.mask_head.3.0.bias"
    assert torchvision_key("backbone.fpn.inner_blocks.2.0.bias") == "backbone.fpn.inner_blocks.2.0.bias"


def _legacy_name(key):
    return (key.replace("rpn.head.conv.0.0.", "rpn.head.conv.").replace("mask_head.1.0.", "mask_head.mask_fcn2.")
            .replace("inner_blocks.3.0.", "inner_blocks.3."))


def test_load_torchvision_state_dict_round_trip():
    rng = np.random.default_rng(0)
    names = {k: _legacy_name(k) for k in _model().state_dict()}
    legacy = {names[k]: v + rng.random(v.shape).astype(v.dtype) for k, v in _model().state_dict().items()}
    legacy["backbone.body.bn1.num_batches_tracked"] = np.array(7)  # plain BatchNorm checkpoints carry it
    assert "rpn.head.conv.weight" in legacy and "roi_heads.mask_head.mask_fcn2.weight" in legacy
    target = load_torchvision_state_dict(_model(), legacy)
    for k, v in target.state_dict().items():
        np.testing.assert_array_equal(v, legacy[names[k]], err_msg=k)
    del legacy["rpn.head.cls_logits.bias"]
    legacy["roi_heads.extra.weight"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"1 missing.*rpn\.head\.cls_logits\.bias.*1 unexpected.*extra"):
        load_torchvision_state_dict(target, legacy)
    legacy["rpn.head.cls_logits.bias"] = np.zeros(4)
    del legacy["roi_heads.extra.weight"]
    with pytest.raises(ValueError, match=r"1 with another shape.*cls_logits"):
        load_torchvision_state_dict(target, legacy)
