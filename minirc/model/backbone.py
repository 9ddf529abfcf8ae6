"""ResNet body with torchvision's layout and key names, and the backbone = body + FPN.

docs/semantics.md section 14 (torchvision ``models/resnet.py``, ``detection/backbone_utils.py``):

* stem: ``conv1`` 7x7 stride 2 (no bias) -> ``bn1`` -> ReLU -> max-pool 3x3 stride 2 pad 1 (stride 4);
* ``layer1..layer4``: blocks; the first block of layer2..4 has stride 2 ("ResNet v1.5": the stride
  sits in the 3x3 conv of a Bottleneck) and a ``downsample`` = (1x1 conv with the stride, BN) shortcut
  whenever the shape changes;
* every BN is a :class:`~minirc.nn.FrozenBatchNorm2d` (fixed affine buffers, no statistics update) when
  ``config.norm == "frozen_bn"`` (torchvision with pretrained weights), a trainable
  :class:`~minirc.nn.BatchNorm2d` when ``"bn"`` (torchvision from scratch); same keys either way,
  plus ``num_batches_tracked`` for BatchNorm2d.

Outputs C2..C5 at strides 4, 8, 16, 32 (torchvision's ``IntermediateLayerGetter`` names them
'0'..'3'). Keys: ``conv1.weight``, ``bn1.*``, ``layer{L}.{b}.conv{1,2,3}.weight``, ``bn{1,2,3}.*``,
``downsample.0.weight``, ``downsample.1.*`` -- the same as torchvision, so its weights load as they are.
"""
from __future__ import annotations

import functools

from minirc.nn import BatchNorm2d, Conv2d, FrozenBatchNorm2d, Module, Sequential
from minirc.nn import functional as F
from minirc.nn import init


def conv3x3(in_ch: int, out_ch: int, stride: int = 1) -> Conv2d:
    return Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> Conv2d:
    return Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class BasicBlock(Module):
    """ResNet-18/34 block: 3x3 (stride) -> BN -> ReLU -> 3x3 -> BN, + shortcut, ReLU. Expansion 1."""
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample=None, norm_layer=FrozenBatchNorm2d):
        super().__init__()
        self.conv1 = conv3x3(in_ch, width, stride)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width)
        self.bn2 = norm_layer(width)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + identity)


class Bottleneck(Module):
    """ResNet-50 block: 1x1 -> BN -> ReLU -> 3x3 (stride) -> BN -> ReLU -> 1x1 (x4) -> BN, + shortcut, ReLU."""
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int = 1, downsample=None, norm_layer=FrozenBatchNorm2d):
        super().__init__()
        self.conv1 = conv1x1(in_ch, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride)  # v1.5: the stride is here, not in conv1
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, width * self.expansion)
        self.bn3 = norm_layer(width * self.expansion)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + identity)


class ResNet(Module):
    """The ResNet body (no avgpool / fc): ``forward(x (N, 3, H, W)) -> [C2, C3, C4, C5]``.

    config: a :class:`~minirc.model.config.BackboneConfig`. ``out_channels`` lists C2..C5's channels.
    """

    def __init__(self, config):
        super().__init__()
        block = Bottleneck if config.block == "bottleneck" else BasicBlock
        norm_layer = make_norm_layer(config)
        self.conv1 = Conv2d(3, config.stem_channels, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(config.stem_channels)
        in_ch = config.stem_channels
        self.out_channels = []
        for i, (blocks, width) in enumerate(zip(config.layers, config.widths)):
            layer, in_ch = _make_layer(block, in_ch, width, blocks, stride=1 if i == 0 else 2,
                                       norm_layer=norm_layer)
            setattr(self, f"layer{i + 1}", layer)
            self.out_channels.append(in_ch)
        for m in self.modules():
            if isinstance(m, Conv2d):  # torchvision's ResNet init
                init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        freeze_layers(self, config.trainable_layers)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))  # (N, 3, H, W) -> (N, C, H/2, W/2)
        x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)  # -> stride 4
        features = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            features.append(x)  # C2 (stride 4), C3 (8), C4 (16), C5 (32)
        return features


def make_norm_layer(config):
    """``channels -> Module``: torchvision's rule (docs/semantics.md section 14) -- FrozenBatchNorm2d(eps) when it loads
    pretrained weights, plain BatchNorm2d (eps 1e-5, momentum 0.1) when it trains from scratch."""
    if config.norm == "bn":
        return BatchNorm2d
    return functools.partial(FrozenBatchNorm2d, eps=config.frozen_bn_eps)


def _make_layer(block, in_ch: int, width: int, blocks: int, stride: int, norm_layer):
    out_ch = width * block.expansion
    downsample = None
    if stride != 1 or in_ch != out_ch:  # the shortcut must change shape too: keys downsample.0 / .1
        downsample = Sequential(conv1x1(in_ch, out_ch, stride), norm_layer(out_ch))
    layers = [block(in_ch, width, stride, downsample, norm_layer=norm_layer)]
    layers += [block(out_ch, width, norm_layer=norm_layer) for _ in range(1, blocks)]
    return Sequential(*layers), out_ch


def freeze_layers(body: Module, trainable_layers: int) -> None:
    """torchvision's rule: train the last ``trainable_layers`` of (layer4, layer3, layer2, layer1, conv1).

    All other parameters get ``requires_grad = False`` (they stay parameters: they count and load).
    """
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, param in body.named_parameters():
        if not any(name.startswith(prefix) for prefix in train):
            param.requires_grad = False


class BackboneWithFPN(Module):
    """``body`` (ResNet) then ``fpn``: ``forward(x) -> [P2, P3, P4, P5, P6]`` (P6 only with extra_pool).

    Keys ``body.*`` and ``fpn.*``; inside MaskRCNN they become ``backbone.body.*``, ``backbone.fpn.*``.
    """

    def __init__(self, backbone_config, fpn_config):
        super().__init__()
        from minirc.model.fpn import FeaturePyramidNetwork

        self.body = ResNet(backbone_config)
        self.fpn = FeaturePyramidNetwork(self.body.out_channels, fpn_config.out_channels,
                                         extra_pool=fpn_config.extra_pool, norm=fpn_config.norm)
        self.out_channels = fpn_config.out_channels

    def forward(self, x):
        return self.fpn(self.body(x))
