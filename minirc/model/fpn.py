"""Feature Pyramid Network (Lin et al. 2017) with torchvision's layout (docs/semantics.md section 14).

From the coarsest level down: ``last = inner[3](C5)``, ``P5 = layer[3](last)``; then for i = 2, 1, 0:
``last = inner[i](C_i) + nearest_upsample(last, to the lateral's exact size)``, ``P_i = layer[i](last)``.
``inner_blocks`` are 1x1 convs (the laterals), ``layer_blocks`` 3x3 convs (anti-aliasing the sum);
both with bias, no norm, no activation (``norm="bn"``: no bias, a batch norm after each conv, as
torchvision's ``*_v2`` models; keys ``{i}.1.*``, see :mod:`minirc.model.head_norm`).
:class:`LastLevelMaxPool` adds P6 = P5[:, :, ::2, ::2] (max-pool kernel 1, stride 2), which only the
RPN uses (large anchors).

Keys ``inner_blocks.{i}.0.{weight,bias}`` and ``layer_blocks.{i}.0.{weight,bias}`` (torchvision
wraps each conv in a one-element Sequential; old checkpoints lack the ``.0``, see
:func:`minirc.model.mask_rcnn.load_torchvision_state_dict`).
"""
from __future__ import annotations

from minirc.model.head_norm import conv_norm
from minirc.nn import Module, ModuleList, Sequential
from minirc.nn import functional as F
from minirc.nn import init


class LastLevelMaxPool(Module):
    """P6 = max_pool2d(P5, kernel_size=1, stride=2): every other pixel, size ceil(n / 2)."""

    def forward(self, results: list) -> list:
        return results + [F.max_pool2d(results[-1], kernel_size=1, stride=2, padding=0)]


class FeaturePyramidNetwork(Module):
    """``fpn([C2, C3, C4, C5]) -> [P2, P3, P4, P5(, P6)]``, every level ``out_channels`` wide.

    in_channels_list: channels of C2..C5 (256, 512, 1024, 2048 for ResNet-50).
    """

    def __init__(self, in_channels_list, out_channels: int, extra_pool: bool = True, norm: str = "none"):
        super().__init__()
        self.inner_blocks = ModuleList([Sequential(*conv_norm(c, out_channels, 1, norm=norm))
                                        for c in in_channels_list])
        self.layer_blocks = ModuleList([Sequential(*conv_norm(out_channels, out_channels, 3, padding=1, norm=norm))
                                        for _ in in_channels_list])
        for blocks in (self.inner_blocks, self.layer_blocks):
            for block in blocks:
                init.kaiming_uniform_(block[0].weight, a=1)  # torchvision's FPN init
                if block[0].bias is not None:
                    init.constant_(block[0].bias, 0.0)
        self.extra_blocks = LastLevelMaxPool() if extra_pool else None

    def forward(self, features: list) -> list:
        last = self.inner_blocks[-1](features[-1])
        results = [self.layer_blocks[-1](last)]
        for i in range(len(features) - 2, -1, -1):
            lateral = self.inner_blocks[i](features[i])
            # nearest to the lateral's exact size (not "x2"): odd sizes still line up
            top_down = F.interpolate(last, size=tuple(lateral.shape[-2:]), mode="nearest")
            last = lateral + top_down
            results.insert(0, self.layer_blocks[i](last))
        if self.extra_blocks is not None:
            results = self.extra_blocks(results)
        return results
