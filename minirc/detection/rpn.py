"""Region Proposal Network (Faster R-CNN, Ren et al. 2015, Sec. 3.1; with FPN, Lin et al. 2017, Sec. 4.1).

Shape shorthand: N images, C channels, L pyramid levels, H_l W_l a level's grid, A anchors per location,
S = sum over levels of H_l * W_l * A (all anchors of one image), M ground-truth boxes.

One small head slides over every pyramid level (shared weights): a 3x3 conv + ReLU, then two 1x1 convs
predicting, per location and anchor, an objectness logit and 4 box deltas. Then:

1. flatten the head outputs in **anchor order** (location-major, then anchor; :func:`concat_box_prediction_layers`);
2. decode the (detached) deltas onto the anchors -> one candidate box per anchor;
3. keep the ``pre_nms_top_n`` highest logits **per level**, sigmoid, clip to the image, drop boxes thinner
   than ``min_size``, drop scores below ``score_thresh``, NMS at ``nms_thresh`` **per level**, keep the
   ``post_nms_top_n`` best per image;
4. in training, label anchors (IoU >= 0.7 positive, < 0.3 negative, plus each gt's best anchors), sample
   256 per image (half positive at most) and return the BCE objectness loss and the smooth-L1 box loss
   (beta 1/9, summed over the positives, divided by the number of sampled anchors).

The conventions are torchvision's (``models/detection/rpn.py``): see docs/rpn.md. Steps 2-3 and the
labelling are plain NumPy outside the tape (proposals are constants); the head and the losses are on it.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy.special import expit

import minirc
from minirc._checks import as_array, number, pair, positive_int
from minirc.autograd import Tensor
from minirc.cuda_utils import to_host
from minirc.detection.anchors import AnchorGenerator
from minirc.detection.box_coder import BoxCoder
from minirc.detection.matcher import Matcher
from minirc.detection.sampler import BalancedPositiveNegativeSampler
from minirc.nn import Conv2d, Module, ReLU, Sequential, init
from minirc.nn import functional as F
# from the op files directly: a package attribute named like its submodule (minirc.ops.box_iou, .nms)
# resolves to the submodule under `from minirc.ops import box_iou`
from minirc.ops.box_iou import box_iou
from minirc.ops.boxes import clip_boxes_to_image, remove_small_boxes
from minirc.ops.nms import batched_nms

RPN_BOX_LOSS_BETA = 1.0 / 9  # smooth-L1 beta of torchvision's RPN (detectron2 uses L1, beta 0)


class RPNHead(Module):
    """The RPN head: ``conv`` (3x3 + ReLU) shared by every level, then ``cls_logits`` and ``bbox_pred`` (1x1).

    in_channels: C of every level; num_anchors: A per location; conv_depth: number of 3x3 conv + ReLU.
    ``head(features)`` with a list of ``(N, C, H_l, W_l)`` Tensors returns ``(logits, deltas)``: lists of
    ``(N, A, H_l, W_l)`` and ``(N, 4A, H_l, W_l)`` Tensors. Channel ``a`` of the logits and channels
    ``4a..4a+3`` (dx, dy, dw, dh) of the deltas belong to anchor ``a`` of the cell.
    State keys are torchvision's: ``conv.0.0.{weight,bias}``, ``cls_logits.*``, ``bbox_pred.*``.
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        in_channels = positive_int(in_channels, "in_channels")
        num_anchors = positive_int(num_anchors, "num_anchors")
        # Sequential(Sequential(conv, relu)): torchvision's Conv2dNormActivation nesting, hence "conv.0.0"
        self.conv = Sequential(*[Sequential(Conv2d(in_channels, in_channels, 3, padding=1), ReLU())
                                 for _ in range(positive_int(conv_depth, "conv_depth"))])
        self.cls_logits = Conv2d(in_channels, num_anchors, 1)
        self.bbox_pred = Conv2d(in_channels, 4 * num_anchors, 1)
        for conv in [block[0] for block in self.conv] + [self.cls_logits, self.bbox_pred]:
            init.normal_(conv.weight, std=0.01)  # torchvision's init (training from scratch)
            init.constant_(conv.bias, 0.0)

    def forward(self, features):
        logits, deltas = [], []
        for feature in features:  # the same weights on every level
            t = self.conv(feature)
            logits.append(self.cls_logits(t))
            deltas.append(self.bbox_pred(t))
        return logits, deltas


def _flatten_level(t: Tensor, channels: int) -> Tensor:
    """(N, A*C, H, W) -> (N, H*W*A, C): the anchor order, location-major then anchor (``permute_and_flatten``)."""
    n, ac, h, w = t.shape
    t = t.reshape(n, ac // channels, channels, h, w)  # (N, A, C, H, W): channel = a * C + c
    t = t.transpose(0, 3, 4, 1, 2)                    # (N, H, W, A, C)
    return t.reshape(n, h * w * (ac // channels), channels)


def concat_box_prediction_layers(logits, deltas):
    """Flatten per-level head outputs into anchor order and join the levels.

    logits: list of ``(N, A*C, H_l, W_l)`` Tensors (C = 1 for the RPN); deltas: list of ``(N, A*4, H_l, W_l)``.
    Returns ``(N*S, C)`` and ``(N*S, 4)`` Tensors; row ``i * S + j`` is image ``i``, anchor ``j`` of
    :class:`AnchorGenerator`'s concatenated levels. Differentiable (reshape, transpose, cat on the tape).
    """
    flat_logits, flat_deltas = [], []
    for lg, dl in zip(logits, deltas):
        a = dl.shape[1] // 4
        flat_logits.append(_flatten_level(lg, lg.shape[1] // a))
        flat_deltas.append(_flatten_level(dl, 4))
    logits = minirc.cat(flat_logits, axis=1)  # (N, S, C)
    deltas = minirc.cat(flat_deltas, axis=1)  # (N, S, 4)
    n, s, c = logits.shape
    return logits.reshape(n * s, c), deltas.reshape(n * s, 4)


def _top_n(counts, default, name):
    """{"training": int, "testing": int} from a dict or a single int."""
    if counts is None:
        counts = default
    if isinstance(counts, numbers.Integral):
        counts = {"training": counts, "testing": counts}
    if not isinstance(counts, dict) or set(counts) != {"training", "testing"}:
        raise TypeError(f"{name}: expected an int or a dict with keys 'training' and 'testing', got {counts!r}")
    return {k: positive_int(v, f"{name}[{k!r}]", minimum=0) for k, v in counts.items()}


class RegionProposalNetwork(Module):
    """Anchors + head + proposal filtering (+ targets and losses in training), torchvision's defaults.

    anchor_generator: an :class:`AnchorGenerator` (default: FPN sizes 32..512, ratios 0.5/1/2);
    head: an :class:`RPNHead` whose A matches the generator's.
    fg_iou_thresh / bg_iou_thresh: IoU >= fg is positive, < bg negative, in between ignored (0.7 / 0.3);
    batch_size_per_image / positive_fraction: anchors sampled per image for the losses (256 / 0.5);
    pre_nms_top_n: candidates kept **per level** before NMS, ``{"training": 2000, "testing": 1000}``;
    post_nms_top_n: proposals kept **per image** after NMS, ``{"training": 2000, "testing": 1000}``;
    nms_thresh (0.7), score_thresh (0.0, on the sigmoid, kept if >=), min_size (1e-3 px, kept if >=).
    """

    def __init__(self, anchor_generator=None, head=None, fg_iou_thresh=0.7, bg_iou_thresh=0.3,
                 batch_size_per_image=256, positive_fraction=0.5, pre_nms_top_n=None, post_nms_top_n=None,
                 nms_thresh=0.7, score_thresh=0.0, min_size=1e-3):
        super().__init__()
        self.anchor_generator = AnchorGenerator() if anchor_generator is None else anchor_generator
        if head is None:
            raise TypeError("head: expected an RPNHead (e.g. RPNHead(256, 3)), got None")
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.proposal_matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.fg_bg_sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self._pre_nms_top_n = _top_n(pre_nms_top_n, {"training": 2000, "testing": 1000}, "pre_nms_top_n")
        self._post_nms_top_n = _top_n(post_nms_top_n, {"training": 2000, "testing": 1000}, "post_nms_top_n")
        self.nms_thresh = number(nms_thresh, "nms_thresh", 0.0, 1.0)
        self.score_thresh = number(score_thresh, "score_thresh")
        self.min_size = number(min_size, "min_size", low=0.0)

    def pre_nms_top_n(self) -> int:
        return self._pre_nms_top_n["training" if self.training else "testing"]

    def post_nms_top_n(self) -> int:
        return self._post_nms_top_n["training" if self.training else "testing"]

    # ---- the forward pass ----------------------------------------------------------------------
    def forward(self, features, image_sizes, padded_size, targets=None, rng=None):
        """Proposals for a batch, and the RPN losses in training.

        features: list of ``(N, C, H_l, W_l)`` Tensors, one per level (finest first);
        image_sizes: N pairs ``(h, w)``, each image's resized size before padding (proposals are clipped to it);
        padded_size: ``(H, W)`` of the padded batch (anchor strides are ``H // H_l``, ``W // W_l``);
        targets: in training, N dicts with ``"boxes"``: ``(M_i, 4)`` float32 x1y1x2y2 (M_i may be 0);
        rng: the sampler's ``np.random.Generator`` (default ``minirc.random.generator()``).
        Returns ``(proposals, losses)``: N float32 arrays ``(P_i, 4)`` (best first, no gradient) and
        ``{"loss_objectness", "loss_rpn_box_reg"}`` scalar Tensors in training, ``{}`` in eval mode.
        """
        image_sizes = self._check_inputs(features, image_sizes)
        if self.training:
            if targets is None:
                raise ValueError("targets: expected a list of dicts with 'boxes' in training mode, got None")
            targets = self._check_targets(targets, len(image_sizes))
        logits, deltas = self.head(features)
        levels = self.anchor_generator(padded_size, [tuple(f.shape[-2:]) for f in features])
        self._check_anchor_counts(logits, levels)
        anchors = np.concatenate(levels)  # (S, 4): the same anchors for every image of the batch
        num_anchors_per_level = [len(a) for a in levels]
        objectness, pred_bbox_deltas = concat_box_prediction_layers(logits, deltas)  # (N*S, 1), (N*S, 4)

        n = len(image_sizes)
        codes = to_host(pred_bbox_deltas.data)  # detached: proposals are constants
        proposals = self.box_coder.decode(codes, np.tile(anchors, (n, 1))).reshape(n, -1, 4)
        scores = to_host(objectness.data).reshape(n, -1)
        boxes, _ = self.filter_proposals(proposals, scores, image_sizes, num_anchors_per_level)

        losses = {}
        if self.training:
            labels, matched_gt_boxes = self.assign_targets_to_anchors([anchors] * n, targets)
            with np.errstate(divide="ignore"):  # zero gt boxes (images without objects) encode to -inf, unused
                regression_targets = self.box_coder.encode(matched_gt_boxes, [anchors] * n)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(
                objectness, pred_bbox_deltas, labels, regression_targets, rng=rng)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses

    # ---- proposals -----------------------------------------------------------------------------
    def _top_n_idx(self, objectness: np.ndarray, num_anchors_per_level) -> np.ndarray:
        """(N, S) logits -> (N, sum_l min(k, S_l)) indices: the k best of each level, best first."""
        picks, offset = [], 0
        for count in num_anchors_per_level:
            level = objectness[:, offset:offset + count]
            k = min(self.pre_nms_top_n(), count)
            # stable sort of -logit: descending, and a tie goes to the lower anchor index
            # (torch.topk leaves ties implementation-defined)
            picks.append(np.argsort(-level, axis=1, kind="stable")[:, :k] + offset)
            offset += count
        return np.concatenate(picks, axis=1)

    def filter_proposals(self, proposals, objectness, image_sizes, num_anchors_per_level):
        """Per-level top-k, sigmoid, clip, remove small, score threshold, per-level NMS, per-image top-k.

        proposals: ``(N, S, 4)`` decoded boxes; objectness: ``(N, S)`` logits; image_sizes: N ``(h, w)``.
        Returns ``(boxes, scores)``: lists of N arrays ``(P_i, 4)`` and ``(P_i,)`` (sigmoid), best first.
        """
        n = proposals.shape[0]
        level_of_anchor = np.repeat(np.arange(len(num_anchors_per_level)), num_anchors_per_level)  # (S,)
        top = self._top_n_idx(objectness, num_anchors_per_level)  # (N, K)
        rows = np.arange(n)[:, None]
        probs = expit(objectness[rows, top])  # numerically stable sigmoid, keeps float32
        candidates, levels = proposals[rows, top], level_of_anchor[top]
        final_boxes, final_scores = [], []
        for boxes, scores, lvl, size in zip(candidates, probs, levels, image_sizes):
            boxes = clip_boxes_to_image(boxes, size)  # the resized image, not the padded batch
            keep = remove_small_boxes(boxes, self.min_size)
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = np.flatnonzero(scores >= self.score_thresh)  # ">=": torchvision keeps this for compatibility
            boxes, scores, lvl = boxes[keep], scores[keep], lvl[keep]
            keep = batched_nms(boxes, scores, lvl, self.nms_thresh)[:self.post_nms_top_n()]  # NMS per level
            final_boxes.append(boxes[keep])
            final_scores.append(scores[keep])
        return final_boxes, final_scores

    # ---- training targets and losses -----------------------------------------------------------
    def assign_targets_to_anchors(self, anchors, targets):
        """Per image: labels ``(S,)`` float32 (1 positive, 0 negative, -1 ignored) and matched gt boxes ``(S, 4)``."""
        labels, matched_gt_boxes = [], []
        for anchors_per_image, target in zip(anchors, targets):
            gt = target["boxes"]
            if gt.shape[0] == 0:  # no objects: every anchor is background
                labels.append(np.zeros(len(anchors_per_image), np.float32))
                matched_gt_boxes.append(np.zeros(anchors_per_image.shape, np.float32))
                continue
            matched_idxs = self.proposal_matcher(box_iou(gt, anchors_per_image))  # (M, S) -> (S,)
            matched_gt_boxes.append(gt[np.maximum(matched_idxs, 0)])
            label = (matched_idxs >= 0).astype(np.float32)
            label[matched_idxs == Matcher.BELOW_LOW_THRESHOLD] = 0.0
            label[matched_idxs == Matcher.BETWEEN_THRESHOLDS] = -1.0
            labels.append(label)
        return labels, matched_gt_boxes

    def compute_loss(self, objectness, pred_bbox_deltas, labels, regression_targets, rng=None):
        """(loss_objectness, loss_rpn_box_reg) as scalar Tensors.

        objectness: ``(N*S, 1)`` Tensor of logits; pred_bbox_deltas: ``(N*S, 4)`` Tensor;
        labels / regression_targets: N arrays ``(S,)`` / ``(S, 4)``. One sample of 256 anchors per image;
        both losses are over the samples of all images together.
        """
        pos_masks, neg_masks = self.fg_bg_sampler(labels, rng=rng)
        pos = np.flatnonzero(np.concatenate(pos_masks))
        sampled = np.concatenate([pos, np.flatnonzero(np.concatenate(neg_masks))])
        dtype = objectness.dtype
        labels = np.concatenate(labels).astype(dtype)
        targets = np.concatenate(regression_targets)[pos].astype(dtype)
        logits = objectness.reshape(-1)  # (N*S, 1) -> (N*S,)
        # sum over positives / all sampled: positives weigh by how rare they are in the batch
        box_loss = F.smooth_l1_loss(pred_bbox_deltas[pos], Tensor(targets), beta=RPN_BOX_LOSS_BETA,
                                    reduction="sum") / max(sampled.size, 1)
        # mean over the sampled anchors; with none sampled torchvision's mean would be NaN, minirc gives 0
        reduction = "mean" if sampled.size else "sum"
        objectness_loss = F.binary_cross_entropy_with_logits(logits[sampled], Tensor(labels[sampled]),
                                                             reduction=reduction)
        return objectness_loss, box_loss

    # ---- argument checks -----------------------------------------------------------------------
    def _check_inputs(self, features, image_sizes):
        if not isinstance(features, (list, tuple)) or len(features) == 0:
            raise TypeError("features: expected a non-empty list of (N, C, H, W) Tensors, "
                            f"got {type(features).__name__}")
        if any(len(f.shape) != 4 or f.shape[0] != features[0].shape[0] for f in features):
            raise ValueError(f"features: expected (N, C, H, W) Tensors with the same N, got shapes "
                             f"{[tuple(f.shape) for f in features]}")
        if not isinstance(image_sizes, (list, tuple)) or len(image_sizes) != features[0].shape[0]:
            raise ValueError(f"image_sizes: expected {features[0].shape[0]} (h, w) pairs, one per image, "
                             f"got {image_sizes!r:.80}")
        return [pair(tuple(s) if isinstance(s, (list, tuple)) else s, "image_sizes", minimum=1)
                for s in image_sizes]

    def _check_anchor_counts(self, logits, levels):
        got = [int(np.prod(lg.shape[1:])) for lg in logits]
        want = [len(a) for a in levels]
        if got != want:
            raise ValueError(f"head: predicts {got} anchors per level but anchor_generator makes {want}; "
                             f"RPNHead(num_anchors) must equal {self.anchor_generator.num_anchors_per_location()}")

    @staticmethod
    def _check_targets(targets, n):
        if not isinstance(targets, (list, tuple)) or len(targets) != n:
            raise ValueError(f"targets: expected {n} dicts, one per image, got {targets!r:.80}")
        checked = []
        for i, t in enumerate(targets):
            if not isinstance(t, dict) or "boxes" not in t:
                raise TypeError(f"targets[{i}]: expected a dict with key 'boxes', got {t!r:.80}")
            boxes = as_array(t["boxes"], f"targets[{i}]['boxes']", ndim=2, last_dim=4, dtype=np.float32,
                             allow_device=False)
            bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if bad.any():  # torchvision's GeneralizedRCNN rejects these too
                raise ValueError(f"targets[{i}]['boxes']: expected positive width and height, row "
                                 f"{int(np.argmax(bad))} is {boxes[int(np.argmax(bad))].tolist()}")
            checked.append({**t, "boxes": boxes})
        return checked
