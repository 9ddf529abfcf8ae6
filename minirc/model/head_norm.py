"""Normalisation for the layers a pretrained backbone does not cover: FPN, box head, mask head.

torchvision's ``maskrcnn_resnet50_fpn`` has no normalisation after its backbone; its ``*_v2`` models
(Li et al. 2021, "Benchmarking detection transfer learning with vision transformers") put a batch
norm after every conv of the FPN, the box head and the mask head, which is what lets them train
from scratch. minirc offers the same as ``norm="bn"`` on :class:`~minirc.model.config.FPNConfig`,
``BoxHeadConfig`` and ``MaskHeadConfig``; ``"none"`` (the default) is the v1 layout, key for key.

:func:`conv_norm` builds torchvision's ``Conv2dNormActivation``: conv (with a bias only when there is
no norm after it), batch norm, optional ReLU, so the keys are ``0.weight`` (``0.bias``) and ``1.*``.
"""
from __future__ import annotations

from minirc.nn import BatchNorm2d, Conv2d, ReLU

NORMS = ("none", "bn")


def check_norm(norm, name="norm"):
    if norm not in NORMS:
        raise ValueError(f"{name}: expected one of {NORMS}, got {norm!r}")
    return norm


class RoIBatchNorm2d(BatchNorm2d):
    """BatchNorm2d that also takes batches with at most one value per channel.

    Batch statistics need two values per channel at least; a head can see fewer -- no positive RoI
    for the mask head, one RoI for the box head's (R, D, 1, 1) features -- where torch would raise.
    Such a batch is normalised with the running statistics, as in eval mode, and leaves them unchanged.
    """

    def forward(self, x):
        n, _, h, w = x.shape
        if not self.training or n * h * w > 1:
            return super().forward(x)
        self.training = False
        try:
            return super().forward(x)
        finally:
            self.training = True


def conv_norm(in_channels: int, out_channels: int, kernel_size: int, padding: int = 0, dilation: int = 1,
              norm: str = "none", relu: bool = False) -> list:
    """[Conv2d, RoIBatchNorm2d (norm="bn" only), ReLU (relu only)], to wrap in a Sequential."""
    layers = [Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation,
                     bias=check_norm(norm) == "none")]
    if norm == "bn":
        layers.append(RoIBatchNorm2d(out_channels))
    if relu:
        layers.append(ReLU())
    return layers
