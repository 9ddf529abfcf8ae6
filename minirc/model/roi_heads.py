"""RoI heads: from proposals to class scores, refined boxes and masks (docs/semantics.md sections 12-13).

Shape shorthand: N images, R sampled RoIs (all images), K classes (0 = background), P pooled size.

Training (torchvision ``roi_heads.py``):

1. :meth:`RoIHeads.select_training_samples` -- append the gt boxes to each image's proposals (so every
   object has at least one perfect positive), match by IoU (>= 0.5 -> the gt's class, < 0.5 -> background),
   sample 512 per image with at most 25 % foreground, encode the regression targets (weights 10, 10, 5, 5);
2. pool 7x7 features, TwoMLPHead, FastRCNNPredictor, :func:`fastrcnn_loss`;
3. the positives only: pool 14x14, mask head, :func:`~minirc.model.mask_head.maskrcnn_loss`.

Inference: :func:`postprocess_detections` (softmax, per-class decode and clip, score > 0.05, drop tiny
boxes, per-class NMS 0.5, top 100), then the mask branch on the final boxes, each detection taking the
mask channel of its predicted class. Sampling, matching, decoding and NMS are NumPy, off the tape.
"""
from __future__ import annotations

import numpy as np

from minirc.nn import Module
from minirc.nn import functional as F


# ----- training targets -------------------------------------------------------------------------

def assign_targets_to_proposals(proposals, gt_boxes, gt_labels, matcher):
    """Per image: matched gt index (clamped to >= 0) and label of every proposal.

    Label = the matched gt's class for IoU >= fg threshold, 0 (background) below the bg threshold,
    -1 (ignored) in between. An image without gt boxes has all labels 0 and indices 0.
    """
    matched_idxs, labels = [], []
    for props, gt, gt_lab in zip(proposals, gt_boxes, gt_labels):
        if gt.shape[0] == 0:
            matched_idxs.append(np.zeros(props.shape[0], np.int64))
            labels.append(np.zeros(props.shape[0], np.int64))
            continue
        from minirc.ops import box_iou

        matches = np.asarray(matcher(box_iou(gt, props)), dtype=np.int64)  # (R,) gt index, -1 or -2
        clamped = np.maximum(matches, 0)
        lab = np.asarray(gt_lab, dtype=np.int64)[clamped]
        lab[matches == -1] = 0  # below the low threshold: background
        lab[matches == -2] = -1  # between the thresholds: ignored by the sampler
        matched_idxs.append(clamped)
        labels.append(lab)
    return matched_idxs, labels


def fastrcnn_loss(class_logits, box_regression, labels, regression_targets, beta: float = 1.0 / 9.0):
    """Fast R-CNN loss: softmax cross-entropy + smooth-L1 on the gt class's deltas of the positives.

    class_logits: Tensor (R, K); box_regression: Tensor (R, 4K); labels: per image (R_i,) int64 (or
    one array); regression_targets: per image (R_i, 4) (or one array). The box loss is summed over the
    positives and divided by R, the number of sampled RoIs (not of positives), as torchvision.
    Returns ``(loss_classifier, loss_box_reg)`` scalar Tensors.
    """
    labels = np.concatenate(labels) if isinstance(labels, (list, tuple)) else np.asarray(labels)
    targets = (np.concatenate(regression_targets) if isinstance(regression_targets, (list, tuple))
               else np.asarray(regression_targets))
    num = labels.shape[0]
    if num == 0:  # nothing sampled at all: zero losses that still reach the parameters
        return class_logits.sum() * 0.0, box_regression.sum() * 0.0
    loss_classifier = F.cross_entropy(class_logits, labels.astype(np.int64), reduction="mean")
    pos = np.flatnonzero(labels > 0)
    deltas = box_regression.reshape(num, -1, 4)[pos, labels[pos]]  # (R_pos, 4): the gt class's deltas
    box_loss = F.smooth_l1_loss(deltas, targets[pos].astype(box_regression.dtype), beta=beta, reduction="sum")
    return loss_classifier, box_loss / float(num)


# ----- inference --------------------------------------------------------------------------------

def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def postprocess_detections(class_logits, box_regression, proposals, image_sizes, box_coder,
                           score_thresh=0.05, nms_thresh=0.5, detections_per_img=100, min_size=1e-2):
    """Detections per image: lists of boxes (D, 4) float32, scores (D,) float32, labels (D,) int64.

    class_logits: (R, K) and box_regression: (R, 4K) arrays for the proposals of all images;
    proposals: per image (R_i, 4); image_sizes: per image the resized (h, w) used for clipping.
    Every (proposal, class >= 1) pair is a candidate: decoded with that class's deltas, clipped, kept
    if its softmax score > score_thresh and both sides >= min_size, then NMS per class; the best
    ``detections_per_img`` survive, sorted by score.
    """
    from minirc.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

    class_logits = np.asarray(class_logits, dtype=np.float32)
    num_classes = class_logits.shape[-1]
    pred_boxes = box_coder.decode(np.asarray(box_regression, np.float32), proposals)
    pred_boxes = pred_boxes.reshape(class_logits.shape[0], num_classes, 4)  # (R, K, 4)
    pred_scores = softmax(class_logits, axis=-1)
    splits = np.cumsum([len(p) for p in proposals])[:-1]
    all_boxes, all_scores, all_labels = [], [], []
    for boxes, scores, size in zip(np.split(pred_boxes, splits), np.split(pred_scores, splits), image_sizes):
        boxes = np.asarray(clip_boxes_to_image(boxes.reshape(-1, 4), tuple(size))).reshape(boxes.shape)
        labels = np.broadcast_to(np.arange(num_classes), scores.shape)
        # drop the background column; flatten roi-major, then class 1..K-1
        boxes, scores, labels = boxes[:, 1:].reshape(-1, 4), scores[:, 1:].reshape(-1), labels[:, 1:].reshape(-1)
        keep = np.flatnonzero(scores > score_thresh)  # strict, as torchvision
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = np.asarray(remove_small_boxes(boxes, min_size), dtype=np.int64)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = np.asarray(batched_nms(boxes, scores, labels, nms_thresh), dtype=np.int64)[:detections_per_img]
        all_boxes.append(boxes[keep].astype(np.float32))
        all_scores.append(scores[keep].astype(np.float32))
        all_labels.append(labels[keep].astype(np.int64))
    return all_boxes, all_scores, all_labels


# ----- the module -------------------------------------------------------------------------------

class RoIHeads(Module):
    """``roi_heads(features, proposals, image_sizes, targets=None) -> (detections, losses)``.

    features: [P2, ..., P5(, P6)] Tensors (P6 is not pooled); proposals: per image (R_i, 4) float32 in
    resized-image pixels; image_sizes: per image (h, w); targets: per image dict (resized) or None.
    Training returns ``([], {"loss_classifier", "loss_box_reg", "loss_mask"})``; eval returns
    (per-image dicts with "boxes", "labels", "scores", "masks" (D, S, S) probabilities, {}).
    Keys: ``box_head.*``, ``box_predictor.*``, ``mask_head.*``, ``mask_predictor.*`` (poolers have none).
    """

    def __init__(self, config):
        super().__init__()
        from minirc.detection import BalancedPositiveNegativeSampler, BoxCoder, Matcher
        from minirc.model.box_head import FastRCNNPredictor, build_box_head
        from minirc.model.mask_head import MaskRCNNHeads, MaskRCNNPredictor

        rh, bh, mh, k = config.roi_heads, config.box_head, config.mask_head, config.num_classes
        ch = config.fpn.out_channels
        self.box_roi_pool = _pooler(bh.pool_size, bh.sampling_ratio, rh)
        self.box_head = build_box_head(ch, bh)  # TwoMLPHead or FastRCNNConvFCHead (box_head.head_type)
        self.box_predictor = FastRCNNPredictor(bh.representation_size, k)
        self.mask_roi_pool = _pooler(mh.pool_size, mh.sampling_ratio, rh)
        self.mask_head = MaskRCNNHeads(ch, mh.layers, mh.dilation, mh.norm)
        self.mask_predictor = MaskRCNNPredictor(mh.layers[-1], mh.dim_reduced, k)
        self.proposal_matcher = Matcher(rh.fg_iou_thresh, rh.bg_iou_thresh, allow_low_quality_matches=False)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(rh.batch_size_per_image, rh.positive_fraction)
        self.box_coder = BoxCoder(tuple(rh.bbox_reg_weights))
        self.cfg, self.mask_loss_type, self.mask_size = rh, mh.loss, mh.resolution

    def select_training_samples(self, proposals, targets):
        """Append gt boxes, match, sample; returns sampled proposals, matched idxs, labels, regression targets."""
        gt_boxes = [np.asarray(t["boxes"], np.float32).reshape(-1, 4) for t in targets]
        gt_labels = [np.asarray(t["labels"], np.int64) for t in targets]
        proposals = [np.concatenate([np.asarray(p, np.float32).reshape(-1, 4), g]) for p, g in zip(proposals, gt_boxes)]
        matched_idxs, labels = assign_targets_to_proposals(proposals, gt_boxes, gt_labels, self.proposal_matcher)
        pos_masks, neg_masks = self.fg_bg_sampler(labels)
        matched_gt = []
        for i, (pos, neg) in enumerate(zip(pos_masks, neg_masks)):
            keep = np.flatnonzero(np.asarray(pos) | np.asarray(neg))  # ascending index order
            proposals[i], labels[i], matched_idxs[i] = proposals[i][keep], labels[i][keep], matched_idxs[i][keep]
            gt = gt_boxes[i] if gt_boxes[i].shape[0] else np.zeros((1, 4), np.float32)  # dummy for no-gt images
            matched_gt.append(gt[matched_idxs[i]])
        with np.errstate(divide="ignore", invalid="ignore"):  # the dummy box encodes to -inf (never used)
            regression_targets = [self.box_coder.encode(g, p) for g, p in zip(matched_gt, proposals)]
        return proposals, matched_idxs, labels, regression_targets

    def _mask_subset(self, pos):
        """The positives the mask branch trains on: all, or a uniform draw of mask_rois_per_image
        (ascending order kept). The mask head costs per RoI and an object's positives overlap heavily,
        so a cap makes a step cheaper; on the shapes demo it did not train as well per step
        (docs/training.md, fourth round)."""
        cap = self.cfg.mask_rois_per_image
        if cap is None or len(pos) <= cap:
            return pos
        from minirc.random import generator
        return np.sort(generator().choice(pos, size=cap, replace=False))

    def _mask_logits(self, features, boxes, image_sizes):
        x = self.mask_roi_pool(features, boxes, image_sizes)  # (R, C, P, P)
        return self.mask_predictor(self.mask_head(x))  # (R, K, 2P, 2P)

    def forward(self, features, proposals, image_sizes, targets=None):
        from minirc.model.mask_head import maskrcnn_inference, maskrcnn_loss

        features = list(features)[:4]  # P2..P5; P6 ('pool') is for the RPN only
        if self.training:
            if targets is None:
                raise ValueError("targets: required in training mode (call model.eval() for inference)")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_sizes))  # (R, D)
        class_logits, box_regression = self.box_predictor(box_features)  # (R, K), (R, 4K)

        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(class_logits, box_regression, labels,
                                                          regression_targets, self.cfg.smooth_l1_beta)
            pos = [self._mask_subset(np.flatnonzero(lab > 0)) for lab in labels]
            mask_boxes = [p[i] for p, i in zip(proposals, pos)]
            mask_matched = [m[i] for m, i in zip(matched_idxs, pos)]
            mask_logits = self._mask_logits(features, mask_boxes, image_sizes)
            loss_mask = maskrcnn_loss(mask_logits, mask_boxes, [t["masks"] for t in targets],
                                      [t["labels"] for t in targets], mask_matched, self.mask_loss_type)
            return [], {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg, "loss_mask": loss_mask}

        boxes, scores, labels = postprocess_detections(
            class_logits.numpy(), box_regression.numpy(), proposals, image_sizes, self.box_coder,
            self.cfg.score_thresh, self.cfg.nms_thresh, self.cfg.detections_per_img)
        if sum(len(b) for b in boxes) == 0:  # nothing detected: skip the mask branch
            masks = [np.zeros((0, self.mask_size, self.mask_size), np.float32) for _ in boxes]
        else:
            masks = maskrcnn_inference(self._mask_logits(features, boxes, image_sizes), labels, self.mask_loss_type)
        detections = [{"boxes": b, "labels": lab, "scores": s, "masks": m}
                      for b, lab, s, m in zip(boxes, labels, scores, masks)]
        return detections, {}


def _pooler(output_size: int, sampling_ratio: int, rh):
    from minirc.detection.poolers import MultiScaleRoIAlign

    return MultiScaleRoIAlign(["0", "1", "2", "3"], output_size=output_size, sampling_ratio=sampling_ratio,
                              canonical_scale=rh.canonical_scale, pooler_type=rh.pooler_type,
                              level=rh.pool_level)
