"""RoI heads: proposal labelling and sampling, the Fast R-CNN loss, detection post-processing, the module."""
import numpy as np
import pytest

import minirc.random
from minirc.autograd import Tensor
from minirc.backend import use_backend
from minirc.detection import BoxCoder, Matcher
from minirc.model import config as C
from minirc.model.roi_heads import (RoIHeads, assign_targets_to_proposals, fastrcnn_loss,
                                    postprocess_detections)
from minirc.testing import gradcheck

COCO_MATCHER = Matcher(0.5, 0.5, allow_low_quality_matches=False)


def test_assign_targets_by_hand():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    props = np.array([[0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 4], [21, 20, 30, 30], [40, 40, 50, 50]], np.float32)
    matched, labels = assign_targets_to_proposals([props, props], [gt, gt[:0]], [np.array([3, 1]), np.zeros(0)],
                                                  COCO_MATCHER)
    assert labels[0].tolist() == [3, 3, 0, 1, 0]  # IoU 1, 0.5 (>= is foreground), 0.4, 0.9, 0
    assert matched[0].tolist() == [0, 0, 0, 1, 0]  # background rows clamp to index 0
    assert labels[1].tolist() == [0] * 5 and matched[1].tolist() == [0] * 5  # no gt: all background


def _heads(**changes):
    cfg = C.override(C.tiny(), {"roi_heads.batch_size_per_image": 8, **changes})
    return RoIHeads(cfg), cfg


def test_select_training_samples_appends_gt_and_balances():
    heads, cfg = _heads()
    rng = np.random.default_rng(0)
    props = rng.random((40, 4)).astype(np.float32) * 30
    props[:, 2:] += props[:, :2] + 2
    targets = [{"boxes": np.array([[5, 5, 20, 25]], np.float32), "labels": np.array([2])},
               {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}]
    minirc.random.manual_seed(0)
    proposals, matched, labels, reg = heads.select_training_samples([props, props], targets)
    for p, m, lab, r in zip(proposals, matched, labels, reg):
        assert len(p) == len(m) == len(lab) == len(r) <= 8
    assert (labels[0] > 0).sum() <= 2  # 25 % of 8
    gt_row = np.flatnonzero((proposals[0] == targets[0]["boxes"][0]).all(axis=1))
    assert gt_row.size == 1 and labels[0][gt_row[0]] == 2  # the appended gt box is a positive
    np.testing.assert_allclose(reg[0][gt_row[0]], 0, atol=1e-6)  # ... that needs no correction
    assert len(proposals[1]) == 8 and labels[1].max() == 0  # the empty image: background only


def _fastrcnn_problem(dtype=np.float64):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 3)).astype(dtype)
    deltas = rng.standard_normal((5, 12)).astype(dtype) * 0.1
    labels = [np.array([0, 2, 1]), np.array([0, 1])]
    targets = [rng.standard_normal((3, 4)).astype(np.float32) * 0.1, rng.standard_normal((2, 4)).astype(np.float32) * 0.1]
    return logits, deltas, labels, targets


def test_fastrcnn_loss_against_numpy():
    logits, deltas, labels, targets = _fastrcnn_problem()
    cls, box = fastrcnn_loss(Tensor(logits), Tensor(deltas), labels, targets)
    lab, tgt = np.concatenate(labels), np.concatenate(targets).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert cls.item() == pytest.approx(-logp[np.arange(5), lab].mean(), rel=1e-10)
    pos = np.flatnonzero(lab > 0)
    d = np.abs(deltas.reshape(5, 3, 4)[pos, lab[pos]] - tgt[pos])
    beta = 1 / 9
    sl1 = np.where(d < beta, 0.5 * d ** 2 / beta, d - 0.5 * beta).sum() / 5  # / all sampled, not / positives
    assert box.item() == pytest.approx(sl1, rel=1e-10)


def test_fastrcnn_loss_gradcheck():
    logits, deltas, labels, targets = _fastrcnn_problem()
    with use_backend("numpy"):
        assert gradcheck(lambda z, d: fastrcnn_loss(z, d, labels, targets)[0] + fastrcnn_loss(z, d, labels, targets)[1],
                         [logits, deltas])


def test_fastrcnn_loss_no_positives_and_nothing_sampled():
    logits, deltas, _, _ = _fastrcnn_problem()
    cls, box = fastrcnn_loss(Tensor(logits), Tensor(deltas), [np.zeros(5, np.int64)], [np.zeros((5, 4), np.float32)])
    assert cls.item() > 0 and box.item() == 0
    z = Tensor(np.zeros((0, 3)), requires_grad=True)
    cls, box = fastrcnn_loss(z, Tensor(np.zeros((0, 12))), [np.zeros(0, np.int64)], [np.zeros((0, 4), np.float32)])
    assert cls.item() == 0 and box.item() == 0


def _logits(probs):
    return np.log(np.asarray(probs, np.float32))


def test_postprocess_by_hand():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    props = np.array([[10, 10, 30, 30], [12, 12, 32, 32], [50, 50, 60, 60], [50, 50, 70, 70], [5, 5, 5.005, 20]],
                     np.float32)
    logits = _logits([[0.06, 0.9, 0.04],  # class 1 kept; class 2 below 0.05
                      [0.1, 0.6, 0.3],  # class 1 suppressed by row 0 (IoU 0.68); class 2 kept (other class)
                      [0.93, 0.03, 0.04],  # background
                      [0.1, 0.86, 0.04],  # kept, clipped to the 64x64 image
                      [0.0001, 0.9998, 0.0001]])  # too thin (0.005 px): removed
    boxes, scores, labels = postprocess_detections(logits, np.zeros((5, 12), np.float32), [props], [(64, 64)], coder)
    np.testing.assert_allclose(boxes[0], [[10, 10, 30, 30], [50, 50, 64, 64], [12, 12, 32, 32]], atol=1e-4)
    np.testing.assert_allclose(scores[0], [0.9, 0.86, 0.3], rtol=1e-5)
    assert labels[0].tolist() == [1, 1, 2] and labels[0].dtype == np.int64 and boxes[0].dtype == np.float32
    top1 = postprocess_detections(logits, np.zeros((5, 12), np.float32), [props], [(64, 64)], coder,
                                  detections_per_img=1)
    assert top1[2][0].tolist() == [1] and top1[1][0].tolist() == pytest.approx([0.9])


def test_postprocess_splits_images_and_handles_empty():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    props = [np.zeros((0, 4), np.float32), np.array([[1, 1, 9, 9]], np.float32)]
    boxes, scores, labels = postprocess_detections(_logits([[0.1, 0.9]]), np.zeros((1, 8), np.float32),
                                                   props, [(10, 10), (10, 10)], coder)
    assert boxes[0].shape == (0, 4) and scores[0].shape == (0,) and labels[0].shape == (0,)
    assert labels[1].tolist() == [1]
    boxes, scores, labels = postprocess_detections(np.zeros((0, 2), np.float32), np.zeros((0, 8), np.float32),
                                                   [np.zeros((0, 4), np.float32)], [(10, 10)], coder)
    assert boxes[0].shape == (0, 4) and labels[0].dtype == np.int64


def _features(cfg, n=1, size=64, seed=0):
    rng = np.random.default_rng(seed)
    ch = cfg.fpn.out_channels
    return [Tensor(rng.standard_normal((n, ch, size // s, size // s)).astype(np.float32)) for s in (4, 8, 16, 32, 64)]


def test_module_training_and_eval():
    heads, cfg = _heads()
    feats = _features(cfg)
    props = [np.array([[4, 4, 30, 30], [10, 12, 40, 44], [30, 30, 60, 60]], np.float32)]
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 10:40, 12:36] = 1
    targets = [{"boxes": np.array([[12, 10, 36, 40]], np.float32), "labels": np.array([1]), "masks": masks}]
    heads.train()
    minirc.random.manual_seed(0)
    dets, losses = heads(feats, props, [(64, 64)], targets)
    assert dets == [] and sorted(losses) == ["loss_box_reg", "loss_classifier", "loss_mask"]
    assert all(v.shape in ((), (1,)) and np.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert heads.mask_predictor.mask_fcn_logits.weight.grad is not None
    heads.eval()
    dets, losses = heads(feats, props, [(64, 64)])
    assert losses == {} and len(dets) == 1
    d = dets[0]
    assert d["boxes"].shape[1:] == (4,) and d["masks"].shape == (len(d["boxes"]), 14, 14)
    assert d["masks"].dtype == np.float32 and (d["masks"] >= 0).all() and (d["masks"] <= 1).all()


def test_module_requires_targets_in_training():
    heads, cfg = _heads()
    heads.train()
    with pytest.raises(ValueError, match="targets"):
        heads(_features(cfg), [np.zeros((0, 4), np.float32)], [(64, 64)])


def test_canonical_scale_reaches_both_poolers():
    """A 40 px box sits on P2 with torchvision's 224 and on P3 with a canonical scale of 56 (128 px images)."""
    import dataclasses

    cfg = C.tiny(num_classes=3)
    cfg = dataclasses.replace(cfg, roi_heads=dataclasses.replace(cfg.roi_heads, canonical_scale=56.0))
    heads = RoIHeads(cfg)
    box = [np.array([[0, 0, 40, 40]], np.float32)]
    for pooler in (heads.box_roi_pool, heads.mask_roi_pool):
        pooler.setup_scales([np.zeros((1, 8, 128 >> k, 128 >> k), np.float32) for k in (2, 3, 4, 5)], [(128, 128)])
        assert pooler.canonical_scale == 56.0 and pooler.map_levels(box).tolist() == [1]
    assert RoIHeads(C.tiny(num_classes=3)).box_roi_pool.canonical_scale == 224



def _capped_heads(cap):
    return _heads(**{"roi_heads.mask_rois_per_image": cap})[0]


def test_mask_rois_per_image_caps_the_mask_branch():
    pos = np.array([2, 3, 5, 7, 11, 13, 17])
    assert _capped_heads(None)._mask_subset(pos) is pos  # torchvision: every sampled positive
    assert _capped_heads(10)._mask_subset(pos) is pos    # fewer positives than the cap: all of them
    minirc.random.manual_seed(0)
    first = _capped_heads(3)._mask_subset(pos)
    assert len(first) == 3 and set(first) <= set(pos) and (np.diff(first) > 0).all()
    minirc.random.manual_seed(0)
    assert np.array_equal(_capped_heads(3)._mask_subset(pos), first)  # same seed, same draw
    assert len(_capped_heads(3)._mask_subset(np.zeros(0, np.int64))) == 0


def test_mask_rois_per_image_in_a_training_forward():
    heads, cfg = _heads(**{"roi_heads.mask_rois_per_image": 1})
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 10:40, 12:36] = 1
    targets = [{"boxes": np.array([[12, 10, 36, 40]], np.float32), "labels": np.array([1]), "masks": masks}]
    props = [np.array([[12, 10, 36, 40], [11, 10, 36, 41], [12, 11, 35, 40], [40, 40, 60, 60]], np.float32)]
    seen, pooled = [], heads._mask_logits
    heads._mask_logits = lambda f, boxes, sizes: (seen.append([len(b) for b in boxes]), pooled(f, boxes, sizes))[1]
    heads.train()
    minirc.random.manual_seed(0)
    _, losses = heads(_features(cfg), props, [(64, 64)], targets)
    assert seen == [[1]]  # 4 positives (3 proposals and the gt box), one reaches the mask branch
    assert np.isfinite(losses["loss_mask"].item())
    losses["loss_mask"].backward()
    assert heads.mask_predictor.mask_fcn_logits.weight.grad is not None


def test_mask_rois_per_image_checks_its_value():
    for bad in (0, -2, 1.5, "8", True):
        with pytest.raises(ValueError, match="mask_rois_per_image"):
            C.RoIHeadsConfig(mask_rois_per_image=bad)
