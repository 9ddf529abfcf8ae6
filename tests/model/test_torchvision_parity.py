"""End to end against torchvision (skipped without torch): the same weights give the same detections,
masks, losses and gradients. A ResNet-18-like body keeps it to seconds; sampling is made deterministic
by sampling more anchors / RoIs than exist (then both libraries take all of them)."""
import numpy as np
import pytest

from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN, load_torchvision_state_dict

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

BIG = 10 ** 6  # batch_size_per_image larger than any candidate count: every candidate is sampled


@pytest.fixture(scope="module")
def pair():
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN as TorchMaskRCNN
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    body = ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=FrozenBatchNorm2d)
    ref = TorchMaskRCNN(_resnet_fpn_extractor(body, 5), num_classes=4, min_size=128, max_size=128,
                        rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=300,
                        rpn_post_nms_top_n_train=150, rpn_batch_size_per_image=BIG,
                        box_batch_size_per_image=BIG, box_score_thresh=0.0, box_detections_per_img=20)
    cfg = C.MaskRCNNConfig(
        num_classes=4, transform=C.TransformConfig(min_size=(128,), max_size=128),
        backbone=C.BackboneConfig(block="basic", layers=(1, 1, 1, 1), frozen_bn_eps=1e-5, trainable_layers=5),
        rpn=C.RPNConfig(pre_nms_top_n_test=200, post_nms_top_n_test=100, pre_nms_top_n_train=300,
                        post_nms_top_n_train=150, batch_size_per_image=BIG),
        roi_heads=C.RoIHeadsConfig(batch_size_per_image=BIG, detections_per_img=20, score_thresh=0.0))
    ours = load_torchvision_state_dict(MaskRCNN(cfg), ref.state_dict())
    return ref, ours


def _data():
    rng = np.random.default_rng(0)
    images, targets = [], []
    for (h, w), boxes, labels in [((100, 120), [[10, 12, 60, 70], [50, 30, 110, 90]], [1, 3]),
                                  ((90, 130), [[20, 20, 80, 85.5]], [2])]:
        img = rng.random((3, h, w)).astype(np.float32) * 0.3
        boxes = np.asarray(boxes, np.float32)
        masks = np.zeros((len(boxes), h, w), np.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
            m[y1:y2, x1:x2] = 1
            img[:, y1:y2, x1:x2] += 0.5
        images.append(img)
        targets.append({"boxes": boxes, "labels": np.asarray(labels, np.int64), "masks": masks})
    return images, targets


def test_same_detections_and_masks(pair):
    ref, ours = pair
    ref.eval()
    ours.eval()
    images, _ = _data()
    with torch.no_grad():
        expected = ref([torch.from_numpy(i) for i in images])
    for exp, got in zip(expected, ours(images)):
        assert len(got["boxes"]) == len(exp["boxes"]) == 20
        np.testing.assert_array_equal(got["labels"], exp["labels"].numpy())
        np.testing.assert_allclose(got["boxes"], exp["boxes"].numpy(), atol=1e-4)
        np.testing.assert_allclose(got["scores"], exp["scores"].numpy(), atol=1e-6)
        np.testing.assert_allclose(got["masks"], exp["masks"][:, 0].numpy(), atol=2e-5)


def test_same_losses_and_gradients(pair):
    ref, ours = pair
    ref.train()
    ours.train()
    images, targets = _data()
    expected = ref([torch.from_numpy(i) for i in images],
                   [{k: torch.from_numpy(v) for k, v in t.items()} for t in targets])
    got = ours(images, targets)
    assert list(got) == list(expected)
    for k in expected:
        assert got[k].item() == pytest.approx(expected[k].item(), rel=1e-5, abs=1e-7), k
    sum(expected.values()).backward()
    sum(got.values()).backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        g = ref_params[name].grad.numpy()
        # float32 sums in another order: relative to the largest entry of each gradient
        np.testing.assert_allclose(p.grad, g, atol=2e-3 * np.abs(g).max() + 1e-9, err_msg=name)
