"""The two torchvision ResNet-50-FPN Mask R-CNNs against minirc's presets, stage by stage (skipped without torch).

torchvision's ``maskrcnn_resnet50_fpn_v2`` and ``maskrcnn_resnet50_fpn`` (built as its COCO_V1 weights
run it: FrozenBatchNorm2d, eps 0.0) with seeded random weights, every norm layer's statistics and affine
parameters randomised (variances down to 1e-3, so eps and the folding of the norm matter), export their
state dicts, which minirc's ``torchvision_resnet50_v2`` / ``torchvision_resnet50`` presets load.
Each minirc stage is fed torchvision's input for that stage (transform, body, FPN, RPN head, anchors,
proposals, pooled features, box head, detections, mask head, pasted masks), so errors do not compound
and NMS choices do not cascade; then the whole detector end to end. Small images (shorter side 160)
and few proposals keep each model to seconds. Tolerances: features 1e-5 relative to the tensor's
largest magnitude, boxes 1e-3 px, detections compared as sets.
"""
import matplotlib.cbook
import numpy as np
import pytest

from minirc.autograd import Tensor, no_grad
from minirc.data import read_image
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN, load_torchvision_state_dict
from minirc.model.paste import paste_masks_in_image
from minirc.model.roi_heads import postprocess_detections

torch = pytest.importorskip("torch")
tvd = pytest.importorskip("torchvision.models.detection")

SMALL = {"transform.min_size": (160,), "transform.max_size": 200, "rpn.pre_nms_top_n_test": 200,
         "rpn.post_nms_top_n_test": 50, "roi_heads.score_thresh": 0.0, "roi_heads.detections_per_img": 10}
TORCH_SMALL = {"min_size": 160, "max_size": 200, "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_test": 50,
               "box_score_thresh": 0.0, "box_detections_per_img": 10}
REL = 1e-5  # features: |minirc - torchvision| <= REL * max |torchvision|
BOX_ATOL = 1e-3  # pixels


def _randomise_norms(model, seed, score_scale):
    """Every norm layer: var = 10^U(-3, 0.3), weight = sqrt(var) * U(0.5, 1.5) (a gain near 1 whatever
    the variance, so activations stay in range through 50 layers), mean and bias ~ N(0, 0.1)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_var.shape[0]
                var = 10.0 ** (torch.rand(c, generator=g) * 3.3 - 3.0)
                m.running_var.copy_(var)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.weight.copy_(var.sqrt() * (0.5 + torch.rand(c, generator=g)))
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
        # class scores between saturation (ties at 1.0) and a uniform softmax (ties near 1/91)
        model.roi_heads.box_predictor.cls_score.weight.mul_(score_scale)


def _torch_v1(**kwargs):
    """maskrcnn_resnet50_fpn as torchvision builds it for its COCO_V1 weights (weights=... would download)."""
    from torchvision.models import resnet50
    from torchvision.models.detection._utils import overwrite_eps
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops.misc import FrozenBatchNorm2d

    model = tvd.MaskRCNN(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3), num_classes=91, **kwargs)
    overwrite_eps(model, 0.0)
    return model


def _build(version):
    torch.manual_seed(0)
    if version == "v2":
        ref = tvd.maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, **TORCH_SMALL)
        cfg = C.override(C.torchvision_resnet50_v2(), SMALL)
    else:
        ref = _torch_v1(**TORCH_SMALL)
        cfg = C.override(C.torchvision_resnet50(), SMALL)
    _randomise_norms(ref, seed=1, score_scale=0.1 if version == "v2" else 0.25)
    ref.eval()
    state = {k: v.numpy() for k, v in ref.state_dict().items()}
    ours = load_torchvision_state_dict(MaskRCNN(cfg), state).eval()
    return ref, ours, state


@pytest.fixture(scope="module", params=["v2", "v1"])
def pair(request):
    return _build(request.param)


@pytest.fixture(scope="module")
def image():
    return read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))  # (3, 600, 512)


def _np(t):
    return t.detach().numpy() if hasattr(t, "detach") else np.asarray(t.data if isinstance(t, Tensor) else t)


def _close(got, expected, what, rel=REL):
    got, expected = _np(got), _np(expected)
    assert got.shape == expected.shape, what
    scale = max(float(np.abs(expected).max()), 1e-12)
    err = float(np.abs(got - expected).max()) if got.size else 0.0
    assert err <= rel * scale, f"{what}: max |error| {err:.3g} > {rel:g} x max |value| {scale:.3g}"


def _same_detections(got, expected, what, box_atol=BOX_ATOL, score_atol=1e-5):
    """Detections as sets: each of torchvision's (label, box, score) has its own minirc partner."""
    gb, gl, gs = (_np(got[k]) for k in ("boxes", "labels", "scores"))
    eb, el, es = (_np(expected[k]) for k in ("boxes", "labels", "scores"))
    assert len(gb) == len(eb), f"{what}: {len(gb)} detections, torchvision {len(eb)}"
    unused = set(range(len(gb)))
    for b, lab, s in zip(eb, el, es):
        match = [j for j in unused if gl[j] == lab and np.abs(gb[j] - b).max() <= box_atol
                 and abs(gs[j] - s) <= score_atol]
        assert match, f"{what}: torchvision's detection {lab} {b.tolist()} {s:.6f} has no minirc partner"
        unused.remove(match[0])


@pytest.fixture(scope="module")
def stages(pair, image):
    return _torch_stages(pair, image)


def _torch_stages(pair, image):
    """torchvision's intermediate results on the image, stage by stage (its own RPN/RoI code paths)."""
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    ref, _, _ = pair
    s = {}
    with torch.no_grad():
        images, _ = ref.transform([torch.from_numpy(image)])
        s["images"] = images
        s["body"] = list(ref.backbone.body(images.tensors).values())
        fpn = ref.backbone.fpn(dict(zip("0123", s["body"])))
        s["fpn"] = fpn
        feats = list(fpn.values())
        s["rpn_logits"], s["rpn_deltas"] = ref.rpn.head(feats)
        s["anchors"] = ref.rpn.anchor_generator(images, feats)
        counts = [o[0].numel() for o in s["rpn_logits"]]
        objectness, deltas = concat_box_prediction_layers(s["rpn_logits"], s["rpn_deltas"])
        s["decoded"] = ref.rpn.box_coder.decode(deltas, s["anchors"]).view(1, -1, 4)
        s["objectness"], s["flat_deltas"], s["counts"] = objectness.view(1, -1), deltas, counts
        boxes, scores = ref.rpn.filter_proposals(s["decoded"], objectness, images.image_sizes, counts)
        s["proposals"], s["proposal_scores"] = boxes, scores
        rh = ref.roi_heads
        s["box_pooled"] = rh.box_roi_pool(fpn, boxes, images.image_sizes)
        s["box_features"] = rh.box_head(s["box_pooled"])
        s["class_logits"], s["box_regression"] = rh.box_predictor(s["box_features"])
        det_boxes, det_scores, det_labels = rh.postprocess_detections(
            s["class_logits"], s["box_regression"], boxes, images.image_sizes)
        s["detections"] = {"boxes": det_boxes[0], "scores": det_scores[0], "labels": det_labels[0]}
        s["mask_pooled"] = rh.mask_roi_pool(fpn, det_boxes, images.image_sizes)
        s["mask_features"] = rh.mask_head(s["mask_pooled"])
        s["mask_logits"] = rh.mask_predictor(s["mask_features"])
        s["final"] = ref([torch.from_numpy(image)])[0]
    return s


def test_layout_and_parameter_count(pair):
    ref, ours, state = pair
    own = ours.state_dict()
    expected = [k for k in state if not (k.endswith("num_batches_tracked") and k not in own)]
    assert list(own) == expected  # same keys, same order (FrozenBN models keep no num_batches_tracked)
    assert sum(p.size for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    assert sum(p.size for p in ours.parameters()) in (44_401_393, 46_359_409)


def test_transform(pair, stages, image):
    _, ours, _ = pair
    batch, _ = ours.transform([image])
    assert batch.image_sizes == [tuple(s) for s in stages["images"].image_sizes]
    _close(batch.tensors, stages["images"].tensors, "normalised, resized, padded batch")


def test_body_and_fpn(pair, stages):
    _, ours, _ = pair
    with no_grad():
        body = ours.backbone.body(Tensor(stages["images"].tensors.numpy()))
        for k, (got, exp) in enumerate(zip(body, stages["body"])):
            _close(got, exp, f"body C{k + 2}")
        fpn = ours.backbone.fpn([Tensor(c.numpy()) for c in stages["body"]])
    assert len(fpn) == len(stages["fpn"]) == 5
    for got, (name, exp) in zip(fpn, stages["fpn"].items()):
        _close(got, exp, f"FPN level {name}")


def test_rpn_head_anchors_and_proposals(pair, stages):
    _, ours, _ = pair
    feats = [Tensor(f.numpy()) for f in stages["fpn"].values()]
    with no_grad():
        logits, deltas = ours.rpn.head(feats)
    for k, (gl, el, gd, ed) in enumerate(zip(logits, stages["rpn_logits"], deltas, stages["rpn_deltas"])):
        _close(gl, el, f"RPN objectness, level {k}")
        _close(gd, ed, f"RPN deltas, level {k}")
    padded = tuple(stages["images"].tensors.shape[-2:])
    anchors = np.concatenate(ours.rpn.anchor_generator(padded, [tuple(f.shape[-2:]) for f in feats]))
    np.testing.assert_allclose(anchors, stages["anchors"][0].numpy(), atol=BOX_ATOL)
    decoded = ours.rpn.box_coder.decode(stages["flat_deltas"].numpy(), anchors).reshape(1, -1, 4)
    np.testing.assert_allclose(decoded, stages["decoded"].numpy(), atol=BOX_ATOL)
    sizes = [tuple(s) for s in stages["images"].image_sizes]
    boxes, scores = ours.rpn.filter_proposals(stages["decoded"].numpy(), stages["objectness"].numpy(), sizes,
                                              stages["counts"])
    np.testing.assert_allclose(boxes[0], stages["proposals"][0].numpy(), atol=BOX_ATOL)
    np.testing.assert_allclose(scores[0], stages["proposal_scores"][0].numpy(), atol=1e-6)
    assert len(boxes[0]) == 50


def test_box_branch_and_detections(pair, stages):
    _, ours, _ = pair
    rh = ours.roi_heads
    feats = [Tensor(f.numpy()) for f in list(stages["fpn"].values())[:4]]
    proposals = [p.numpy() for p in stages["proposals"]]
    sizes = [tuple(s) for s in stages["images"].image_sizes]
    with no_grad():
        _close(rh.box_roi_pool(feats, proposals, sizes), stages["box_pooled"], "pooled box features")
        _close(rh.box_head(Tensor(stages["box_pooled"].numpy())), stages["box_features"], "box head")
        logits, regression = rh.box_predictor(Tensor(stages["box_features"].numpy()))
    _close(logits, stages["class_logits"], "class logits")
    _close(regression, stages["box_regression"], "box regression")
    boxes, scores, labels = postprocess_detections(
        stages["class_logits"].numpy(), stages["box_regression"].numpy(), proposals, sizes, rh.box_coder,
        rh.cfg.score_thresh, rh.cfg.nms_thresh, rh.cfg.detections_per_img)
    assert len(boxes[0]) == 10
    _same_detections({"boxes": boxes[0], "scores": scores[0], "labels": labels[0]}, stages["detections"],
                     "post-processed detections")


def test_mask_branch_and_pasting(pair, stages, image):
    _, ours, _ = pair
    rh = ours.roi_heads
    feats = [Tensor(f.numpy()) for f in list(stages["fpn"].values())[:4]]
    sizes = [tuple(s) for s in stages["images"].image_sizes]
    with no_grad():
        pooled = rh.mask_roi_pool(feats, [stages["detections"]["boxes"].numpy()], sizes)
        _close(pooled, stages["mask_pooled"], "pooled mask features")
        _close(rh.mask_head(Tensor(stages["mask_pooled"].numpy())), stages["mask_features"], "mask head")
        _close(rh.mask_predictor(Tensor(stages["mask_features"].numpy())), stages["mask_logits"], "mask logits")
    from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

    final = stages["final"]
    probs = torch.rand(len(final["boxes"]), 1, 28, 28, generator=torch.Generator().manual_seed(2))
    expected = tv_paste(probs, final["boxes"], image.shape[-2:])[:, 0]
    got = paste_masks_in_image(probs[:, 0].numpy(), final["boxes"].numpy(), image.shape[-2:])
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_end_to_end(pair, stages, image):
    """The whole detector on its own: float32 differences compound (random RPN deltas are large: a
    feature error of 2e-6 moves proposals by up to 1e-3 px of the 187 px input; measured on the 600 px
    photo: boxes 1.5e-2 px (v2) / 4e-3 px (v1), scores 2.5e-5, masks 5e-3 at most, 4e-7 on average),
    hence looser bounds than the stage tests."""
    _, ours, _ = pair
    got = ours([image])[0]
    _same_detections(got, stages["final"], "end-to-end detections", box_atol=3e-2, score_atol=1e-4)
    order = [int(np.argmin(np.abs(got["scores"] - s))) for s in stages["final"]["scores"].numpy()]
    err = np.abs(got["masks"][order] - stages["final"]["masks"][:, 0].numpy())
    assert err.max() <= 2e-2 and err.mean() <= 1e-5, (err.max(), err.mean())


def test_the_other_eps_drifts(pair, stages):
    """The same weights with the other eps (v1: 1e-5 instead of 0; v2: FrozenBatchNorm2d eps 0 instead of
    BatchNorm2d's 1e-5, which loads without an error): the body drifts far beyond the tolerance."""
    ref, ours, state = pair
    other = ({"backbone.frozen_bn_eps": 1e-5} if ours.config.backbone.norm == "frozen_bn"
             else {"backbone.norm": "frozen_bn", "backbone.frozen_bn_eps": 0.0})
    wrong = C.override(ours.config, other)
    drifted = load_torchvision_state_dict(MaskRCNN(wrong), state).eval()
    with no_grad():
        c5 = drifted.backbone.body(Tensor(stages["images"].tensors.numpy()))[-1]
    err = float(np.abs(_np(c5) - stages["body"][-1].numpy()).max())
    assert err > 100 * REL * float(stages["body"][-1].abs().max())


def _stage_errors(version, image):
    """{stage: max |minirc - torchvision| / max |torchvision|}, each stage fed torchvision's input."""
    pair = _build(version)
    s = _torch_stages(pair, image)
    ours = pair[1]
    rel = lambda a, b: float(np.abs(_np(a) - _np(b)).max() / np.abs(_np(b)).max())  # noqa: E731
    with no_grad():
        body = ours.backbone.body(Tensor(s["images"].tensors.numpy()))
        fpn = ours.backbone.fpn([Tensor(c.numpy()) for c in s["body"]])
        logits, deltas = ours.rpn.head([Tensor(f.numpy()) for f in s["fpn"].values()])
        rh = ours.roi_heads
        return {"body C2-C5": max(rel(a, b) for a, b in zip(body, s["body"])),
                "FPN P2-P6": max(rel(a, b) for a, b in zip(fpn, s["fpn"].values())),
                "RPN head": max(rel(a, b) for a, b in zip(logits + deltas, s["rpn_logits"] + s["rpn_deltas"])),
                "box head": rel(rh.box_head(Tensor(s["box_pooled"].numpy())), s["box_features"]),
                "box predictor": max(rel(a, b) for a, b in zip(rh.box_predictor(Tensor(s["box_features"].numpy())),
                                                               (s["class_logits"], s["box_regression"]))),
                "mask head": rel(rh.mask_head(Tensor(s["mask_pooled"].numpy())), s["mask_features"]),
                "mask logits": rel(rh.mask_predictor(Tensor(s["mask_features"].numpy())), s["mask_logits"])}


if __name__ == "__main__":  # the table of docs/torchvision_weights.md
    photo = read_image(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    errors = {v: _stage_errors(v, photo) for v in ("v1", "v2")}
    print("| stage | v1 | v2 |\n|---|---|---|")
    for stage in errors["v1"]:
        print(f"| {stage} | {errors['v1'][stage]:.1e} | {errors['v2'][stage]:.1e} |")
