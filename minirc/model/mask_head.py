"""Mask branch: layers, mask targets, the mask loss and inference (He et al. 2017, Sec. 3; docs/semantics.md section 13).

Shape shorthand: R RoIs (positive proposals in training, detections at inference), C channels,
K classes (0 = background), P pooled size (14), S = 2P mask size (28).

* :class:`MaskRCNNHeads`: four (3x3 conv + ReLU) at P x P; keys ``{i}.0.{weight,bias}`` (``norm="bn"``:
  conv without bias, batch norm ``{i}.1.*``, ReLU, as torchvision's ``*_v2``; :mod:`minirc.model.head_norm`).
* :class:`MaskRCNNPredictor`: ``conv5_mask`` (2x2 stride-2 transposed conv, P -> S) + ReLU, then
  ``mask_fcn_logits`` (1x1 conv to K channels): one S x S mask logit map **per class**.
* :func:`project_masks_on_boxes`: the target of a positive RoI is its matched gt mask cropped and
  resized to S x S by RoIAlign (``aligned=False``, adaptive sampling): soft values in [0, 1].
* :func:`mask_loss`: ``"sigmoid"`` -- per-pixel binary cross-entropy on the channel of the RoI's gt
  class only, the other K - 1 channels get no gradient: masks do not compete across classes, the box
  branch's classifier picks the class (the paper's decoupling, its Table 2b). ``"softmax"`` -- the
  FCN-style alternative the paper compares against: a per-pixel softmax across the K channels,
  cross-entropy towards the gt class inside the mask and towards background (channel 0) outside.
"""
from __future__ import annotations

import numpy as np

from minirc.cuda_utils import array_module
from minirc.model.head_norm import conv_norm
from minirc.nn import Conv2d, ConvTranspose2d, Module, Sequential
from minirc.nn import functional as F
from minirc.nn import init


class MaskRCNNHeads(Sequential):
    """``heads(x (R, C, P, P)) -> (R, layers[-1], P, P)``: 3x3 convs (padding = dilation) (+ BN) + ReLU."""

    def __init__(self, in_channels: int, layers, dilation: int = 1, norm: str = "none"):
        blocks = []
        for width in layers:
            blocks.append(Sequential(*conv_norm(in_channels, width, 3, padding=dilation, dilation=dilation,
                                                norm=norm, relu=True)))
            in_channels = width
        super().__init__(*blocks)
        for block in blocks:  # torchvision: kaiming normal (fan_out, relu), zero bias
            init.kaiming_normal_(block[0].weight, mode="fan_out", nonlinearity="relu")
            if block[0].bias is not None:
                init.constant_(block[0].bias, 0.0)


class MaskRCNNPredictor(Module):
    """``predictor(x (R, C, P, P)) -> (R, K, 2P, 2P)`` mask logits; keys ``conv5_mask.*``, ``mask_fcn_logits.*``."""

    def __init__(self, in_channels: int, dim_reduced: int, num_classes: int):
        super().__init__()
        self.conv5_mask = ConvTranspose2d(in_channels, dim_reduced, 2, stride=2, padding=0)
        self.mask_fcn_logits = Conv2d(dim_reduced, num_classes, 1)
        # torchvision re-initialises the weights only (kaiming normal fan_out); biases keep the default
        init.kaiming_normal_(self.conv5_mask.weight, mode="fan_out", nonlinearity="relu")
        init.kaiming_normal_(self.mask_fcn_logits.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.mask_fcn_logits(F.relu(self.conv5_mask(x)))


# ----- training: targets and loss ---------------------------------------------------------------

def project_masks_on_boxes(gt_masks: np.ndarray, boxes: np.ndarray, matched_idxs: np.ndarray, size: int) -> np.ndarray:
    """Mask targets: each gt mask cropped to its RoI and resized to (size, size) by RoIAlign.

    gt_masks: (G, H, W) uint8 masks of one image (resized-image pixels); boxes: (R, 4) float32 RoIs;
    matched_idxs: (R,) int64 gt index of each RoI. Returns (R, size, size) float32 in [0, 1], not
    binarised. The gt index plays the role of RoIAlign's batch index into the (G, 1, H, W) stack.
    """
    from minirc.ops import roi_align

    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if boxes.shape[0] == 0:
        return np.zeros((0, size, size), dtype=np.float32)
    rois = np.concatenate([np.asarray(matched_idxs, dtype=np.float32)[:, None], boxes], axis=1)  # (R, 5)
    masks = np.ascontiguousarray(np.asarray(gt_masks)[:, None], dtype=np.float32)  # (G, 1, H, W)
    out = roi_align(masks, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=False)
    return np.asarray(out, dtype=np.float32)[:, 0]


def _log_softmax(logits, axis: int = 1):
    """Differentiable log-softmax from tape primitives; the max shift is a constant (it cancels)."""
    shift = array_module(logits.data).max(logits.data, axis=axis, keepdims=True)  # stays where logits are
    shifted = logits - shift
    return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()


def mask_loss(mask_logits, labels: np.ndarray, targets: np.ndarray, loss_type: str = "sigmoid"):
    """The mask loss from ready targets, averaged over RoIs and pixels.

    mask_logits: Tensor (R, K, S, S); labels: (R,) int64 gt class of each RoI (>= 1);
    targets: (R, S, S) float in [0, 1]. Returns a scalar Tensor; with R = 0 it is
    ``mask_logits.sum() * 0`` (zero, but still connected to the graph, as torchvision).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] == 0:
        return mask_logits.sum() * 0.0
    rows = np.arange(labels.shape[0])
    targets = np.asarray(targets, dtype=mask_logits.dtype)
    if loss_type == "sigmoid":
        # (R, K, S, S) -> (R, S, S): only the gt class's channel enters the loss
        return F.binary_cross_entropy_with_logits(mask_logits[rows, labels], targets, reduction="mean")
    if loss_type == "softmax":
        log_p = _log_softmax(mask_logits, axis=1)  # (R, K, S, S), normalised across classes
        fg = log_p[rows, labels]  # log p(gt class) per pixel
        bg = log_p[rows, np.zeros_like(labels)]  # log p(background)
        # soft targets: probability t of the gt class, 1 - t of background (hard CE when t is 0/1)
        return -(fg * targets + bg * (1.0 - targets)).mean()
    raise ValueError(f"loss_type: expected 'sigmoid' or 'softmax', got {loss_type!r}")


def maskrcnn_loss(mask_logits, proposals, gt_masks, gt_labels, mask_matched_idxs, loss_type: str = "sigmoid"):
    """torchvision's ``maskrcnn_loss``: targets by :func:`project_masks_on_boxes`, then :func:`mask_loss`.

    mask_logits: Tensor (R, K, S, S) for the positive RoIs of all images, in order;
    proposals: per image (R_i, 4) positive RoIs; gt_masks: per image (G_i, H, W) uint8;
    gt_labels: per image (G_i,) int64; mask_matched_idxs: per image (R_i,) gt index of each RoI.
    """
    size = mask_logits.shape[-1]
    labels = [np.asarray(gl)[idx] for gl, idx in zip(gt_labels, mask_matched_idxs)]
    targets = [project_masks_on_boxes(m, p, idx, size)
               for m, p, idx in zip(gt_masks, proposals, mask_matched_idxs)]
    labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
    targets = np.concatenate(targets) if targets else np.zeros((0, size, size), np.float32)
    return mask_loss(mask_logits, labels, targets, loss_type)


# ----- inference --------------------------------------------------------------------------------

def mask_probabilities(logits: np.ndarray, labels: np.ndarray, loss_type: str = "sigmoid") -> np.ndarray:
    """(R, K, S, S) logits and (R,) predicted classes -> (R, S, S) probabilities of those classes.

    sigmoid: ``sigmoid(logit[r, label_r])``; softmax: ``softmax over K`` then the label's channel.
    """
    logits = np.asarray(logits)
    labels = np.asarray(labels, dtype=np.int64)
    rows = np.arange(labels.shape[0])
    if loss_type == "softmax":
        shifted = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        return (e[rows, labels] / e.sum(axis=1)).astype(logits.dtype, copy=False)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-logits[rows, labels]))).astype(logits.dtype, copy=False)


def maskrcnn_inference(mask_logits, labels_per_image, loss_type: str = "sigmoid") -> list:
    """Split the (R, K, S, S) logits of all detections into per-image (D_i, S, S) probabilities."""
    logits = mask_logits.numpy() if hasattr(mask_logits, "numpy") else np.asarray(mask_logits)
    labels = np.concatenate(labels_per_image) if labels_per_image else np.zeros(0, np.int64)
    probs = mask_probabilities(logits, labels, loss_type)
    counts = [len(lab) for lab in labels_per_image]
    return np.split(probs, np.cumsum(counts)[:-1]) if counts else []
