"""Box branch layers: TwoMLPHead, FastRCNNConvFCHead and FastRCNNPredictor (docs/semantics.md section 12,
torchvision ``faster_rcnn.py``).

TwoMLPHead: RoI features (R, C, P, P) -> flatten (C-major: index ``c * P * P + y * P + x``) ->
``fc6`` -> ReLU -> ``fc7`` -> ReLU -> (R, representation_size).
FastRCNNPredictor: ``cls_score`` -> (R, K) class logits and ``bbox_pred`` -> (R, 4K) class-specific
box deltas laid out ``[k * 4 + (dx, dy, dw, dh)]`` (the RoI heads decode them with weights 10, 10, 5, 5).
Both use the layers' default (PyTorch) initialisation, as torchvision does.

``norm="bn"`` puts a trainable batch norm after fc6 and after fc7 (before each ReLU), statistics over
the RoIs of the batch: an option for training the head from scratch, in the spirit of torchvision's
``maskrcnn_resnet50_fpn_v2``, whose box head normalises every layer (there with BatchNorm2d after
each of four convs). On the shapes demo it raised mask AP50 after 800 iterations from 0.47 to 0.55
(docs/training.md). The default ``"none"`` is torchvision's TwoMLPHead, key for key.

FastRCNNConvFCHead (``box_head.head_type="conv_fc"``, the head of torchvision's
``maskrcnn_resnet50_fpn_v2``): 3x3 convs (padding 1) + ReLU at P x P, each followed by a batch norm
with ``norm="bn"`` (then without bias), flatten, then fc + ReLU. torchvision builds it as one
Sequential ``[Conv2dNormActivation] * n, Flatten, Linear, ReLU``, so the keys are ``{i}.0.weight``,
``{i}.1.*`` for the convs and ``{n + 1}.{weight,bias}`` for the fc (``5.*`` with four convs).
"""
from __future__ import annotations

from minirc.model.head_norm import RoIBatchNorm2d, check_norm, conv_norm
from minirc.nn import Linear, Module, ReLU, Sequential
from minirc.nn import functional as F
from minirc.nn import init


class TwoMLPHead(Module):
    """``head(x (R, C, P, P)) -> (R, representation_size)``; keys ``fc6.*``, ``fc7.*`` (and ``bn6.*``,
    ``bn7.*`` with ``norm="bn"``)."""

    def __init__(self, in_features: int, representation_size: int, norm: str = "none"):
        super().__init__()
        check_norm(norm)
        self.fc6 = Linear(in_features, representation_size)
        self.fc7 = Linear(representation_size, representation_size)
        if norm == "bn":
            self.bn6 = RoIBatchNorm2d(representation_size)
            self.bn7 = RoIBatchNorm2d(representation_size)
        self.norm = norm

    def forward(self, x):
        x = x.flatten(start_dim=1)  # (R, C, P, P) -> (R, C*P*P)
        x = F.relu(self._normed(self.fc6(x), "bn6"))
        return F.relu(self._normed(self.fc7(x), "bn7"))

    def _normed(self, x, name):
        if self.norm == "none":
            return x
        r, d = x.shape  # (R, D) as R samples of D channels; fewer than 2 RoIs: running statistics
        return getattr(self, name)(x.reshape(r, d, 1, 1)).reshape(r, d)


class Flatten(Module):
    """(R, C, P, P) -> (R, C*P*P), C-major (``torch.nn.Flatten``); no parameters, it only holds a key index."""

    def forward(self, x):
        return x.flatten(start_dim=1)


class FastRCNNConvFCHead(Sequential):
    """``head(x (R, C, P, P)) -> (R, representation_size)``: torchvision's ``FastRCNNConvFCHead`` with one fc.

    in_channels: C; pool_size: P; conv_layers: output channels of each 3x3 conv; norm: "none" or "bn".
    """

    def __init__(self, in_channels: int, pool_size: int, conv_layers, representation_size: int,
                 norm: str = "none"):
        blocks = []
        for width in conv_layers:
            blocks.append(Sequential(*conv_norm(in_channels, width, 3, padding=1, norm=check_norm(norm), relu=True)))
            in_channels = width
        convs = [block[0] for block in blocks]
        blocks += [Flatten(), Linear(in_channels * pool_size * pool_size, representation_size), ReLU()]
        super().__init__(*blocks)
        for conv in convs:  # torchvision: kaiming normal (fan_out, relu), zero bias; the fc keeps the default
            init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            if conv.bias is not None:
                init.constant_(conv.bias, 0.0)


def build_box_head(in_channels: int, config) -> Module:
    """The box head of a :class:`~minirc.model.config.BoxHeadConfig`: TwoMLPHead ("mlp") or
    FastRCNNConvFCHead ("conv_fc"); both map (R, in_channels, P, P) RoI features to (R, representation_size)."""
    if config.head_type == "conv_fc":
        return FastRCNNConvFCHead(in_channels, config.pool_size, config.conv_layers, config.representation_size,
                                  config.norm)
    return TwoMLPHead(in_channels * config.pool_size ** 2, config.representation_size, config.norm)


class FastRCNNPredictor(Module):
    """``predictor(x (R, D)) -> (class_logits (R, K), box_regression (R, 4K))``; keys ``cls_score.*``, ``bbox_pred.*``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = Linear(in_features, num_classes)
        self.bbox_pred = Linear(in_features, num_classes * 4)

    def forward(self, x):
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)
