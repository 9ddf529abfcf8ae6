"""Mask branch: layer keys and shapes, RoIAlign mask targets, both mask losses (values, gradients)."""
import numpy as np
import pytest

from minirc.autograd import Tensor
from minirc.backend import use_backend
from minirc.model.mask_head import (MaskRCNNHeads, MaskRCNNPredictor, mask_loss, mask_probabilities,
                                    maskrcnn_inference, maskrcnn_loss, project_masks_on_boxes)
from minirc.testing import gradcheck


def _shape(v):
    return tuple(np.shape(getattr(v, "data", v)))


def test_layer_keys_and_shapes():
    heads = MaskRCNNHeads(8, (6, 5), dilation=1)
    pred = MaskRCNNPredictor(5, 4, num_classes=3)
    assert {k: _shape(v) for k, v in heads.state_dict().items()} == {
        "0.0.weight": (6, 8, 3, 3), "0.0.bias": (6,), "1.0.weight": (5, 6, 3, 3), "1.0.bias": (5,)}
    assert {k: _shape(v) for k, v in pred.state_dict().items()} == {
        "conv5_mask.weight": (5, 4, 2, 2), "conv5_mask.bias": (4,),  # transposed conv: (in, out, kh, kw)
        "mask_fcn_logits.weight": (3, 4, 1, 1), "mask_fcn_logits.bias": (3,)}
    x = Tensor(np.random.default_rng(0).standard_normal((2, 8, 7, 7)).astype(np.float32))
    assert pred(heads(x)).shape == (2, 3, 14, 14)


def test_mask_target_by_hand():
    # gt pixels 2..5 in both axes; RoI [2, 2, 6, 6] -> 4x4 bins of 1 px, one sample per bin at
    # 2.5, 3.5, 4.5, 5.5 (aligned=False reads pixel i at coordinate i): 5.5 is half outside -> 0.5
    gt = np.zeros((2, 10, 10), np.uint8)
    gt[1, 2:6, 2:6] = 1
    t = project_masks_on_boxes(gt, np.array([[2, 2, 6, 6]], np.float32), np.array([1]), 4)
    edge = np.array([1, 1, 1, 0.5])
    np.testing.assert_allclose(t[0], np.outer(edge, edge), atol=1e-6)
    assert project_masks_on_boxes(gt, np.array([[2, 2, 6, 6]], np.float32), np.array([0]), 4).max() == 0
    assert project_masks_on_boxes(gt, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), 4).shape == (0, 4, 4)


def test_loss_values_at_zero_logits():
    logits = Tensor(np.zeros((2, 3, 4, 4), np.float32))
    targets = np.random.default_rng(0).random((2, 4, 4)).astype(np.float32)
    labels = np.array([1, 2])
    assert mask_loss(logits, labels, targets, "sigmoid").item() == pytest.approx(np.log(2), rel=1e-6)
    assert mask_loss(logits, labels, targets, "softmax").item() == pytest.approx(np.log(3), rel=1e-6)


def test_loss_values_against_numpy():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, 4, 5, 5))
    t = rng.random((3, 5, 5))
    labels = np.array([3, 1, 1])
    zl = z[np.arange(3), labels]
    bce = np.mean(np.maximum(zl, 0) - zl * t + np.log1p(np.exp(-np.abs(zl))))
    assert mask_loss(Tensor(z), labels, t, "sigmoid").item() == pytest.approx(bce, rel=1e-10)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    ce = -np.mean(t * logp[np.arange(3), labels] + (1 - t) * logp[:, 0])
    assert mask_loss(Tensor(z), labels, t, "softmax").item() == pytest.approx(ce, rel=1e-10)


@pytest.mark.parametrize("loss_type", ["sigmoid", "softmax"])
def test_only_the_gt_channel_gets_gradient_with_sigmoid(loss_type):
    rng = np.random.default_rng(2)
    logits = Tensor(rng.standard_normal((2, 4, 3, 3)), requires_grad=True)
    mask_loss(logits, np.array([2, 3]), rng.random((2, 3, 3)), loss_type).backward()
    g = np.abs(logits.grad).sum(axis=(2, 3))  # (R, K)
    if loss_type == "sigmoid":  # the decoupling: other classes' channels are untouched
        assert g[0, 2] > 0 and g[1, 3] > 0
        assert g[0, [0, 1, 3]].max() == 0 and g[1, [0, 1, 2]].max() == 0
    else:  # the softmax couples all K channels at every pixel, and its gradient sums to zero over K
        assert g.min() > 0
        np.testing.assert_allclose(logits.grad.sum(axis=1), 0, atol=1e-12)


def _mask_problem():
    gt_masks = [np.zeros((2, 12, 12), np.uint8), np.zeros((1, 10, 10), np.uint8)]
    gt_masks[0][0, 2:8, 3:9] = 1
    gt_masks[0][1, 5:11, 1:6] = 1
    gt_masks[1][0, 1:7, 1:7] = 1
    proposals = [np.array([[2, 1, 9, 8], [1, 5, 7, 12]], np.float32), np.array([[0.5, 1.5, 7, 6.5]], np.float32)]
    matched = [np.array([0, 1]), np.array([0])]
    labels = [np.array([2, 1]), np.array([3])]
    return proposals, gt_masks, labels, matched


@pytest.mark.parametrize("loss_type", ["sigmoid", "softmax"])
def test_maskrcnn_loss_gradcheck(loss_type):
    proposals, gt_masks, labels, matched = _mask_problem()
    logits = np.random.default_rng(3).standard_normal((3, 4, 4, 4))
    with use_backend("numpy"):
        assert gradcheck(lambda z: maskrcnn_loss(z, proposals, gt_masks, labels, matched, loss_type), [logits])


def test_maskrcnn_loss_uses_matched_class_and_targets():
    proposals, gt_masks, labels, matched = _mask_problem()
    logits = Tensor(np.random.default_rng(4).standard_normal((3, 4, 4, 4)))
    targets = np.concatenate([project_masks_on_boxes(m, p, i, 4) for m, p, i in zip(gt_masks, proposals, matched)])
    expected = mask_loss(logits, np.array([2, 1, 3]), targets).item()
    assert maskrcnn_loss(logits, proposals, gt_masks, labels, matched).item() == pytest.approx(expected)


def test_no_positives_gives_a_connected_zero():
    logits = Tensor(np.zeros((0, 4, 6, 6)), requires_grad=True)
    for loss_type in ("sigmoid", "softmax"):
        loss = maskrcnn_loss(logits, [np.zeros((0, 4), np.float32)], [np.zeros((1, 8, 8), np.uint8)],
                             [np.array([1])], [np.zeros(0, np.int64)], loss_type)
        assert loss.item() == 0
        loss.backward()
        assert logits.grad.shape == (0, 4, 6, 6)


def test_bad_loss_type():
    with pytest.raises(ValueError, match="loss_type"):
        mask_loss(Tensor(np.zeros((1, 2, 2, 2))), np.array([1]), np.zeros((1, 2, 2)), "dice")


def test_inference_picks_the_predicted_class():
    z = np.random.default_rng(5).standard_normal((3, 4, 2, 2)).astype(np.float32)
    labels = [np.array([1, 3]), np.array([2])]
    probs = maskrcnn_inference(Tensor(z), labels)
    assert [p.shape for p in probs] == [(2, 2, 2), (1, 2, 2)]
    np.testing.assert_allclose(probs[1][0], 1 / (1 + np.exp(-z[2, 2])), rtol=1e-6)
    soft = mask_probabilities(z, np.array([1, 3, 2]), "softmax")
    np.testing.assert_allclose(soft[0], np.exp(z[0, 1]) / np.exp(z[0]).sum(axis=0), rtol=1e-5)
    assert maskrcnn_inference(Tensor(np.zeros((0, 4, 2, 2), np.float32)), [np.zeros(0, np.int64)])[0].shape == (0, 2, 2)
