"""Mask R-CNN (He, Gkioxari, Dollár, Girshick 2017), the whole detector in one short forward.

``MaskRCNN(config)(images, targets=None)``:

    transform -> backbone (ResNet + FPN) -> RPN -> RoI heads (box + mask) -> postprocess

* images: list of (3, H, W) float32 arrays, RGB in [0, 1], any sizes;
* targets (training): one dict per image, ``"boxes"`` (M, 4) float32 x1y1x2y2 in that image's pixels,
  ``"labels"`` (M,) int64 in 1..K-1, ``"masks"`` (M, H, W) uint8 0/1; M may be 0.

Training returns the five unweighted losses ``{"loss_classifier", "loss_box_reg", "loss_mask",
"loss_objectness", "loss_rpn_box_reg"}`` (scalar Tensors; sum them and call ``backward``).
Eval (``model.eval()``, run without recording a graph) returns one dict per image: ``"boxes"`` (D, 4)
float32 in original pixels, ``"labels"`` (D,) int64, ``"scores"`` (D,) float32 and ``"masks"`` (D, H, W)
float32 **soft** probabilities pasted into the original image size -- torchvision's output; threshold
them yourself (``masks >= 0.5``) to get binary masks.

Backends: the model follows the current backend (:func:`minirc.use_backend`, ``MINIRC_BACKEND``). On
``"cuda"`` the forward first moves the parameters and buffers to the GPU (:meth:`Module.to_device`, a
no-op once there) and uploads the padded image batch once; every differentiable stage then keeps its
data on the device, and only the non-differentiable NumPy stages read small detached arrays back
(docs/cuda_backend.md lists those copies). On ``"cpu"``/``"numpy"`` a model on the GPU is moved back.

State-dict keys are torchvision's (``backbone.body.*``, ``backbone.fpn.*``, ``rpn.head.*``,
``roi_heads.{box_head,box_predictor,mask_head,mask_predictor}.*``): see
:func:`load_torchvision_state_dict`.
"""
from __future__ import annotations

import contextlib
import os
import re
import warnings

import numpy as np

from minirc.autograd import Tensor, no_grad
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array, to_device
from minirc.nn import Module


class MaskRCNN(Module):
    """The detector; ``config`` is a :class:`~minirc.model.config.MaskRCNNConfig` (default: torchvision's)."""

    def __init__(self, config=None):
        super().__init__()
        from minirc.model.backbone import BackboneWithFPN
        from minirc.model.config import MaskRCNNConfig
        from minirc.model.roi_heads import RoIHeads
        from minirc.model.transform import GeneralizedRCNNTransform

        self.config = config = MaskRCNNConfig() if config is None else config
        t = config.transform
        self.transform = GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean, t.image_std, t.size_divisible)
        self.backbone = BackboneWithFPN(config.backbone, config.fpn)
        self.rpn = build_rpn(config)
        self.roi_heads = RoIHeads(config)

    def forward(self, images, targets=None):
        images = check_images(images)
        if self.training:
            targets = check_targets(images, targets, self.config.num_classes)
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        on_gpu = self.place_for_backend()
        with (contextlib.nullcontext() if self.training else no_grad()):
            batch, targets = self.transform(images, targets)  # normalise, resize, pad to a multiple of 32
            pixels = to_device(batch.tensors) if on_gpu else batch.tensors  # the batch's one upload
            features = self.backbone(Tensor(pixels))  # [P2, P3, P4, P5, P6], strides 4..64
            proposals, rpn_losses = self.rpn(features, batch.image_sizes, batch.padded_size, targets)
            detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, targets)
        if self.training:
            return {**head_losses, **rpn_losses}
        return self.transform.postprocess(detections, batch.image_sizes, original_sizes)

    def place_for_backend(self) -> bool:
        """Move parameters and buffers to where the current backend computes; True on ``"cuda"``."""
        on_gpu = get_backend() == "cuda"
        placed = [is_device_array(p.data) for p in self.parameters()]
        if on_gpu and not all(placed):
            self.to_device()
        elif not on_gpu and any(placed):
            self.to_host()
        return on_gpu

    def torchvision_state_dict(self) -> dict:
        """The weights as torchvision's ``state_dict()`` holds them: the inverse of
        :func:`load_torchvision_state_dict` (see :func:`torchvision_state_dict`)."""
        return torchvision_state_dict(self)


def build_rpn(config):
    """The region proposal network of ``config`` (anchors, shared head, proposal filtering, losses)."""
    from minirc.detection import AnchorGenerator, RegionProposalNetwork, RPNHead

    a, r = config.anchors, config.rpn
    anchor_generator = AnchorGenerator(a.sizes, a.aspect_ratios)
    head = RPNHead(config.fpn.out_channels, len(a.sizes[0]) * len(a.aspect_ratios[0]),
                   conv_depth=r.head_conv_depth)  # 3x3 convs: 1 (v1), 2 (maskrcnn_resnet50_fpn_v2)
    return RegionProposalNetwork(
        anchor_generator, head,
        fg_iou_thresh=r.fg_iou_thresh, bg_iou_thresh=r.bg_iou_thresh,
        batch_size_per_image=r.batch_size_per_image, positive_fraction=r.positive_fraction,
        pre_nms_top_n={"training": r.pre_nms_top_n_train, "testing": r.pre_nms_top_n_test},
        post_nms_top_n={"training": r.post_nms_top_n_train, "testing": r.post_nms_top_n_test},
        nms_thresh=r.nms_thresh, score_thresh=r.score_thresh)


# ----- input checks -----------------------------------------------------------------------------

def check_images(images) -> list:
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise TypeError(f"images: expected a non-empty list of (3, H, W) float32 arrays, got {type(images).__name__}"
                        + (" of length 0" if isinstance(images, (list, tuple)) else ""))
    out = []
    for i, img in enumerate(images):
        img = img.numpy() if isinstance(img, Tensor) else np.asarray(img)
        if img.ndim != 3 or img.shape[0] != 3 or min(img.shape[1:]) < 1:
            raise ValueError(f"images[{i}]: expected shape (3, H, W) (RGB, channels first), got {img.shape}")
        if img.dtype not in (np.float32, np.float64):
            raise TypeError(f"images[{i}]: expected float32 values in [0, 1], got dtype {img.dtype}")
        img = img.astype(np.float32, copy=False)
        _check_pixels(i, img)
        out.append(img)
    return out


def _check_pixels(i, img):
    """NaN/inf pixels are an error (they would surface later as non-finite boxes); values far outside
    [0, 1] get a warning with the likely fix (augmentations may step slightly outside, so no error)."""
    finite = np.isfinite(img)
    if not finite.all():
        raise ValueError(f"images[{i}]: expected finite pixel values (RGB in [0, 1]), got "
                         f"{img.size - int(np.count_nonzero(finite))} NaN/inf pixel values")
    lo, hi = float(img.min()), float(img.max())
    if lo < -0.5 or hi > 1.5:
        hint = "; they look like 0..255 values: divide by 255" if hi > 2 else ""
        warnings.warn(f"images[{i}]: pixel values span [{lo:.4g}, {hi:.4g}], expected RGB in [0, 1]{hint}",
                      stacklevel=4)


def check_targets(images, targets, num_classes: int) -> list:
    """Validate training targets; errors name the image index, the field and the offending entry.

    Returns copies with canonical dtypes: boxes float32, labels int64, masks uint8.
    """
    if targets is None:
        raise ValueError("targets: required in training mode (one dict per image); call model.eval() for inference")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        raise ValueError(f"targets: expected a list of {len(images)} dicts (one per image), got "
                         f"{type(targets).__name__}{f' of length {len(targets)}' if hasattr(targets, '__len__') else ''}")
    return [_check_target(i, img.shape[-2:], t, num_classes) for i, (img, t) in enumerate(zip(images, targets))]


def _check_target(i, image_size, target, num_classes):
    where = f"targets[{i}]"
    if not isinstance(target, dict) or not {"boxes", "labels", "masks"} <= set(target):
        raise ValueError(f"{where}: expected a dict with keys 'boxes', 'labels', 'masks', got "
                         f"{sorted(target) if isinstance(target, dict) else type(target).__name__}")
    boxes = np.asarray(target["boxes"])
    if boxes.dtype.kind != "f":
        raise TypeError(f"{where}['boxes']: expected float32 x1y1x2y2 boxes, got dtype {boxes.dtype}")
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}['boxes']: expected shape (M, 4), got {boxes.shape}")
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{where}['boxes']: expected finite coordinates, got NaN or inf")
    # clipped to the image, as detectron2's annotations_to_instances does (boxes.clip(image_size)):
    # gt boxes join the proposals, and a box far outside the image would size RoIAlign's samples
    h, w = image_size
    clipped = np.clip(boxes, 0, np.array([w, h, w, h], dtype=boxes.dtype))
    bad = np.flatnonzero((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
    if bad.size:
        raise ValueError(f"{where}['boxes']: every box needs x2 > x1 and y2 > y1 (positive width and height) "
                         f"inside the {h}x{w} image; box {bad[0]} is {boxes[bad[0]].tolist()}")
    boxes = clipped
    m = boxes.shape[0]
    labels = np.asarray(target["labels"])
    if labels.dtype.kind not in "iu":
        raise TypeError(f"{where}['labels']: expected int64 class indices, got dtype {labels.dtype}")
    if labels.shape != (m,):
        raise ValueError(f"{where}['labels']: expected shape ({m},), one per box, got {labels.shape}")
    out = labels[(labels < 1) | (labels >= num_classes)]
    if out.size:
        raise ValueError(f"{where}['labels']: expected classes in 1..{num_classes - 1} (0 is background), "
                         f"got {out[0]}")
    masks = np.asarray(target["masks"])
    if masks.dtype != np.uint8 and masks.dtype != bool:
        raise TypeError(f"{where}['masks']: expected uint8 (or bool) 0/1 masks, got dtype {masks.dtype}")
    if masks.shape != (m, *image_size):
        raise ValueError(f"{where}['masks']: expected shape ({m}, {image_size[0]}, {image_size[1]}) "
                         f"(one mask per box, the image's size), got {masks.shape}")
    if masks.dtype == np.uint8 and masks.size and masks.max() > 1:
        k = int(np.flatnonzero(masks.reshape(m, -1).max(axis=1) > 1)[0])
        raise ValueError(f"{where}['masks']: expected 0/1 values, mask {k} holds values up to "
                         f"{int(masks[k].max())} (0/255 masks: pass mask > 0, or divide by 255)")
    return {**target, "boxes": boxes.astype(np.float32), "labels": labels.astype(np.int64),
            "masks": masks.astype(np.uint8)}


# ----- torchvision weights ----------------------------------------------------------------------

_LEGACY = [  # old checkpoints (module version < 2) -> current names, torchvision's _load_from_state_dict
    (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), r"rpn.head.conv.0.0.\1"),
    (re.compile(r"^backbone\.fpn\.(inner|layer)_blocks\.(\d+)\.(weight|bias)$"), r"backbone.fpn.\1_blocks.\2.0.\3"),
]
_MASK_FCN = re.compile(r"^roi_heads\.mask_head\.mask_fcn(\d+)\.(weight|bias)$")


def _to_numpy(v) -> np.ndarray:
    if hasattr(v, "detach"):  # a torch tensor, without importing torch
        v = v.detach().cpu().numpy()
    return np.asarray(v)


def torchvision_key(key: str) -> str:
    """The current torchvision name of a (possibly legacy) state-dict key."""
    for pattern, repl in _LEGACY:
        if pattern.match(key):
            return pattern.sub(repl, key)
    m = _MASK_FCN.match(key)
    if m:
        return f"roi_heads.mask_head.{int(m.group(1)) - 1}.0.{m.group(2)}"
    return key


def torchvision_state_dict(model: Module) -> dict:
    """``{torchvision key: np.ndarray}``: float32 parameters and buffers, int64 ``num_batches_tracked``.

    minirc's keys are torchvision's current names, so this is ``model.state_dict()`` with
    torchvision's dtypes; ``minirc.io.save_pth`` writes it as a file that ``torch.load`` reads and a
    torchvision model of the same layout loads with ``strict=True`` (``minirc export``, docs/io.md).
    """
    return {key: value.astype(np.int64 if key.endswith("num_batches_tracked") else np.float32, copy=False)
            for key, value in model.state_dict().items()}


def load_torchvision_state_dict(model: Module, state) -> Module:
    """Load a torchvision ``maskrcnn_resnet50_fpn`` state dict (torch tensors or arrays) into ``model``.

    ``state`` may also be the path of a ``.pth`` file, read without torch by :func:`minirc.io.load_pth`.

    Accepts legacy key names (``rpn.head.conv.*``, ``fpn.inner_blocks.{i}.*``, ``mask_head.mask_fcn{i}.*``).
    BatchNorm's ``num_batches_tracked`` is dropped for a FrozenBatchNorm2d model (``backbone.norm="frozen_bn"``)
    and kept (int64) for a BatchNorm2d one, which also accepts a state without it (torch's rule).
    Raises ValueError listing missing, unexpected or wrongly shaped keys. For the COCO_V1 weights build
    the model with ``frozen_bn_eps=0.0`` (the ``torchvision_resnet50`` preset).

    The backbone's BatchNorm eps is not in the weights: the eps the model uses and why is logged at INFO
    (logger ``minirc.model.torchvision_weights``), and a torchvision file known by its name
    (``maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth``, ...) loaded into a model with another eps is a
    ValueError, raised before anything is read (:func:`minirc.model.torchvision_weights.check_batch_norm`).
    """
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "backbone"):
        from minirc.model.torchvision_weights import LOG, check_batch_norm

        path = state if isinstance(state, (str, os.PathLike)) else None
        LOG.info("load_torchvision_state_dict: %s", check_batch_norm(config, path))
    if isinstance(state, (str, os.PathLike)):
        from minirc.io import load_pth

        state = load_pth(state)
    own = {k: tuple(np.shape(v.data if hasattr(v, "data") else v)) for k, v in model.state_dict().items()}
    converted = {}
    for key, value in state.items():
        key = torchvision_key(key)
        if key.endswith("num_batches_tracked"):
            if key in own:
                converted[key] = _to_numpy(value).astype(np.int64)
            continue
        converted[key] = _to_numpy(value).astype(np.float32)
    missing = sorted(k for k in set(own) - set(converted) if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(converted) - set(own))
    wrong = sorted(k for k in set(own) & set(converted) if own[k] != converted[k].shape)
    if missing or unexpected or wrong:
        raise ValueError("state: does not fit the model: "
                         f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                         f"(e.g. {unexpected[:3]}), {len(wrong)} with another shape "
                         f"(e.g. {[(k, converted[k].shape, own[k]) for k in wrong[:3]]})")
    model.load_state_dict(converted)
    return model
