"""ResNet body: torchvision key names and shapes, strides, trainable layers; BackboneWithFPN outputs."""
import numpy as np
import pytest

from minirc.autograd import Tensor
from minirc.model import config as C
from minirc.model.backbone import BackboneWithFPN, ResNet


def _shapes(module):
    return {k: tuple(np.shape(v)) for k, v in module.state_dict().items()}


def test_basic_block_keys_and_feature_shapes():
    cfg = C.override(C.tiny(), {"backbone.norm": "frozen_bn"}).backbone  # the FrozenBN layout: no counters
    body = ResNet(cfg)
    s = _shapes(body)
    assert s["conv1.weight"] == (8, 3, 7, 7) and s["bn1.running_var"] == (8,)
    assert s["layer1.0.conv1.weight"] == (8, 8, 3, 3) and "layer1.0.downsample.0.weight" not in s
    assert s["layer2.0.conv1.weight"] == (16, 8, 3, 3) and s["layer2.0.downsample.0.weight"] == (16, 8, 1, 1)
    assert s["layer2.0.downsample.1.weight"] == (16,) and "layer2.0.conv3.weight" not in s
    assert not any("num_batches_tracked" in k for k in s)
    x = Tensor(np.random.default_rng(0).random((2, 3, 64, 96)).astype(np.float32))
    feats = body(x)
    assert [f.shape for f in feats] == [(2, 8, 16, 24), (2, 16, 8, 12), (2, 32, 4, 6), (2, 64, 2, 3)]
    assert body.out_channels == [8, 16, 32, 64]


def test_bottleneck_keys_and_strides():
    cfg = C.BackboneConfig(block="bottleneck", layers=(1, 2, 1, 1), widths=(4, 8, 8, 8), stem_channels=4,
                           trainable_layers=5)
    body = ResNet(cfg)
    s = _shapes(body)
    assert s["layer1.0.conv1.weight"] == (4, 4, 1, 1) and s["layer1.0.conv3.weight"] == (16, 4, 1, 1)
    assert s["layer1.0.downsample.0.weight"] == (16, 4, 1, 1)  # width change, stride 1
    assert s["layer2.0.conv2.weight"] == (8, 8, 3, 3) and "layer2.1.downsample.0.weight" not in s
    assert s["layer2.1.conv1.weight"] == (8, 32, 1, 1)
    assert [k for k in s if k.endswith("bias") and "bn" not in k and "downsample.1" not in k] == []  # bias-free convs
    feats = body(Tensor(np.zeros((1, 3, 64, 64), np.float32)))
    assert [f.shape for f in feats] == [(1, 16, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4), (1, 32, 2, 2)]


@pytest.mark.parametrize("trainable, frozen_prefixes", [
    (0, ("conv1", "layer1", "layer2", "layer3", "layer4")),
    (3, ("conv1", "layer1")),
    (5, ()),
])
def test_trainable_layers(trainable, frozen_prefixes):
    body = ResNet(C.BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(4, 4, 4, 4), stem_channels=4,
                                   trainable_layers=trainable))
    for name, p in body.named_parameters():
        assert p.requires_grad == (not name.startswith(frozen_prefixes)), name
    assert len(list(body.parameters())) == 12  # frozen parameters are still parameters


def test_frozen_bn_is_a_buffer_and_uses_eps():
    body = ResNet(C.BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(4, 4, 4, 4), stem_channels=4,
                                   frozen_bn_eps=0.0))
    assert body.bn1.eps == 0.0
    assert not any(".bn" in n or n.startswith("bn") for n, _ in body.named_parameters())


def test_backbone_with_fpn_levels_and_gradients():
    cfg = C.tiny()
    bb = BackboneWithFPN(cfg.backbone, cfg.fpn)
    assert {k.split(".")[0] for k in bb.state_dict()} == {"body", "fpn"}
    x = Tensor(np.random.default_rng(1).random((1, 3, 64, 64)).astype(np.float32))
    feats = bb(x)
    assert [f.shape for f in feats] == [(1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4), (1, 32, 2, 2), (1, 32, 1, 1)]
    sum(f.sum() for f in feats).backward()
    assert all(p.grad is not None for p in bb.parameters())
