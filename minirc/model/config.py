"""Configuration of the Mask R-CNN model: nested frozen dataclasses, one comment per field.

The defaults are torchvision's ``maskrcnn_resnet50_fpn`` (torchvision 0.29; see
``docs/model.md`` and ``docs/semantics.md`` sections 9-16), so
``MaskRCNNConfig()`` is the same network as :func:`torchvision_resnet50`. Presets:

* :func:`torchvision_resnet50` -- torchvision's model, layer for layer and key for key;
* :func:`torchvision_resnet50_v2` -- torchvision's ``maskrcnn_resnet50_fpn_v2`` (BatchNorm everywhere,
  a two-conv RPN head, a conv-conv-conv-conv-fc box head), key for key;
* :func:`tiny` -- a few-thousand-parameter network on 64-128 px images, for tests and notebooks;
* :func:`shapes_demo` -- a small network that trains on the synthetic shapes on a CPU;
* :func:`shapes_stride16`, :func:`shapes_stride32` -- shapes_demo pooling every RoI from one map
  (P4 or P5), without FPN level assignment, like the Mask R-CNN paper's C4 and C5 models.

Checkpoints store ``config.to_dict()`` (plain Python values, JSON-friendly) and rebuild it with
``MaskRCNNConfig.from_dict(d)``. :func:`override` changes fields by dotted name
(``override(cfg, {"rpn.nms_thresh": 0.6})``), which is what a command line needs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

BLOCKS = ("bottleneck", "basic")
NORMS = ("frozen_bn", "bn")
# How RoI features are read (docs/roi_pooling.md; the rows of the Mask R-CNN paper's Table 2c):
# "roi_pool" RoIPool (max over whole cells of the snapped box), "roi_warp" RoIWarp (bilinear average over
# the snapped box), "roi_align" RoIAlign (bilinear average, torchvision aligned=False), "roi_align_aligned"
# (detectron2's aligned=True, -0.5 px), "roi_align_max" (RoIAlign's samples, max per bin, aligned=False)
POOLER_TYPES = ("roi_pool", "roi_warp", "roi_align", "roi_align_aligned", "roi_align_max")
POOL_LEVELS = (2, 3, 4, 5)  # roi_heads.pool_level: the FPN level P2..P5 (strides 4..32) every RoI reads
MASK_LOSSES = ("sigmoid", "softmax")
# box_head.head_type: "mlp" torchvision's TwoMLPHead (fc6, fc7), "conv_fc" its FastRCNNConvFCHead (3x3 convs, one fc)
BOX_HEAD_TYPES = ("mlp", "conv_fc")


def _fail(cls, name, expected, got):
    raise ValueError(f"{cls.__name__}.{name}: expected {expected}, got {got!r}")


def _check_norm(config):
    from minirc.model.head_norm import check_norm

    check_norm(config.norm, f"{type(config).__name__}.norm")


@dataclass(frozen=True)
class TransformConfig:
    """GeneralizedRCNNTransform: normalise, resize, pad (docs/semantics.md section 15)."""
    min_size: tuple = (800,)  # shorter side after resizing; training draws one value uniformly, eval uses the last
    max_size: int = 1333  # cap on the longer side (the scale is the smaller of the two ratios)
    image_mean: tuple = (0.485, 0.456, 0.406)  # ImageNet RGB mean, subtracted from images in [0, 1]
    image_std: tuple = (0.229, 0.224, 0.225)  # ImageNet RGB std, divided after the mean
    size_divisible: int = 32  # the padded batch's H and W are rounded up to a multiple of this (the P5 stride)

    def __post_init__(self):
        if not self.min_size or any(int(s) <= 0 for s in self.min_size):
            _fail(type(self), "min_size", "a non-empty tuple of positive ints", self.min_size)
        if self.max_size <= 0:
            _fail(type(self), "max_size", "a positive int", self.max_size)
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            _fail(type(self), "image_mean/image_std", "3 values each, std > 0", (self.image_mean, self.image_std))


@dataclass(frozen=True)
class BackboneConfig:
    """ResNet body with torchvision's layout and key names (docs/semantics.md section 14)."""
    # "bottleneck" (1x1-3x3-1x1, expansion 4: ResNet-50) or "basic" (3x3-3x3, expansion 1: ResNet-18)
    block: str = "bottleneck"
    layers: tuple = (3, 4, 6, 3)  # number of blocks in layer1..layer4 (ResNet-50)
    widths: tuple = (64, 128, 256, 512)  # inner width of each stage; its output has width * expansion channels
    stem_channels: int = 64  # channels of conv1 (7x7, stride 2) and of the input of layer1
    # FrozenBatchNorm2d eps: 0.0 reproduces the COCO_V1 weights (torchvision's overwrite_eps), else 1e-5
    frozen_bn_eps: float = 0.0
    trainable_layers: int = 3  # 0..5: how many of layer4, layer3, layer2, layer1, conv1 (in that order) train
    # "frozen_bn" (torchvision with pretrained weights) or "bn" (torchvision from scratch: trainable BatchNorm2d)
    norm: str = "frozen_bn"

    def __post_init__(self):
        if self.block not in BLOCKS:
            _fail(type(self), "block", f"one of {BLOCKS}", self.block)
        if len(self.layers) != 4 or len(self.widths) != 4 or min(self.layers) < 1 or min(self.widths) < 1:
            _fail(type(self), "layers/widths", "4 positive ints each", (self.layers, self.widths))
        if not 0 <= self.trainable_layers <= 5:
            _fail(type(self), "trainable_layers", "an int in 0..5", self.trainable_layers)
        if self.norm not in NORMS:
            _fail(type(self), "norm", f"one of {NORMS}", self.norm)
        if self.frozen_bn_eps < 0:
            _fail(type(self), "frozen_bn_eps", "a number >= 0", self.frozen_bn_eps)

    @property
    def expansion(self) -> int:
        return 4 if self.block == "bottleneck" else 1

    @property
    def out_channels(self) -> tuple:
        """Channels of C2..C5 (the FPN's inputs): 256, 512, 1024, 2048 for ResNet-50."""
        return tuple(w * self.expansion for w in self.widths)


@dataclass(frozen=True)
class FPNConfig:
    """Feature pyramid on C2..C5 (docs/semantics.md section 14)."""
    out_channels: int = 256  # channels of every pyramid level P2..P6 (and of the RPN and RoI heads' inputs)
    extra_pool: bool = True  # add P6 = max_pool2d(P5, kernel 1, stride 2) ("pool"), used by the RPN only
    norm: str = "none"  # "none": torchvision's FPN; "bn": BatchNorm after every conv (the v2 models, from scratch)

    def __post_init__(self):
        _check_norm(self)


@dataclass(frozen=True)
class AnchorConfig:
    """Anchors per pyramid level (docs/semantics.md section 9)."""
    sizes: tuple = ((32,), (64,), (128,), (256,), (512,))  # anchor side(s) in input pixels, one tuple per level P2..P6
    aspect_ratios: tuple = ((0.5, 1.0, 2.0),) * 5  # height / width ratios, one tuple per level

    def __post_init__(self):
        if len(self.sizes) != len(self.aspect_ratios):
            _fail(type(self), "sizes", f"one tuple per level, like aspect_ratios ({len(self.aspect_ratios)})",
                  self.sizes)


@dataclass(frozen=True)
class RPNConfig:
    """Region proposal network (docs/semantics.md section 10)."""
    pre_nms_top_n_train: int = 2000  # top-scoring anchors kept per level before NMS, training
    pre_nms_top_n_test: int = 1000  # same, inference
    post_nms_top_n_train: int = 2000  # proposals kept per image after NMS, training
    post_nms_top_n_test: int = 1000  # same, inference
    nms_thresh: float = 0.7  # IoU above which a lower-scoring proposal is suppressed (per level)
    fg_iou_thresh: float = 0.7  # anchors with IoU >= this with a gt box are positives
    bg_iou_thresh: float = 0.3  # anchors with IoU < this with every gt box are negatives (between: ignored)
    batch_size_per_image: int = 256  # anchors sampled per image for the RPN losses
    positive_fraction: float = 0.5  # at most this fraction of them positive
    score_thresh: float = 0.0  # proposals need sigmoid(objectness) >= this
    head_conv_depth: int = 1  # 3x3 conv + ReLU layers of the RPN head before its 1x1 predictors (the v2 models: 2)

    def __post_init__(self):
        d = self.head_conv_depth
        if not isinstance(d, int) or isinstance(d, bool) or d < 1:
            _fail(type(self), "head_conv_depth", "an int >= 1", d)


@dataclass(frozen=True)
class RoIHeadsConfig:
    """Proposal sampling, Fast R-CNN loss and detection post-processing (docs/semantics.md section 12)."""
    # one of POOLER_TYPES: "roi_pool", "roi_warp", "roi_align" (torchvision, aligned=False),
    # "roi_align_aligned" (detectron2, -0.5 px), "roi_align_max"
    pooler_type: str = "roi_align"
    # FPN level assignment k = floor(4 + log2(sqrt(area) / canonical_scale)): 224 (the paper's ImageNet
    # crop) on 800 px images; small images want it scaled down so that large objects reach deeper levels
    canonical_scale: float = 224.0
    # None: FPN level assignment (canonical_scale above); 2..5: every RoI is pooled from that one level,
    # 4 = P4 (stride 16, like the paper's C4 models), 5 = P5 (stride 32, its C5 row in Table 2d)
    pool_level: int | None = None
    fg_iou_thresh: float = 0.5  # proposals with IoU >= this with a gt box are foreground (labelled with its class)
    bg_iou_thresh: float = 0.5  # proposals with IoU < this with every gt box are background (label 0)
    batch_size_per_image: int = 512  # proposals sampled per image (gt boxes are appended first)
    positive_fraction: float = 0.25  # at most this fraction of them foreground
    # training: the mask branch sees at most this many of an image's sampled positives (a uniform
    # draw from minirc.random's generator); None: all of them, as torchvision and detectron2 do
    mask_rois_per_image: int | None = None
    bbox_reg_weights: tuple = (10.0, 10.0, 5.0, 5.0)  # (wx, wy, ww, wh) of the box coder: ~unit-variance targets
    smooth_l1_beta: float = 1.0 / 9.0  # beta of the smooth-L1 box loss (sum over positives / number sampled)
    score_thresh: float = 0.05  # inference: keep (box, class) pairs with softmax score > this (strict)
    nms_thresh: float = 0.5  # inference: per-class NMS IoU threshold
    detections_per_img: int = 100  # inference: keep at most this many detections per image

    def __post_init__(self):
        if self.pooler_type not in POOLER_TYPES:
            _fail(type(self), "pooler_type", f"one of {POOLER_TYPES}", self.pooler_type)
        lvl = self.pool_level
        if lvl is not None and (not isinstance(lvl, int) or isinstance(lvl, bool) or lvl not in POOL_LEVELS):
            _fail(type(self), "pool_level", f"None (FPN level assignment) or a level in {POOL_LEVELS} "
                  f"(P2..P5, strides 4..32)", lvl)
        if len(self.bbox_reg_weights) != 4:
            _fail(type(self), "bbox_reg_weights", "4 numbers", self.bbox_reg_weights)
        cap = self.mask_rois_per_image
        if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
            _fail(type(self), "mask_rois_per_image", "None or an integer >= 1", self.mask_rois_per_image)


@dataclass(frozen=True)
class BoxHeadConfig:
    """RoI feature pooling for boxes, the box head and FastRCNNPredictor (docs/semantics.md sections 11-12)."""
    pool_size: int = 7  # RoI features are (C, pool_size, pool_size)
    sampling_ratio: int = 2  # RoIAlign samples per bin side (0 or -1: adaptive ceil(roi/bin))
    # one of BOX_HEAD_TYPES: "mlp" (TwoMLPHead: fc6, fc7) or "conv_fc" (FastRCNNConvFCHead: the
    # conv_layers 3x3 convs + ReLU, then one fc + ReLU; torchvision's maskrcnn_resnet50_fpn_v2)
    head_type: str = "mlp"
    representation_size: int = 1024  # width of fc6 and fc7 ("mlp"), of the one fc ("conv_fc")
    conv_layers: tuple = (256, 256, 256, 256)  # "conv_fc" only: output channels of each 3x3 conv
    # "none": no normalisation (torchvision's TwoMLPHead); "bn": "mlp" BatchNorm after fc6 and fc7
    # (training from scratch), "conv_fc" BatchNorm after every conv, convs without bias (the v2 models)
    norm: str = "none"

    def __post_init__(self):
        _check_norm(self)
        if self.head_type not in BOX_HEAD_TYPES:
            _fail(type(self), "head_type", f"one of {BOX_HEAD_TYPES}", self.head_type)
        if self.head_type == "conv_fc" and (not self.conv_layers or min(self.conv_layers) < 1):
            _fail(type(self), "conv_layers", "at least one positive conv width for head_type 'conv_fc'",
                  self.conv_layers)


@dataclass(frozen=True)
class MaskHeadConfig:
    """Mask branch: pooling, MaskRCNNHeads, MaskRCNNPredictor and the mask loss (docs/semantics.md section 13)."""
    pool_size: int = 14  # RoI features (C, 14, 14); the predicted masks are twice this (28x28)
    sampling_ratio: int = 2  # RoIAlign samples per bin side for the mask features
    layers: tuple = (256, 256, 256, 256)  # output channels of each 3x3 conv + ReLU of the mask head
    dilation: int = 1  # dilation (= padding) of those convs
    dim_reduced: int = 256  # channels of the 2x2 stride-2 transposed conv (conv5_mask)
    norm: str = "none"  # "none": torchvision's MaskRCNNHeads; "bn": BatchNorm after each 3x3 conv (the v2 models)
    # "sigmoid": per-pixel BCE on the gt class's channel only (the paper); "softmax": per-pixel softmax over classes
    loss: str = "sigmoid"

    def __post_init__(self):
        if self.loss not in MASK_LOSSES:
            _fail(type(self), "loss", f"one of {MASK_LOSSES}", self.loss)
        if not self.layers:
            _fail(type(self), "layers", "at least one conv width", self.layers)
        _check_norm(self)

    @property
    def resolution(self) -> int:
        """Side of the predicted masks (the transposed conv doubles the pooled size)."""
        return 2 * self.pool_size


@dataclass(frozen=True)
class MaskRCNNConfig:
    """The whole detector. ``MaskRCNNConfig()`` is torchvision's maskrcnn_resnet50_fpn."""
    num_classes: int = 91  # classes including the background, index 0 (COCO category ids 1..90)
    transform: TransformConfig = field(default_factory=TransformConfig)  # input normalisation and resizing
    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # ResNet body
    fpn: FPNConfig = field(default_factory=FPNConfig)  # feature pyramid
    anchors: AnchorConfig = field(default_factory=AnchorConfig)  # RPN anchors
    rpn: RPNConfig = field(default_factory=RPNConfig)  # proposals
    roi_heads: RoIHeadsConfig = field(default_factory=RoIHeadsConfig)  # sampling, box loss, inference, pooler type
    box_head: BoxHeadConfig = field(default_factory=BoxHeadConfig)  # box branch layers
    mask_head: MaskHeadConfig = field(default_factory=MaskHeadConfig)  # mask branch layers and loss

    def __post_init__(self):
        if not isinstance(self.num_classes, int) or self.num_classes < 2:
            _fail(type(self), "num_classes", "an int >= 2 (background + at least one class)", self.num_classes)
        levels = len(self.anchors.sizes)
        if levels != 4 + int(self.fpn.extra_pool):
            _fail(type(self), "anchors.sizes", f"{4 + int(self.fpn.extra_pool)} levels (P2..P5"
                  f"{' + pool' if self.fpn.extra_pool else ''})", self.anchors.sizes)

    def to_dict(self) -> dict:
        """Plain nested dict (tuples stay tuples; JSON turns them into lists, which from_dict accepts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MaskRCNNConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ValueError naming them."""
        return _from_dict(cls, d, "config")


_SUBCONFIGS = {f.name: f.default_factory for f in dataclasses.fields(MaskRCNNConfig)
               if f.default_factory is not dataclasses.MISSING}


def _tuples(v):
    """JSON lists back to (nested) tuples, so a loaded config equals the saved one."""
    return tuple(_tuples(x) for x in v) if isinstance(v, (list, tuple)) else v


def _from_dict(cls, d, where):
    if not isinstance(d, dict):
        raise TypeError(f"{where}: expected a dict, got {type(d).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; {cls.__name__} has {sorted(names)}")
    kwargs = {}
    for k, v in d.items():
        if cls is MaskRCNNConfig and k in _SUBCONFIGS:
            kwargs[k] = _from_dict(_SUBCONFIGS[k], v, f"{where}.{k}")
        else:
            kwargs[k] = _tuples(v)
    return cls(**kwargs)


def override(config: MaskRCNNConfig, changes: dict) -> MaskRCNNConfig:
    """A copy of ``config`` with fields replaced by dotted name, e.g. ``{"mask_head.loss": "softmax"}``."""
    d = config.to_dict()
    for key, value in changes.items():
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ValueError(f"override: {key!r} does not name a config field")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"override: {key!r} does not name a config field")
        node[parts[-1]] = value
    return MaskRCNNConfig.from_dict(d)


# ----- presets ----------------------------------------------------------------------------------

def torchvision_resnet50(num_classes: int = 91, frozen_bn_eps: float = 0.0,
                         trainable_layers: int = 3) -> MaskRCNNConfig:
    """torchvision's ``maskrcnn_resnet50_fpn`` (FrozenBN variant): same layers, keys and defaults.

    frozen_bn_eps 0.0 matches ``weights=COCO_V1`` (torchvision calls ``overwrite_eps(model, 0.0)``);
    use 1e-5 with ImageNet backbone weights only. 44,401,393 parameters for 91 classes.
    """
    return MaskRCNNConfig(num_classes=num_classes,
                          backbone=BackboneConfig(frozen_bn_eps=frozen_bn_eps, trainable_layers=trainable_layers))


def torchvision_resnet50_v2(num_classes: int = 91, trainable_layers: int = 3) -> MaskRCNNConfig:
    """torchvision's ``maskrcnn_resnet50_fpn_v2`` (Li et al. 2021): same layers, keys and defaults.

    Differences from :func:`torchvision_resnet50`: trainable BatchNorm2d (eps 1e-5, torch's default,
    which the COCO_V1 weights were trained with) in the ResNet body, after every FPN conv (convs without
    bias), after each of the box head's four 3x3 convs (``FastRCNNConvFCHead``: convs, flatten, one
    1024-wide fc) and after each mask-head conv; an RPN head of two 3x3 convs. 46,359,409 parameters
    for 91 classes. In eval mode every BatchNorm2d uses its running statistics.
    """
    return MaskRCNNConfig(
        num_classes=num_classes,
        backbone=BackboneConfig(norm="bn", frozen_bn_eps=1e-5, trainable_layers=trainable_layers),
        fpn=FPNConfig(norm="bn"),
        rpn=RPNConfig(head_conv_depth=2),
        box_head=BoxHeadConfig(head_type="conv_fc", conv_layers=(256, 256, 256, 256), representation_size=1024,
                               norm="bn"),
        mask_head=MaskHeadConfig(norm="bn"))


def tiny(num_classes: int = 4) -> MaskRCNNConfig:
    """A toy network (BasicBlocks 8-16-32-64, trainable BatchNorm2d, FPN 32) on 64-128 px images: tests, notebooks."""
    return MaskRCNNConfig(
        num_classes=num_classes,
        transform=TransformConfig(min_size=(64,), max_size=128),
        backbone=BackboneConfig(block="basic", layers=(1, 1, 1, 1), widths=(8, 16, 32, 64), stem_channels=8,
                                frozen_bn_eps=1e-5, trainable_layers=5, norm="bn"),
        fpn=FPNConfig(out_channels=32),
        anchors=AnchorConfig(sizes=((8,), (16,), (32,), (64,), (128,))),
        rpn=RPNConfig(pre_nms_top_n_train=200, pre_nms_top_n_test=100, post_nms_top_n_train=100,
                      post_nms_top_n_test=50, batch_size_per_image=64),
        roi_heads=RoIHeadsConfig(pooler_type="roi_align_aligned", batch_size_per_image=32, detections_per_img=20),
        box_head=BoxHeadConfig(pool_size=7, representation_size=64),
        mask_head=MaskHeadConfig(pool_size=7, layers=(32, 32), dim_reduced=32),
    )


def shapes_demo(num_classes: int = 4) -> MaskRCNNConfig:
    """A starting point for training on the synthetic shapes on a CPU (128 px images).

    BasicBlocks 16-32-64-128 (two per stage, a slim ResNet-18), FPN 64, few proposals, 14 -> 28 masks.
    Trainable BatchNorm2d, as torchvision builds a ResNet without pretrained weights, and in the box
    head after fc6 and fc7 (``box_head.norm="bn"``).
    """
    return MaskRCNNConfig(
        num_classes=num_classes,
        transform=TransformConfig(min_size=(128,), max_size=128),
        backbone=BackboneConfig(block="basic", layers=(2, 2, 2, 2), widths=(16, 32, 64, 128), stem_channels=16,
                                frozen_bn_eps=1e-5, trainable_layers=5, norm="bn"),
        fpn=FPNConfig(out_channels=64),
        anchors=AnchorConfig(sizes=((8,), (16,), (32,), (64,), (128,))),
        # post_nms_top_n_test 100 (torchvision: 1000): the demo checkpoint of 2026-11-22 scored mask AP50
        # 0.899 with 50 proposals per held-out image and 0.903 with 100 (bbox AP50 0.900 -> 0.904)
        rpn=RPNConfig(pre_nms_top_n_train=300, pre_nms_top_n_test=200, post_nms_top_n_train=100,
                      post_nms_top_n_test=100),
        # canonical_scale 224 / 4: objects of 20-56 px spread over P2-P4 instead of all landing on P2
        roi_heads=RoIHeadsConfig(pooler_type="roi_align_aligned", canonical_scale=56.0, batch_size_per_image=128,
                                 detections_per_img=50),
        # BatchNorm after fc6/fc7: mask AP50 0.47 -> 0.55 after 800 iterations from scratch (docs/training.md)
        box_head=BoxHeadConfig(pool_size=7, representation_size=256, norm="bn"),
        mask_head=MaskHeadConfig(pool_size=14, layers=(32, 32), dim_reduced=32),
    )


def shapes_stride16(num_classes: int = 4) -> MaskRCNNConfig:
    """:func:`shapes_demo` with every RoI pooled from P4 (stride 16, ``roi_heads.pool_level=4``): one
    map and no FPN level assignment, as in the Mask R-CNN paper's C4 models (Table 2c)."""
    return override(shapes_demo(num_classes), {"roi_heads.pool_level": 4})


def shapes_stride32(num_classes: int = 4) -> MaskRCNNConfig:
    """:func:`shapes_demo` with every RoI pooled from P5 (stride 32, ``roi_heads.pool_level=5``), as in
    the paper's C5 row (Table 2d), where rounding to whole cells moves each RoI corner by up to 16 image pixels."""
    return override(shapes_demo(num_classes), {"roi_heads.pool_level": 5})


PRESETS = {"torchvision_resnet50": torchvision_resnet50, "torchvision_resnet50_v2": torchvision_resnet50_v2,
           "tiny": tiny, "shapes_demo": shapes_demo,
           "shapes_stride16": shapes_stride16, "shapes_stride32": shapes_stride32}


def preset(name: str, **kwargs) -> MaskRCNNConfig:
    """A preset by name (``"tiny"``, ``"shapes_demo"``, ``"torchvision_resnet50"``, ``"torchvision_resnet50_v2"``)."""
    if name not in PRESETS:
        raise ValueError(f"preset(name): expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name](**kwargs)

