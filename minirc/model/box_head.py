"""Box branch layers: TwoMLPHead and FastRCNNPredictor (spec sections 8-9, torchvision ``faster_rcnn.py``).

TwoMLPHead: RoI features (R, C, P, P) -> flatten (C-major: index ``c * P * P + y * P + x``) ->
``fc6`` -> ReLU -> ``fc7`` -> ReLU -> (R, representation_size).
FastRCNNPredictor: ``cls_score`` -> (R, K) class logits and ``bbox_pred`` -> (R, 4K) class-specific
box deltas laid out ``[k * 4 + (dx, dy, dw, dh)]`` (the RoI heads decode them with weights 10, 10, 5, 5).
Both use the layers' default (PyTorch) initialisation, as torchvision does.
"""
from __future__ import annotations

from minirc.nn import Linear, Module
from minirc.nn import functional as F


class TwoMLPHead(Module):
    """``head(x (R, C, P, P)) -> (R, representation_size)``; keys ``fc6.*``, ``fc7.*``."""

    def __init__(self, in_features: int, representation_size: int):
        super().__init__()
        self.fc6 = Linear(in_features, representation_size)
        self.fc7 = Linear(representation_size, representation_size)

    def forward(self, x):
        x = x.flatten(start_dim=1)  # (R, C, P, P) -> (R, C*P*P)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


class FastRCNNPredictor(Module):
    """``predictor(x (R, D)) -> (class_logits (R, K), box_regression (R, 4K))``; keys ``cls_score.*``, ``bbox_pred.*``."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = Linear(in_features, num_classes)
        self.bbox_pred = Linear(in_features, num_classes * 4)

    def forward(self, x):
        x = x.flatten(start_dim=1)
        return self.cls_score(x), self.bbox_pred(x)
