# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 09 · Inside a trained Mask R-CNN, one image, stage by stage
#
# `model([image])` hides a long chain of steps. Here we take one held-out image and call the
# model's own submodules in the order `MaskRCNN.forward` calls them,
#
# ```
# transform -> backbone (ResNet + FPN) -> rpn -> roi_heads -> transform.postprocess
# ```
#
# and stop at every intermediate worth looking at: the anchors and their training labels, the
# objectness maps, the proposals before and after NMS, the FPN level each RoI is pooled from, the
# box refinement, the per-class NMS of the detections, the `S x S` mask logits and the masks pasted
# into the image. Where a stage does not return its intermediate (the RPN's candidates before NMS,
# its training labels), we call the library's own functions on the arrays we caught; nothing of the
# model is re-implemented here. At the end we check that the stage-by-stage result is exactly
# `model([image])`.
#
# The model is the demo's (`python -m minirc demo --out runs/demo`) when `runs/demo/checkpoint.npz`
# exists. Otherwise the notebook trains one right here, which takes a few minutes
# (`MINIRC_FAST=1`: about 20 iterations of the `tiny` network, a few seconds).

# %%
# %matplotlib inline
import dataclasses
import inspect
import os
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.lines import Line2D
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle

import minirc
from minirc.data import ShapesDataset
from minirc.detection import RegionProposalNetwork, concat_box_prediction_layers
from minirc.model import MaskRCNN, postprocess_detections
from minirc.model.mask_head import mask_probabilities
from minirc.model.roi_heads import softmax
from minirc.model.transform import interpolate_bilinear
from minirc.ops import box_iou, clip_boxes_to_image
from minirc.visualize import draw_instances, label_pixel_axes, to_hwc

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 80

# %% [markdown]
# ## The model
#
# With the demo's checkpoint, `load_model` rebuilds the network from the config stored in the file
# and the held-out images from the data settings the demo saved next to it (a different seed from
# the training images). Without it, the cell below trains a model from random weights with the
# demo's own `build` and `Trainer`; **that model is barely trained** (seconds to minutes instead of
# the demo's 8 minutes), so expect low scores, loose boxes and blobby masks. The mechanics shown
# are the same.

# %%
CHECKPOINT = pathlib.Path("..") / "runs" / "demo" / "checkpoint.npz"
if CHECKPOINT.exists():
    from minirc.train.checkpoint import load_model
    from minirc.train.demo import TEST_SEED_OFFSET

    model, ckpt = load_model(CHECKPOINT)
    d = ckpt["extra"]["demo"]
    test_ds = ShapesDataset(d["test_images"], image_size=d["image_size"], classes=tuple(d["classes"]),
                            max_objects=d["max_objects"], seed=d["train"]["seed"] + TEST_SEED_OFFSET)
    source = f"the demo's checkpoint {CHECKPOINT} ({ckpt['extra'].get('iteration', '?')} iterations)"
    trained_here = False
else:
    from minirc.train import Trainer
    from minirc.train.demo import build, demo_config

    cfg = demo_config("tiny" if FAST else "shapes_demo")
    cfg.train.iters, cfg.train.budget_seconds = (20, None) if FAST else (None, 150.0)
    model, train_ds, test_ds = build(cfg, seed=0)
    started = time.perf_counter()
    trainer = Trainer(model, train_ds, cfg.train, progress=False)
    trainer.train()
    model.eval()
    source = (f"a '{cfg.model}' network trained here for {trainer.iteration} iterations "
              f"({time.perf_counter() - started:.0f} s): barely trained")
    trained_here = True
class_names = test_ds.class_names
config = model.config
print("model:", source)
print("held-out images:", test_ds)

# %% [markdown]
# We pick the first held-out image with at least three objects (or the busiest of the first 20).
# A barely trained model may score every class below the usual 0.05 cut; then we lower the cut to
# 0 so that the later stages have detections to show.

# %%
candidates = [(i, *test_ds[i]) for i in range(min(20, len(test_ds)))]
index, image, target = next((c for c in candidates if len(c[2]["labels"]) >= 3),
                            max(candidates, key=lambda c: len(c[2]["labels"])))
with minirc.no_grad():
    n_det = len(model([image])[0]["scores"])
if n_det < 2:
    model.roi_heads.cfg = dataclasses.replace(model.roi_heads.cfg, score_thresh=0.0)
    print(f"only {n_det} detection(s) above the score cut: lowered roi_heads.score_thresh to 0")
print(f"image {index}: {image.shape}, objects: {[class_names[k] for k in target['labels']]}")

# %% [markdown]
# ## 1. Transform and backbone
#
# `model.transform` normalises the image, resizes it so that its shorter side is
# `min_size` (capped by `max_size`), and pads the batch to a multiple of 32. Given the targets it
# resizes them too: we need the ground truth in the same pixels to label the anchors.
# The backbone returns the FPN levels P2..P5 and the extra 'pool' level P6.

# %%
model.eval()
with minirc.no_grad():
    batch, (target_t,) = model.transform([image], [target])
    features = model.backbone(minirc.Tensor(batch.tensors))
image_size, padded = batch.image_sizes[0], batch.padded_size
strides = model.rpn.anchor_generator.strides(padded, [f.shape[-2:] for f in features])
print(f"input {image.shape} -> batch {batch.tensors.shape}, image_sizes {batch.image_sizes}")
for name, f, s in zip(["P2", "P3", "P4", "P5", "P6 (pool)"], features, strides):
    print(f"  {name:9s} {tuple(f.shape)}  stride {s}")
gt_boxes, gt_labels = target_t["boxes"], target_t["labels"]
H, W = image_size  # sections 2-8 draw in these (resized) pixels, where the boxes live
resized_image = image if image.shape[1:] == (H, W) else interpolate_bilinear(image, (H, W))
shown = to_hwc(resized_image)


def show_gray(ax, title=None):
    """The (resized) image in light grey, so coloured boxes stand out; axes in pixels."""
    ax.imshow(0.25 + 0.7 * shown.mean(axis=2), cmap="gray", vmin=0, vmax=1, extent=(0, W, H, 0))
    label_pixel_axes(ax, W, H, title)

# %% [markdown]
# ## 2. RPN: anchors and their training labels
#
# The anchor generator puts `A` boxes (one size per level, three aspect ratios) at every cell of
# every level. In training, `assign_targets_to_anchors` labels each anchor with the `Matcher`: IoU
# with a ground-truth box `>= 0.7` positive, `< 0.3` negative, in between ignored, plus every gt
# box's best anchors (the low-quality matches), so that small objects get positives too.
# These are the RPN's own methods, called on the arrays of this image.

# %%
levels = model.rpn.anchor_generator(padded, [f.shape[-2:] for f in features])
anchors = np.concatenate(levels)
(labels,), (matched,) = model.rpn.assign_targets_to_anchors([anchors], [target_t])
(regression_targets,) = model.rpn.box_coder.encode([matched], [anchors])  # one array per image
level_of_anchor = np.repeat(np.arange(len(levels)), [len(a) for a in levels])
counts = np.array([[np.sum((level_of_anchor == lv) & (labels == v)) for v in (1, -1, 0)]
                   for lv in range(len(levels))])
print(f"{len(anchors)} anchors; positive / ignored / negative per level:\n{counts}")
pos = np.flatnonzero(labels == 1)
print("regression targets (dx, dy, dw, dh) of the first positives:\n", np.round(regression_targets[pos[:3]], 3))

# %%
LEVEL_NAMES = ["P2", "P3", "P4", "P5", "P6"]
lv = int(np.argmax(counts[:, 0]))  # the level with the most positives
sel = level_of_anchor == lv
a_lv, lab_lv = anchors[sel], labels[sel]
size = config.anchors.sizes[lv][0]
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 6.2), gridspec_kw={"width_ratios": [1.2, 1]})
show_gray(ax)
centres = (a_lv[:, :2] + a_lv[:, 2:]) / 2
all_neg = np.all(lab_lv.reshape(-1, len(config.anchors.aspect_ratios[lv])) == 0, axis=1)
loc = centres[::len(config.anchors.aspect_ratios[lv])]
ax.plot(loc[all_neg, 0], loc[all_neg, 1], ".", color="tab:blue", ms=4)
for box, lab in zip(a_lv, lab_lv):
    if lab != 0:
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=1.2,
                               ls="-" if lab == 1 else "--", ec="green" if lab == 1 else "darkorange",
                               zorder=3 if lab == 1 else 2))
for box in gt_boxes:
    ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=2.5, ec="black"))
m = size * 0.75
ax.set_xlim(-m, W + m)
ax.set_ylim(H + m, -m)
ax.set_xlabel("x (pixels)")
ax.set_ylabel("y (pixels)")
ax.set_title(f"{LEVEL_NAMES[lv]} anchors (stride {strides[lv][0]}, size {size} px, 3 ratios): "
             f"{counts[lv, 0]} positive, {counts[lv, 1]} ignored, {counts[lv, 2]} negative", fontsize=9)
ax.legend(handles=[Line2D([], [], color="green", label="positive anchor (IoU >= 0.7 or a gt's best)"),
                   Line2D([], [], color="darkorange", ls="--", label="ignored anchor (0.3 <= IoU < 0.7)"),
                   Line2D([], [], color="tab:blue", marker=".", ls="", label="anchor centre, all A anchors negative"),
                   Line2D([], [], color="black", lw=2.5, label="ground truth")],
          loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, fontsize=8)
x = np.arange(len(levels))
ax2.bar(x - 0.2, counts[:, 0], 0.4, color="green", ec="k", label="positive")
ax2.bar(x + 0.2, counts[:, 1], 0.4, color="darkorange", ec="k", label="ignored")
for i, n in enumerate(counts[:, 2]):
    ax2.annotate(f"{n} neg.", (i, max(counts[i, :2]) + 0.5), ha="center", fontsize=8)
ax2.set_xticks(x, [f"{n}\n(size {s[0]})" for n, s in zip(LEVEL_NAMES, config.anchors.sizes)])
ax2.set_xlabel("pyramid level (anchor size in px)")
ax2.set_ylabel("anchors")
ax2.set_title("RPN labels per level for this image")
ax2.legend()
fig.suptitle("RPN training targets: every anchor labelled by its IoU with the ground truth")
fig.tight_layout()
plt.show()

# %% [markdown]
# What to see: positives sit on the level whose anchor size matches the object's size, centred on
# the objects; an object between two anchor sizes gets its positives from its single best anchor.
# Almost every anchor is negative: the sampler later draws at most half of its
# `batch_size_per_image` anchors from the positives and fills the rest with negatives. Anchors
# reach past the image border; the matcher uses them anyway (torchvision removed the old
# "drop anchors outside the image" rule).
#
# ## 3. RPN: objectness on every level
#
# The RPN head (one 3x3 conv and two 1x1 convs, the same weights on every level) predicts a logit
# per anchor. We call `model.rpn.head` on the features and show, per cell, the highest
# `sigmoid(logit)` of its `A` anchors, drawn as a square centred on the cell's anchor centre.
# Torchvision puts the anchors of cell `(j, i)` of a level with stride `s` at `(i s, j s)`, the
# cell's top-left corner, not its middle: so the squares overhang the image's top and left edges
# by half a stride and leave a strip of half a stride uncovered at the right and bottom (grey),
# which is wide on the coarse levels.

# %%
with minirc.no_grad():
    logits, deltas = model.rpn.head(features)
fig, axes = plt.subplots(2, 3, figsize=(13, 8.4))
draw_instances(axes[0, 0], resized_image, gt_boxes, gt_labels, None, None, class_names,
               title="the image and its ground truth")
for ax, lg, s, name in zip(axes.flat[1:], logits, strides, LEVEL_NAMES):
    prob = 1 / (1 + np.exp(-lg.numpy()[0].max(axis=0)))  # (H_l, W_l): best anchor per cell
    gh, gw = prob.shape
    ax.imshow(shown.mean(axis=2), cmap="gray", extent=(0, W, H, 0), vmin=0, vmax=1)
    im = ax.imshow(prob, cmap="magma", vmin=0, vmax=1, alpha=0.75, interpolation="nearest",
                   extent=(-s[1] / 2, gw * s[1] - s[1] / 2, gh * s[0] - s[0] / 2, -s[0] / 2))
    for box in gt_boxes:
        ax.add_patch(Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, lw=1, ec="cyan"))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    ax.set_title(f"{name}: {gh}x{gw} cells, stride {s[0]}, max {prob.max():.2f}", fontsize=9)
fig.colorbar(im, ax=axes, fraction=0.02, label="objectness = sigmoid(logit), best of the cell's anchors")
fig.suptitle("RPN objectness per pyramid level (gt boxes in cyan)")
plt.show()

# %% [markdown]
# What to see: each level lights up on the objects whose size matches its anchors (small shapes on
# the fine levels, large ones on the coarse levels), and the background stays dark. A barely
# trained RPN is blurrier and less selective, but already prefers the objects.
#
# ## 4. RPN: proposals before and after NMS
#
# The head's outputs are flattened into anchor order with `concat_box_prediction_layers` and the
# deltas decoded onto the anchors with the RPN's `BoxCoder`. `filter_proposals` then keeps the
# `pre_nms_top_n` best logits per level, clips, drops tiny boxes, runs NMS (IoU 0.7) **per level**
# and keeps the `post_nms_top_n` best of the image. To see the candidates that enter NMS, we run the
# same `filter_proposals` of an RPN that shares the model's anchors and head but has
# `nms_thresh=1.0` (no IoU exceeds 1) and no final cap.

# %%
objectness, pred_deltas = concat_box_prediction_layers(logits, deltas)
decoded = model.rpn.box_coder.decode(pred_deltas.numpy(), anchors).reshape(1, -1, 4)
scores_all = objectness.numpy().reshape(1, -1)
per_level = [len(a) for a in levels]
no_nms = RegionProposalNetwork(model.rpn.anchor_generator, model.rpn.head, pre_nms_top_n=model.rpn.pre_nms_top_n(),
                               post_nms_top_n=10**6, nms_thresh=1.0, score_thresh=model.rpn.score_thresh,
                               min_size=model.rpn.min_size).eval()
(before,), (before_scores,) = no_nms.filter_proposals(decoded, scores_all, batch.image_sizes, per_level)
(proposals,), (proposal_scores,) = model.rpn.filter_proposals(decoded, scores_all, batch.image_sizes, per_level)
with minirc.no_grad():
    (rpn_out,), _ = model.rpn(features, batch.image_sizes, padded)
assert np.array_equal(proposals, rpn_out), "the step-by-step proposals must be the RPN's own"
print(f"{len(anchors)} anchors -> {len(before)} candidates (top {model.rpn.pre_nms_top_n()} per level, "
      f"clipped, small removed) -> {len(proposals)} proposals after per-level NMS "
      f"{model.rpn.nms_thresh} and the top {model.rpn.post_nms_top_n()}")


# %%
def draw_scored_boxes(ax, boxes, scores, title, cmap="viridis"):
    """Boxes coloured by score, the best drawn last (on top)."""
    show_gray(ax, title)
    colours = plt.get_cmap(cmap)(scores)
    for k in np.argsort(scores):
        b = boxes[k]
        ax.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, lw=0.8, ec=colours[k], alpha=0.8))


fig, axes = plt.subplots(1, 2, figsize=(12, 5.8))
draw_scored_boxes(axes[0], before, before_scores, f"before NMS: {len(before)} candidates")
draw_scored_boxes(axes[1], proposals, proposal_scores,
                  f"after per-level NMS {model.rpn.nms_thresh} and top {model.rpn.post_nms_top_n()}: "
                  f"{len(proposals)} proposals")
fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1)), ax=axes, fraction=0.03,
             label="objectness score")
fig.suptitle("RPN proposals of one image, coloured by objectness")
plt.show()

# %% [markdown]
# What to see: before NMS, dozens of nearly identical boxes pile up on every object (neighbouring
# anchors regress to the same place). NMS keeps the best of each pile per level, so a few boxes per
# object and level survive; the final cap keeps the best-scoring ones overall, and the weak
# background boxes fill whatever room is left. These proposals are constants: no gradient flows
# back through them.
#
# ## 5. RoI heads: which FPN level each RoI is pooled from
#
# The box head pools a 7x7 grid of features for every proposal with `MultiScaleRoIAlign`, each
# from one level (FPN paper, Eqn. 1, torchvision's float32 rule):
#
# $$k = \left\lfloor 4 + \log_2\!\left(\frac{\sqrt{wh}}{s_0}\right) + 10^{-6} \right\rfloor, \quad \text{clamped to } [2, 5]$$
#
# with the canonical scale $s_0$: 224 px in torchvision (ImageNet's crop size, for 800-pixel COCO
# images), 56 px in the `shapes_demo` preset (`roi_heads.canonical_scale`, printed below), so that
# its 20-56 px objects spread over P2-P4 instead of all landing on P2. We call the model's pooler
# and box head on the proposals, then ask the pooler's own `LevelMapper` (built on the first call
# from the feature sizes) for the level of every RoI.

# %%
feats4 = features[:4]  # P2..P5: RoIHeads never pools P6
with minirc.no_grad():
    box_features = model.roi_heads.box_head(model.roi_heads.box_roi_pool(feats4, [proposals], batch.image_sizes))
    class_logits, box_regression = model.roi_heads.box_predictor(box_features)
pooler = model.roi_heads.box_roi_pool
roi_level = pooler.map_levels([proposals])  # 0 = P2, ..., 3 = P5
side = np.sqrt((proposals[:, 2] - proposals[:, 0]) * (proposals[:, 3] - proposals[:, 1]))
s0, lvl0 = pooler.map_levels.s0, pooler.map_levels.lvl0  # the model's canonical scale and level
print(f"canonical scale {s0:g} px -> P{lvl0}; pooler scales:", pooler.scales,
      " RoIs per level P2..P5:", np.bincount(roi_level, minlength=4))
print("box head input", (len(proposals), *box_features.shape[1:]), "-> class logits", class_logits.shape,
      "and box deltas", box_regression.shape)

# %%
LEVEL_COLOURS = ["tab:red", "tab:green", "tab:blue", "tab:purple"]
fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.4))
show_gray(ax, f"the {len(proposals)} RoIs coloured by the level they are pooled from")
for b, lvl in zip(proposals, roi_level):
    ax.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, lw=1, ec=LEVEL_COLOURS[lvl]))
ax.legend(handles=[Patch(fc="none", ec=c, label=f"P{k + 2}: {np.sum(roi_level == k)} RoIs")
                   for k, c in enumerate(LEVEL_COLOURS)], loc="lower left", fontsize=8, facecolor="0.85")
s = np.geomspace(4, 1024, 400)
k_cont = lvl0 + np.log2(s / s0)
ax2.plot(s, k_cont, color="0.6", ls=":", label=rf"${lvl0} + \log_2(\sqrt{{wh}}/{s0:g})$")
ax2.plot(s, np.clip(np.floor(k_cont + 1e-6), 2, 5), color="k", label="level k (floor, clamped to 2..5)")
jitter = np.random.default_rng(0).uniform(-0.25, 0.25, len(side))  # spread the dots to see how many
ax2.scatter(side, roi_level + 2 + jitter, c=[LEVEL_COLOURS[v] for v in roi_level], s=12, alpha=0.7, zorder=3,
            label="this image's RoIs (jittered vertically)")
ax2.axvspan(s[0], np.sqrt(W * H), color="gold", alpha=0.2, label="box sides possible in this image")
ax2.set_xscale("log", base=2)
ax2.set_ylim(0.5, 6)
ax2.set_xlabel(r"RoI side $\sqrt{wh}$ (pixels, log scale)")
ax2.set_ylabel("FPN level k")
ax2.set_title(rf"$k = \lfloor {lvl0} + \log_2(\sqrt{{wh}}/{s0:g}) \rfloor$: {s0:g} px reads P{lvl0}", fontsize=9)
ax2.legend(fontsize=8, loc="upper left")
fig.suptitle("RoI assignment to FPN levels")
fig.tight_layout()
plt.show()
per_level = np.bincount(roi_level, minlength=4)
busiest = int(np.argmax(per_level))
display(Markdown(
    f"What to see: with the canonical scale {s0:g} px a box needs a side of {s0 / 2 ** (lvl0 - 2):g} px to leave P2 "
    f"and {s0 / 2 ** (lvl0 - 3):g} px to reach P4. Of this image's {len(proposals)} RoIs, "
    + ", ".join(f"{n} ({n / len(proposals):.0%}) are pooled from P{k + 2}" for k, n in enumerate(per_level))
    + f"; P{busiest + 2} pools the most. torchvision's 224 would have sent every RoI under 112 px to P2."))

# %% [markdown]
# ## 6. RoI heads: box refinement
#
# For every RoI the predictor gives `K` class logits and `K` sets of deltas, one box per class.
# The RoI heads' `BoxCoder` (weights 10, 10, 5, 5) decodes them onto the proposals. Below, the
# best-scoring RoIs with the box of their top class: the arrow goes from the proposal to its
# refined box.

# %%
num_classes = class_logits.shape[1]
refined = model.roi_heads.box_coder.decode(box_regression.numpy(), [proposals]).reshape(len(proposals), num_classes, 4)
refined = clip_boxes_to_image(refined.reshape(-1, 4), image_size).reshape(refined.shape)
probs = softmax(class_logits.numpy(), axis=1)  # (R, K), column 0 = background
best_class = 1 + np.argmax(probs[:, 1:], axis=1)
best_score = probs[np.arange(len(proposals)), best_class]
best_box = refined[np.arange(len(proposals)), best_class]
iou_before = box_iou(proposals, gt_boxes).max(axis=1) if len(gt_boxes) else np.zeros(len(proposals))
iou_after = box_iou(best_box, gt_boxes).max(axis=1) if len(gt_boxes) else np.zeros(len(proposals))

fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1.2, 1]})
top = np.argsort(-best_score)[:8]
show_gray(ax, f"the {len(top)} best RoIs: proposal (dashed) -> box of its top class (solid)")
for r in top:
    colour = plt.get_cmap("tab10")(best_class[r] % 10)
    p, q = proposals[r], best_box[r]
    ax.add_patch(Rectangle(p[:2], p[2] - p[0], p[3] - p[1], fill=False, lw=1, ls="--", ec=colour))
    ax.add_patch(Rectangle(q[:2], q[2] - q[0], q[3] - q[1], fill=False, lw=2, ec=colour))
    for corner in ([0, 1], [2, 3]):  # both corners move: position and size are refined
        ax.add_patch(FancyArrowPatch(tuple(p[corner]), tuple(q[corner]), arrowstyle="->", mutation_scale=9,
                                     color=colour, lw=1))
ax2.scatter(iou_before, iou_after, c=best_score, cmap="viridis", vmin=0, vmax=1, s=18)
ax2.plot([0, 1], [0, 1], color="0.5", ls="--", label="unchanged")
ax2.set_xlim(0, 1)
ax2.set_ylim(0, 1)
ax2.set_aspect("equal")
ax2.set_xlabel("IoU of the proposal with its best gt box")
ax2.set_ylabel("IoU of the refined box with its best gt box")
ax2.set_title(f"all {len(proposals)} RoIs (colour: top-class score): {np.mean(iou_after > iou_before):.0%} "
              f"improved, mean IoU {iou_before.mean():.2f} -> {iou_after.mean():.2f}", fontsize=9)
ax2.legend(loc="lower right")
fig.colorbar(plt.cm.ScalarMappable(cmap="viridis", norm=plt.Normalize(0, 1)), ax=ax2, fraction=0.046,
             label="top-class score")
fig.suptitle("Box refinement: the second stage moves and resizes every proposal")
fig.tight_layout()
plt.show()

# %% [markdown]
# What to see: in the scatter, points above the diagonal are RoIs whose box got closer to an
# object. A trained model (the demo's) pulls the proposals' corners onto the shapes' edges, and its
# confident RoIs (bright) end near IoU 1; a barely trained head moves them only a little, so its
# points hug the diagonal. RoIs on the background have no object to move to and are left to the
# classifier to reject.
#
# ## 7. RoI heads: per-class NMS of the detections
#
# `postprocess_detections` turns every (RoI, class >= 1) pair into a candidate: the class's refined
# box, clipped, kept if its softmax score is above `score_thresh` and its sides are at least
# 0.01 px. Then NMS at IoU 0.5 runs **per class** and the best `detections_per_img` remain. Called
# once with `nms_thresh=1.0` (no suppression, no cap), it shows what enters NMS.

# %%
rh = model.roi_heads.cfg
pp_args = (class_logits.numpy(), box_regression.numpy(), [proposals], batch.image_sizes, model.roi_heads.box_coder)
(pre_boxes,), (pre_scores,), (pre_labels,) = postprocess_detections(*pp_args, rh.score_thresh, 1.0, 10**6)
(det_boxes,), (det_scores,), (det_labels,) = postprocess_detections(*pp_args, rh.score_thresh, rh.nms_thresh,
                                                                    rh.detections_per_img)
with minirc.no_grad():
    (heads_out,), _ = model.roi_heads(features, [proposals], batch.image_sizes)
assert np.array_equal(det_boxes, heads_out["boxes"]) and np.array_equal(det_labels, heads_out["labels"])
print(f"{len(proposals)} RoIs x {num_classes - 1} classes -> {len(pre_boxes)} candidates above score "
      f"{rh.score_thresh} -> {len(det_boxes)} detections after per-class NMS {rh.nms_thresh}")
for k in range(1, num_classes):
    print(f"  {class_names[k]:9s} {np.sum(pre_labels == k):4d} -> {np.sum(det_labels == k):3d}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 5.8))
for ax, (boxes, scores, labs), title in zip(
        axes, [(pre_boxes, pre_scores, pre_labels), (det_boxes, det_scores, det_labels)],
        [f"before NMS: {len(pre_boxes)} candidates", f"after per-class NMS {rh.nms_thresh}: {len(det_boxes)}"]):
    show_gray(ax, title)
    for k in np.argsort(scores):
        b = boxes[k]
        ax.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec=plt.get_cmap("tab10")(labs[k] % 10),
                               lw=0.6 + 2 * scores[k], alpha=0.25 + 0.75 * float(scores[k])))
axes[1].legend(handles=[Line2D([], [], color=plt.get_cmap("tab10")(k % 10), label=class_names[k])
                        for k in range(1, num_classes)], loc="lower left", fontsize=8, facecolor="0.85")
fig.suptitle("Detections before and after per-class NMS (colour: class; thickness and opacity: score)")
plt.show()

# %% [markdown]
# What to see: before NMS every object is covered by a stack of boxes, several per class (the
# refined boxes of neighbouring RoIs land on the same object). NMS keeps the best box of each stack
# *per class*: a circle box never suppresses a square box, so an uncertain object can keep one
# detection for each class it might be, each with its own score; COCO's AP counts them separately.
#
# ## 8. The mask head's `S x S` logits
#
# The mask branch runs on the final detections, not on the proposals: the model's `mask_roi_pool`
# pools a 14x14 grid per box, `mask_head` (four 3x3 convs) and `mask_predictor` (a 2x transposed
# conv and a 1x1 conv) make `K` logit maps of `2 x 14 = 28` (a smaller preset: 14) cells, and each
# detection keeps the channel of its **predicted** class (`mask_probabilities`).

# %%
with minirc.no_grad():
    mask_logits = model.roi_heads.mask_predictor(model.roi_heads.mask_head(
        model.roi_heads.mask_roi_pool(feats4, [det_boxes], batch.image_sizes))).numpy()
mask_probs = mask_probabilities(mask_logits, det_labels, model.roi_heads.mask_loss_type)
assert np.allclose(mask_probs, heads_out["masks"], atol=1e-6)
S = mask_logits.shape[-1]
print(f"mask logits {mask_logits.shape} (detections, classes, S, S) -> probabilities of the predicted "
      f"class {mask_probs.shape} ({model.roi_heads.mask_loss_type})")

# %%
n_show = min(4, len(det_boxes))
if n_show == 0:
    print("no detection to show")
else:
    fig, axes = plt.subplots(3, n_show, figsize=(3.4 * n_show, 10), squeeze=False)
    for j in range(n_show):
        b, lab = det_boxes[j], int(det_labels[j])
        ax = axes[0, j]
        ax.imshow(shown, extent=(0, W, H, 0))
        ax.add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, lw=1.5, ec="yellow"))
        pad = 0.15 * max(b[2] - b[0], b[3] - b[1])
        ax.set_xlim(b[0] - pad, b[2] + pad)
        ax.set_ylim(b[3] + pad, b[1] - pad)
        ax.set_xlabel("x (pixels)")
        ax.set_ylabel("y (pixels)")
        ax.set_title(f"#{j}: {class_names[lab]} {det_scores[j]:.2f}", fontsize=9)
        z = mask_logits[j, lab]
        lim = max(float(np.abs(z).max()), 1e-3)
        im = axes[1, j].imshow(z, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[1, j].set_title(f"logits of '{class_names[lab]}' ({S}x{S})", fontsize=9)
        fig.colorbar(im, ax=axes[1, j], fraction=0.046, label="logit")
        im = axes[2, j].imshow(mask_probs[j], cmap="viridis", vmin=0, vmax=1)
        if mask_probs[j].max() > 0.5 > mask_probs[j].min():
            axes[2, j].contour(mask_probs[j], levels=[0.5], colors="white", linewidths=1)
        axes[2, j].set_title("probability, 0.5 contour in white", fontsize=9)
        fig.colorbar(im, ax=axes[2, j], fraction=0.046, label="probability")
        for ax in axes[1:, j]:
            ax.set_xlabel("mask column (box coordinates)")
            ax.set_ylabel("mask row")
    fig.suptitle("The mask head's output for the best detections: the box (top), the predicted class's "
                 "logits (middle), its probabilities (bottom)")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# What to see: the grid covers the detection's box, not the image: row 0 is the box's top edge,
# whatever the box's size. Inside the shape the logits are strongly positive (red), outside
# negative (blue); the 0.5 contour is the shape's outline at the grid's resolution. A barely
# trained head gives a soft blob roughly filling the box.
#
# ## 9. Postprocess: masks pasted into the image
#
# `model.transform.postprocess` maps the boxes back to the original image size and pastes each
# `S x S` map into the image (`paste_masks_in_image`: pad by one zero cell, grow the box to match,
# resize bilinearly to the box's integer size). The result is soft probabilities; a binary mask is
# `mask >= 0.5`. Finally: the stages, run by hand, gave exactly `model([image])`.

# %%
(out,) = model.transform.postprocess([heads_out], batch.image_sizes, [image.shape[1:]])
with minirc.no_grad():
    (direct,) = model([image])
same = all(np.array_equal(out[k], direct[k]) for k in ("boxes", "labels", "scores", "masks"))
print(f"pasted masks {out['masks'].shape}; stage by stage == model([image]): {same}")
assert same

# %%
keep = np.flatnonzero(out["scores"] >= 0.5)
if keep.size == 0:
    keep = np.arange(min(3, len(out["scores"])))
fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
if len(out["scores"]):
    im = axes[0].imshow(out["masks"][0], cmap="viridis", vmin=0, vmax=1, extent=(0, W, H, 0))
    b = out["boxes"][0]
    axes[0].add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, lw=1, ec="white", ls="--"))
    fig.colorbar(im, ax=axes[0], fraction=0.046, label="probability")
    axes[0].set_title(f"detection #0 pasted: soft probabilities ({class_names[out['labels'][0]]})", fontsize=9)
    axes[0].set_xlabel("x (pixels)")
    axes[0].set_ylabel("y (pixels)")
draw_instances(axes[1], image, out["boxes"][keep], out["labels"][keep], out["scores"][keep], out["masks"][keep],
               class_names, score_threshold=0.0,
               title=f"{len(keep)} detections (score >= {out['scores'][keep].min() if len(keep) else 0:.2f}), "
                     "masks thresholded at 0.5")
draw_instances(axes[2], image, target["boxes"], target["labels"], None, target["masks"], class_names,
               title="ground truth")
fig.suptitle("Postprocess: each detection's grid pasted into the image")
fig.tight_layout()
plt.show()

# %% [markdown]
# What to see: the soft map (left) is 0 outside the box and ramps up across the object's edge over
# a few pixels, since one grid cell spans several image pixels. Thresholded at 0.5 (middle), a
# trained model's masks follow the shapes, and like the ground truth (right) they cover only the
# visible part of an occluded shape; a barely trained model's masks are boxy blobs.
#
# ## The whole funnel
#
# How many boxes each stage handled on this image, and the code of the forward pass we just
# stepped through:

# %%
print(f"anchors                 {len(anchors):6d}")
print(f"RPN candidates pre-NMS  {len(before):6d}")
print(f"proposals (RoIs)        {len(proposals):6d}")
print(f"(RoI, class) candidates {len(pre_boxes):6d}")
print(f"detections              {len(det_boxes):6d}")
print(inspect.getsource(MaskRCNN.forward))
