import numpy as np
import pytest

import minirc
from minirc import Tensor
from minirc.detection import AnchorGenerator, RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from minirc.ops.box_iou import box_iou
from minirc.testing import gradcheck

TINY_GEN = dict(sizes=((8,), (16,)), aspect_ratios=((0.5, 1.0, 2.0),) * 2)


def tiny_rpn(channels=4, seed=0, **kwargs):
    minirc.random.manual_seed(seed)
    return RegionProposalNetwork(AnchorGenerator(**TINY_GEN), RPNHead(channels, 3), **kwargs)


def tiny_features(n=1, channels=4, seed=0):
    rng = np.random.default_rng(seed)
    return [Tensor(rng.standard_normal((n, channels, 8, 8)).astype(np.float32)),
            Tensor(rng.standard_normal((n, channels, 4, 4)).astype(np.float32))]


# ---- the head and the anchor order ---------------------------------------------------------------
def test_head_state_keys_shapes_and_init():
    minirc.random.manual_seed(0)
    head = RPNHead(16, 3)
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"conv.0.0.weight": (16, 16, 3, 3), "conv.0.0.bias": (16,),
                      "cls_logits.weight": (3, 16, 1, 1), "cls_logits.bias": (3,),
                      "bbox_pred.weight": (12, 16, 1, 1), "bbox_pred.bias": (12,)}
    w = np.asarray(head.state_dict()["conv.0.0.weight"])
    assert abs(w.std() - 0.01) < 0.002 and abs(w.mean()) < 0.002
    assert all(not np.asarray(v).any() for k, v in head.state_dict().items() if k.endswith("bias"))
    logits, deltas = head(tiny_features(2, 16))
    assert [lg.shape for lg in logits] == [(2, 3, 8, 8), (2, 3, 4, 4)]
    assert [d.shape for d in deltas] == [(2, 12, 8, 8), (2, 12, 4, 4)]


def test_flattening_follows_the_anchor_order():
    # fill each head output with a code of its (image, anchor a, channel k, y, x) and check the rows
    n, a, grids = 2, 3, [(3, 4), (2, 2)]
    logits, deltas = [], []
    for h, w in grids:
        img, aa, yy, xx = np.meshgrid(np.arange(n), np.arange(a), np.arange(h), np.arange(w), indexing="ij")
        logits.append(Tensor((1000 * img + 100 * yy + 10 * xx + aa).astype(np.float64)))
        code = 1000 * img[:, :, None] + 100 * yy[:, :, None] + 10 * xx[:, :, None] + aa[:, :, None]
        deltas.append(Tensor((code + 0.1 * np.arange(4)[None, None, :, None, None]).reshape(n, 4 * a, h, w)))
    flat_logits, flat_deltas = concat_box_prediction_layers(logits, deltas)
    s = sum(h * w * a for h, w in grids)
    assert flat_logits.shape == (n * s, 1) and flat_deltas.shape == (n * s, 4)
    expected = []
    for i in range(n):
        for h, w in grids:
            for y in range(h):
                for x in range(w):
                    expected += [1000 * i + 100 * y + 10 * x + k for k in range(a)]  # (y * W + x) * A + a
    np.testing.assert_array_equal(flat_logits.data[:, 0], expected)
    np.testing.assert_allclose(flat_deltas.data, np.array(expected)[:, None] + 0.1 * np.arange(4))


# ---- training targets ----------------------------------------------------------------------------
def test_target_assignment_hand_case_with_best_anchor_rescue():
    rpn = tiny_rpn()
    anchors = np.array([[0, 0, 10, 10],    # IoU 1 with gt 0 -> positive
                        [20, 20, 30, 30],  # IoU 81/163 = 0.497 with gt 1: ignored band, but gt 1's best -> rescued
                        [0, 0, 4, 4],      # IoU 0.16 with gt 0 -> negative
                        [50, 50, 60, 60],  # overlaps nothing -> negative
                        [0, 0, 10, 6],     # IoU 0.6 with gt 0 -> ignored
                        [24, 24, 34, 34]],  # ties anchor 1 at 81/163 with gt 1 -> rescued too (ties included)
                       np.float32)
    gt = np.array([[0, 0, 10, 10], [21, 21, 33, 33]], np.float32)
    (labels,), (matched,) = rpn.assign_targets_to_anchors([anchors], [{"boxes": gt}])
    assert labels.dtype == np.float32
    assert labels.tolist() == [1, 1, 0, 0, -1, 1]
    np.testing.assert_array_equal(matched[[0, 1, 5]], gt[[0, 1, 1]])
    # without the best-anchor rule gt 1 would have no positive anchor at all
    plain = minirc.detection.Matcher(0.7, 0.3)(box_iou(gt, anchors))
    assert plain.tolist() == [0, -2, -1, -1, -2, -2]


def test_image_without_objects_is_all_background():
    rpn = tiny_rpn()
    anchors = np.array([[0, 0, 10, 10], [5, 5, 9, 9]], np.float32)
    (labels,), (matched,) = rpn.assign_targets_to_anchors([anchors], [{"boxes": np.zeros((0, 4), np.float32)}])
    assert labels.tolist() == [0, 0] and matched.shape == (2, 4) and not matched.any()


def test_losses_by_hand():
    rpn = tiny_rpn(batch_size_per_image=8, positive_fraction=0.5)
    logits = Tensor(np.array([[2.0], [-1.0], [0.5], [3.0]]))
    deltas = Tensor(np.array([[0.0, 0.0, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0, 0, 0, 0]]))
    labels = [np.array([1.0, 0.0, 1.0, -1.0])]           # anchor 3 ignored: in no loss
    targets = [np.array([[0.05, 0.0, 0.0, 0.0], [9, 9, 9, 9], [1.0, 1.0, 1.0, 0.0], [9, 9, 9, 9]])]
    obj, box = rpn.compute_loss(logits, deltas, labels, targets, rng=np.random.default_rng(0))
    bce = lambda x, z: max(x, 0) - x * z + np.log1p(np.exp(-abs(x)))  # noqa: E731
    assert obj.item() == pytest.approx((bce(2.0, 1) + bce(-1.0, 0) + bce(0.5, 1)) / 3, rel=1e-12)
    beta = 1 / 9
    sl1 = lambda d: 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta  # noqa: E731
    # positives only (anchors 0 and 2), summed, divided by the 3 sampled anchors
    assert box.item() == pytest.approx((sl1(-0.05) + sl1(1.0)) / 3, rel=1e-12)


def test_loss_gradcheck_wrt_head_outputs():
    rng = np.random.default_rng(0)
    n, a, grids = 2, 3, [(3, 3), (2, 2)]
    s = a * sum(h * w for h, w in grids)
    labels = [rng.choice([-1.0, 0.0, 1.0], size=s, p=[0.2, 0.5, 0.3]) for _ in range(n)]
    targets = [rng.normal(0, 0.3, (s, 4)) for _ in range(n)]
    rpn = tiny_rpn(batch_size_per_image=12, positive_fraction=0.5)  # sampling matters: fewer than available
    inputs = [rng.normal(0, 1, (n, a, h, w)) for h, w in grids] + [rng.normal(0, 0.2, (n, 4 * a, h, w))
                                                                   for h, w in grids]

    def losses(l0, l1, d0, d1):
        flat_logits, flat_deltas = concat_box_prediction_layers([l0, l1], [d0, d1])
        obj, box = rpn.compute_loss(flat_logits, flat_deltas, labels, targets, rng=np.random.default_rng(5))
        return minirc.stack([obj, box])

    with minirc.use_backend("numpy"):
        assert gradcheck(losses, inputs)


# ---- the full forward pass -----------------------------------------------------------------------
def test_training_forward_losses_and_gradients_reach_the_head():
    rpn = tiny_rpn()
    rpn.train()
    targets = [{"boxes": np.array([[2, 3, 14, 12], [16, 16, 30, 28]], np.float32)}]
    proposals, losses = rpn(tiny_features(), [(32, 32)], (32, 32), targets, rng=np.random.default_rng(0))
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg"}
    assert losses["loss_objectness"].item() == pytest.approx(np.log(2), rel=1e-3)  # std-0.01 init: logits ~ 0
    assert losses["loss_rpn_box_reg"].item() > 0
    (losses["loss_objectness"] + losses["loss_rpn_box_reg"]).backward()
    assert np.abs(rpn.head.cls_logits.weight.grad).sum() > 0 and np.abs(rpn.head.bbox_pred.bias.grad).sum() > 0
    assert np.abs(rpn.head.conv[0][0].weight.grad).sum() > 0
    (boxes,) = proposals
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and 0 < len(boxes) <= 2000
    assert boxes.min() >= 0 and boxes[:, [0, 2]].max() <= 32 and boxes[:, [1, 3]].max() <= 32


def test_image_without_objects_gives_zero_box_loss():
    rpn = tiny_rpn()
    rpn.train()
    targets = [{"boxes": np.zeros((0, 4), np.float32)}, {"boxes": np.array([[4, 4, 20, 20]], np.float32)}]
    proposals, losses = rpn(tiny_features(2), [(32, 32), (28, 30)], (32, 32), targets, rng=np.random.default_rng(0))
    assert np.isfinite(losses["loss_objectness"].item())
    assert len(proposals) == 2 and all(p.shape[1] == 4 and len(p) > 0 for p in proposals)
    rpn.eval()
    (eval_props,), _ = rpn(tiny_features(1), [(32, 32)], (32, 32))  # no targets needed at test time
    assert eval_props.dtype == np.float32 and len(eval_props) > 0
    rpn.train()
    _, only_empty = rpn(tiny_features(1), [(32, 32)], (32, 32), targets[:1], rng=np.random.default_rng(0))
    assert only_empty["loss_rpn_box_reg"].item() == 0.0
    assert only_empty["loss_objectness"].item() == pytest.approx(np.log(2), rel=1e-3)


def test_feature_map_smaller_than_an_anchor():
    minirc.random.manual_seed(0)
    rpn = RegionProposalNetwork(AnchorGenerator(((64,),), ((0.5, 1.0, 2.0),)), RPNHead(4, 3))
    rpn.train()
    feats = [Tensor(np.random.default_rng(0).standard_normal((1, 4, 1, 1)).astype(np.float32))]
    targets = [{"boxes": np.array([[2, 2, 10, 12]], np.float32)}]
    proposals, losses = rpn(feats, [(16, 14)], (16, 16), targets, rng=np.random.default_rng(0))
    assert all(np.isfinite(v.item()) for v in losses.values())
    (boxes,) = proposals
    assert 1 <= len(boxes) <= 3
    assert boxes[:, [0, 2]].max() <= 14 and boxes[:, [1, 3]].max() <= 16 and boxes.min() >= 0


def test_empty_proposals():
    rpn = tiny_rpn(score_thresh=0.99)  # a freshly initialised head scores every anchor about 0.5
    rpn.eval()
    (boxes,), losses = rpn(tiny_features(), [(32, 32)], (32, 32))
    assert losses == {} and boxes.shape == (0, 4) and boxes.dtype == np.float32


def test_eval_and_train_use_their_own_counts():
    rpn = tiny_rpn(pre_nms_top_n={"training": 50, "testing": 5}, post_nms_top_n={"training": 7, "testing": 3},
                   nms_thresh=1.0)  # suppress only IoU > 1.0: NMS keeps everything
    feats = tiny_features(seed=1)
    rpn.eval()
    assert rpn.pre_nms_top_n() == 5 and len(rpn(feats, [(32, 32)], (32, 32))[0][0]) == 3
    rpn.train()
    targets = [{"boxes": np.array([[2, 2, 12, 12]], np.float32)}]
    assert rpn.post_nms_top_n() == 7 and len(rpn(feats, [(32, 32)], (32, 32), targets)[0][0]) == 7


def test_top_k_is_per_level_and_nms_is_per_level():
    rpn = tiny_rpn(pre_nms_top_n=1, post_nms_top_n=10)
    rpn.eval()
    box = [0.0, 0.0, 10.0, 10.0]
    proposals = np.array([[box, [20, 20, 30, 30], box, [1, 1, 11, 11]]], np.float32)  # levels: 2 + 2 anchors
    logits = np.array([[5.0, 4.0, 1.0, 2.0]], np.float32)
    boxes, scores = rpn.filter_proposals(proposals, logits, [(40, 40)], [2, 2])
    # one per level: anchor 0 (level 0) and anchor 3 (level 1), not the global top 2 (anchors 0 and 1);
    # they overlap with IoU 81/119 = 0.68 < 0.7, but different levels never suppress each other anyway
    np.testing.assert_array_equal(boxes[0], [box, [1, 1, 11, 11]])
    np.testing.assert_allclose(scores[0], 1 / (1 + np.exp(-np.array([5.0, 2.0]))), rtol=1e-6)
    rpn2 = tiny_rpn(pre_nms_top_n=2, post_nms_top_n=10)
    rpn2.eval()
    same = np.array([[box, box, box, box]], np.float32)
    boxes, _ = rpn2.filter_proposals(same, logits, [(40, 40)], [2, 2])
    assert len(boxes[0]) == 2  # duplicates removed within a level, one survivor per level


def test_proposals_are_clipped_to_each_images_own_size_and_tiny_boxes_removed():
    rpn = tiny_rpn()
    rpn.eval()
    proposals = np.array([[[-5, -5, 50, 50], [30, 2, 40, 9], [3, 3, 3.0005, 9]]], np.float32)
    boxes, _ = rpn.filter_proposals(proposals, np.zeros((1, 3), np.float32), [(20, 25)], [3])
    # box 1 lies right of x = 25: clipped to zero width, removed; box 2 is 0.0005 px wide (< 1e-3), removed
    np.testing.assert_array_equal(boxes[0], [[0, 0, 25, 20]])


def test_same_seed_same_model_same_losses():
    def run():
        rpn = tiny_rpn(seed=3)
        rpn.train()
        minirc.random.manual_seed(11)
        targets = [{"boxes": np.array([[2, 3, 14, 12]], np.float32)}]
        props, losses = rpn(tiny_features(), [(32, 32)], (32, 32), targets)
        return props[0], losses["loss_objectness"].item(), losses["loss_rpn_box_reg"].item()

    a, b = run(), run()
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


def test_clear_errors():
    rpn = tiny_rpn()
    rpn.train()
    feats = tiny_features()
    with pytest.raises(ValueError, match="targets"):
        rpn(feats, [(32, 32)], (32, 32))
    with pytest.raises(ValueError, match="targets"):
        rpn(feats, [(32, 32)], (32, 32), [])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]"):
        rpn(feats, [(32, 32)], (32, 32), [{"boxes": np.array([[5, 5, 5, 9]], np.float32)}])
    with pytest.raises(ValueError, match="image_sizes"):
        rpn(feats, [(32, 32), (32, 32)], (32, 32))
    with pytest.raises(ValueError, match="head"):
        RegionProposalNetwork(AnchorGenerator(**TINY_GEN), RPNHead(4, 2)).eval()(feats, [(32, 32)], (32, 32))
    with pytest.raises(TypeError, match="pre_nms_top_n"):
        tiny_rpn(pre_nms_top_n={"train": 5})
    with pytest.raises(TypeError, match="head"):
        RegionProposalNetwork(AnchorGenerator(**TINY_GEN), None)


def test_matches_torchvision_when_available():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import RegionProposalNetwork as TVRPN
    from torchvision.models.detection.rpn import RPNHead as TVHead

    # few enough anchors (8*8*3 + 4*4*3 = 240 < 256) that the sampler takes them all: no RNG involved
    rpn = tiny_rpn(pre_nms_top_n=100, post_nms_top_n=50)
    tv_head = TVHead(4, 3)
    tv_head.load_state_dict({k: torch.from_numpy(np.asarray(v) * 50) for k, v in rpn.head.state_dict().items()})
    rpn.head.load_state_dict({k: np.asarray(v) * 50 for k, v in rpn.head.state_dict().items()})
    tv = TVRPN(TVAnchorGenerator(**TINY_GEN), tv_head, 0.7, 0.3, 256, 0.5, {"training": 100, "testing": 100},
               {"training": 50, "testing": 50}, 0.7)
    feats = tiny_features(2)
    sizes = [(32, 32), (30, 27)]
    targets = [{"boxes": np.array([[2, 3, 14, 12], [16, 16, 30, 28]], np.float32)},
               {"boxes": np.array([[5, 1, 20, 25]], np.float32)}]
    rpn.train()
    ours, our_losses = rpn(feats, sizes, (32, 32), targets)
    tv_feats = {str(i): torch.from_numpy(f.data) for i, f in enumerate(feats)}
    theirs, their_losses = tv(ImageList(torch.zeros(2, 3, 32, 32), sizes), tv_feats,
                              [{"boxes": torch.from_numpy(t["boxes"])} for t in targets])
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o, t.detach().numpy(), rtol=1e-4, atol=1e-3)
    for k in our_losses:
        assert our_losses[k].item() == pytest.approx(their_losses[k].item(), rel=1e-4)
