# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 04 · RPN proposals and NMS
#
# The RPN turns ~16,000 scored anchors (for a 256x256 image; 217,413 at 800x1088) into a few hundred
# proposals: keep the best logits of each level, decode, clip to the image, drop tiny boxes, then
# **non-maximum suppression** (NMS) removes near-duplicates. This notebook follows one image through
# `minirc.detection.RegionProposalNetwork.filter_proposals` and takes NMS apart (see `docs/rpn.md`).

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import minirc
from minirc import Tensor
from minirc.data import ShapesDataset
from minirc.detection import (AnchorGenerator, BoxCoder, RegionProposalNetwork, RPNHead,
                              concat_box_prediction_layers)
from minirc.explore import SCORE_ORDERS, draw_nms, interactive, nms_figure
from minirc.nn import Module
from minirc.ops.box_iou import box_iou
from minirc.ops.boxes import clip_boxes_to_image, remove_small_boxes
from minirc.ops.nms import batched_nms, nms, nms_numpy
from minirc.visualize import draw_boxes, to_hwc

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100
_ = minirc.random.manual_seed(0)  # (it returns the generator; `_ =` keeps its repr out of the output)


# %%
dataset = ShapesDataset(num_images=50, image_size=(256, 256), seed=1, empty_fraction=0.0, max_objects=5)
image, target = dataset[5]
gt = target["boxes"]
grids = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]  # FPN levels of a 256x256 batch, strides 4 ... 64
gen = AnchorGenerator()
levels = gen((256, 256), grids)
anchors = np.concatenate(levels)
print(len(gt), "objects,", len(anchors), "anchors")
grids_800 = [(-(-800 // s), -(-1088 // s)) for s in (4, 8, 16, 32, 64)]  # ceil: P6 of 800 px has 13 rows
assert sum(len(a) for a in gen((800, 1088), grids_800)) == 217413  # the count quoted above

# %% [markdown]
# ## An untrained head says nothing
#
# A freshly initialised `RPNHead` (weights from N(0, 0.01), biases 0) outputs logits within a hair of 0,
# so every anchor scores sigmoid(0) = 0.5: its proposals would be arbitrary.

# %%
fresh = RPNHead(8, 3)
features = [Tensor(np.random.default_rng(0).standard_normal((1, 8, h, w)).astype(np.float32)) for h, w in grids]
logits, _ = fresh(features)
scores = 1 / (1 + np.exp(-np.concatenate([lg.numpy().ravel() for lg in logits])))
print(f"untrained objectness: min {scores.min():.5f}, max {scores.max():.5f}")

# %% [markdown]
# Training a backbone and an RPN until their objectness means something takes more than a notebook
# cell. **Here the objectness and deltas are constructed from the ground truth instead**, by a
# stand-in head: its logit for an anchor is `10 * (IoU - 0.5)` plus
# Gaussian noise (IoU with the best object), and its deltas are the anchor's true regression targets plus
# noise (pure noise for anchors far from every object). Everything downstream (flattening, decoding,
# filtering, NMS) is the real `RegionProposalNetwork`.
#
# The stand-in has to emit per-level maps in the head's layout, `(N, A, H, W)` and `(N, 4A, H, W)`: the
# inverse of the anchor-order flattening.


# %%
class GroundTruthHead(Module):
    """Plays a trained RPN head for one image: logits and deltas built from the ground truth."""

    def __init__(self, gt, levels, grids, rng, logit_noise=1.0, delta_noise=0.08):
        super().__init__()
        anchors = np.concatenate(levels)
        iou = box_iou(gt, anchors)                                   # (M, S)
        best, who = iou.max(0), iou.argmax(0)
        logit = 10 * (best - 0.5) + logit_noise * rng.standard_normal(len(anchors))
        deltas = BoxCoder((1, 1, 1, 1)).encode(gt[who], anchors) + delta_noise * rng.standard_normal((len(anchors), 4))
        far = best < 0.3
        deltas[far] = 0.3 * rng.standard_normal((far.sum(), 4))
        self.maps, start = [], 0
        for (h, w), lvl in zip(grids, levels):
            a = len(lvl) // (h * w)
            lg = logit[start:start + len(lvl)].reshape(h, w, a).transpose(2, 0, 1)               # (A, H, W)
            dl = deltas[start:start + len(lvl)].reshape(h, w, a, 4).transpose(2, 3, 0, 1)          # (A, 4, H, W)
            self.maps.append((lg[None].astype(np.float32), dl.reshape(1, 4 * a, h, w).astype(np.float32)))
            start += len(lvl)

    def forward(self, features):
        return [Tensor(lg) for lg, _ in self.maps], [Tensor(dl) for _, dl in self.maps]


rpn = RegionProposalNetwork(gen, GroundTruthHead(gt, levels, grids, np.random.default_rng(0)))
rpn.eval()  # test-time counts: 1000 per level before NMS, 1000 per image after
features = [Tensor(np.zeros((1, 1, h, w), np.float32)) for h, w in grids]  # only the shapes matter here
proposals, _ = rpn(features, [(256, 256)], (256, 256))
print("proposals:", proposals[0].shape)

# %% [markdown]
# ## Objectness per level
#
# The sigmoid of the head's logits, the maximum over the 3 anchors of each location, each cell drawn
# centred on its anchors' centre. Each object lights up the level whose anchor size matches it
# (sizes 32, 64, 128, 256, 512).

# %%
logits, deltas = rpn.head(features)
fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
for lvl, (ax, lg) in enumerate(zip(axes, logits)):
    prob = 1 / (1 + np.exp(-lg.numpy()[0].max(axis=0)))  # (A, H, W) -> (H, W)
    s = 256 // prob.shape[1]  # location (y, x) is centred on its anchors' centre (x s, y s)
    im = ax.imshow(prob, vmin=0, vmax=1, cmap="magma", extent=(-s / 2, 256 - s / 2, 256 - s / 2, -s / 2))
    draw_boxes(ax, gt, "cyan", lw=1)
    ax.set(title=f"level {lvl} (anchor size {gen.sizes[lvl][0]})", xlabel="x (px)", ylabel="y (px)",
           xlim=(-32, 256), ylim=(256, -32))
fig.colorbar(im, ax=axes, shrink=0.8, label="objectness (sigmoid)")
fig.suptitle("Objectness per level (constructed from the ground truth), objects in cyan")
plt.show()

# %% [markdown]
# ## Proposals before and after NMS
#
# `filter_proposals` does: per-level top-k, sigmoid, clip, remove boxes under 1e-3 px, score threshold,
# NMS per level, per-image top-k. Running it with `nms_thresh=1.0` (nothing has IoU > 1) shows the
# candidates NMS receives.

# %%
flat_logits, flat_deltas = concat_box_prediction_layers(logits, deltas)   # anchor order
decoded = rpn.box_coder.decode(flat_deltas.numpy(), anchors)[None]        # (1, S, 4)
objectness = flat_logits.numpy().reshape(1, -1)                           # (1, S)
per_level = [len(a) for a in levels]

before, before_scores = RegionProposalNetwork(gen, rpn.head, nms_thresh=1.0, post_nms_top_n=10**6).eval() \
    .filter_proposals(decoded, objectness, [(256, 256)], per_level)
after, after_scores = rpn.filter_proposals(decoded, objectness, [(256, 256)], per_level)
print(f"candidates after per-level top-{rpn.pre_nms_top_n()}: {len(before[0])}, after NMS 0.7: {len(after[0])}")

fig, axes = plt.subplots(1, 2, figsize=(11, 5.5))
for ax, boxes, scores, name in [(axes[0], before[0], before_scores[0], "before NMS"),
                                (axes[1], after[0], after_scores[0], "after NMS (0.7, per level)")]:
    ax.imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.5)
    top = scores > 0.5
    for b, s in zip(boxes[top], scores[top]):
        draw_boxes(ax, b[None], plt.cm.viridis(s), lw=0.8, alpha=0.8)
    ax.set(xlim=(0, 256), ylim=(256, 0), xlabel="x (px)", ylabel="y (px)",
           title=f"{name}: {len(boxes)} boxes\n({top.sum()} with score > 0.5 drawn, colour = score)")
fig.suptitle("Proposals with score > 0.5 (colour = score, viridis) before and after NMS")
plt.show()


def confident_per_object(boxes, scores):
    """Boxes with score > 0.5 whose best object (IoU >= 0.5) is each gt box."""
    q = box_iou(gt, boxes[scores > 0.5])
    return np.bincount(q.argmax(0)[q.max(0) >= 0.5], minlength=len(gt))


n_before, n_after = confident_per_object(before[0], before_scores[0]), confident_per_object(after[0], after_scores[0])
display(Markdown(
    f"Before NMS each object is buried under {n_before.min()}-{n_before.max()} near-identical confident boxes "
    f"(score > 0.5, IoU >= 0.5 with it: neighbouring anchors regress onto the same object). After NMS "
    f"{n_after.min()}-{n_after.max()} per object remain (a few per object and level), plus "
    f"{(after_scores[0] <= 0.5).sum()} low-scoring background boxes (not drawn) that fill the budget of "
    f"{len(after[0])}."))
#
# ## NMS step by step
#
# Greedy NMS: sort by score; take the best remaining box, keep it, and delete every remaining box whose
# IoU with it is **greater than** the threshold; repeat. Here on a cluster of 8 candidates around one
# object, with the threshold 0.7. This is minirc's NumPy reference:

# %%
print(inspect.getsource(nms_numpy))
obj = gt[0]
cand, cand_scores = before[0], before_scores[0]
near = np.flatnonzero(box_iou(obj[None], cand)[0] > 0.5)
cluster = near[np.argsort(-cand_scores[near], kind="stable")][::12][:8]  # 8 boxes spread over the ranking
cb, cs = cand[cluster], cand_scores[cluster]

remaining, kept, steps = list(np.argsort(-cs, kind="stable")), [], []
while remaining:
    best = int(remaining.pop(0))
    kept.append(best)
    ious = box_iou(cb[best][None], cb[remaining])[0] if remaining else np.zeros(0)
    removed = [int(r) for r, v in zip(remaining, ious) if v > 0.7]
    steps.append((best, removed, {int(r): float(v) for r, v in zip(remaining, ious)}))
    remaining = [r for r in remaining if r not in removed]
print("kept by the loop above:", kept, " minirc.ops.nms:", nms(cb, cs, 0.7).tolist())
assert kept == nms(cb, cs, 0.7).tolist()

fig, axes = plt.subplots(1, len(steps), figsize=(4.2 * len(steps), 4.4), squeeze=False)
for ax, (best, removed, ious) in zip(axes[0], steps):
    ax.imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.35)
    for i, b in enumerate(cb):
        color, lw = ("tab:green", 2.5) if i == best else ("tab:red", 1.5) if i in removed else ("gray", 0.6)
        draw_boxes(ax, b[None], color, lw=lw)
    pad = 15
    ax.set(xlim=(cb[:, 0].min() - pad, cb[:, 2].max() + pad), ylim=(cb[:, 3].max() + pad, cb[:, 1].min() - pad),
           xlabel="x (px)", ylabel="y (px)",
           title=f"keep box {best} (score {cs[best]:.3f})\nremove {removed}")
    ax.text(0.02, 0.02, "\n".join(f"IoU({best},{r}) = {v:.3f}" for r, v in ious.items()), transform=ax.transAxes,
            fontsize=7, va="bottom", bbox=dict(fc="white", alpha=0.7))
fig.suptitle("Greedy NMS at 0.7: green = kept this step, red = suppressed by it, gray = still in play or done")
plt.tight_layout()
plt.show()

# %% [markdown]
# Each step keeps the best remaining box; only boxes overlapping it by more than 0.7 go. Boxes that
# overlap the object well but each other less than 0.7 all survive: NMS removes duplicates, not all
# but one box per object.
#
# ## NMS explorer: threshold and score order
#
# The same 8 boxes, through `minirc.explore.draw_nms`: kept boxes solid, labelled `index: #rank, score`;
# suppressed boxes dashed grey, labelled with the box that suppressed them. Across: the IoU threshold.
# Down: the scores as the stand-in head gave them, and the same score values handed out in reverse
# order (the worst box now ranks first). Greedy NMS depends on both.

# %%
nms_thresholds = (0.3, 0.5, 0.7, 0.9)
fig, axes = plt.subplots(2, 4, figsize=(18, 9.4))
kept_by = {}
for row, order in enumerate(SCORE_ORDERS[:2]):
    for col, t in enumerate(nms_thresholds):
        kept_by[order, t] = draw_nms(axes[row, col], cb, cs, t, order, to_hwc(image))
fig.suptitle("Greedy NMS on the cluster: threshold across, score order down (solid: kept, dashed: suppressed)")
fig.tight_layout(rect=(0, 0, 1, 0.96))
plt.show()
display(Markdown(
    "What to see: a higher threshold keeps more boxes ("
    + ", ".join(f"{len(kept_by['as scored', t])} at {t:g}" for t in nms_thresholds)
    + " with the head's scores), and the order decides *which* survive: with the scores reversed, "
    + ", ".join(f"{len(kept_by['reversed', t])} at {t:g}" for t in nms_thresholds)
    + f" survive, and at 0.7 the kept sets are {kept_by['as scored', 0.7]} against {kept_by['reversed', 0.7]}."))

# %% [markdown]
# With `ipywidgets` installed, the controls below redraw the panel for any threshold and order
# (`largest first` ranks the boxes by area).

# %%
interactive(lambda threshold, order: nms_figure(cb, cs, threshold, order, to_hwc(image)),
            threshold=(0.05, 0.95, 0.05, 0.7), order=list(SCORE_ORDERS))
#
# ## Per-level versus across-level NMS
#
# torchvision runs NMS **per level** (`batched_nms` with the level index as the class): a box from
# level 1 never suppresses a box from level 2, even if they coincide. Across-level NMS would treat all
# candidates together.

# %%
level_of = np.repeat(np.arange(5), per_level)
top = rpn._top_n_idx(objectness, per_level)[0]  # the same candidates as above, now with their level
boxes_c = clip_boxes_to_image(decoded[0][top], (256, 256))
ok = remove_small_boxes(boxes_c, 1e-3)
boxes_c, scores_c, levels_c = boxes_c[ok], 1 / (1 + np.exp(-objectness[0][top][ok])), level_of[top][ok]
keep_per_level = batched_nms(boxes_c, scores_c, levels_c, 0.7)
keep_across = nms(boxes_c, scores_c, 0.7)
print(f"kept per level: {len(keep_per_level)}, across levels: {len(keep_across)}")
only_per_level = np.setdiff1d(keep_per_level, keep_across)
strong = only_per_level[scores_c[only_per_level] > 0.5]
for name, keep in [("per level", keep_per_level), ("across levels", keep_across)]:
    confident = keep[scores_c[keep] > 0.5]
    print(f"{name:13s}: boxes with score > 0.5 on levels 0-4:", np.bincount(levels_c[confident], minlength=5))

fig, ax = plt.subplots(figsize=(5.5, 5.5))
ax.imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.5)
colors = plt.cm.tab10(np.arange(5))
for i in strong:
    draw_boxes(ax, boxes_c[i][None], colors[levels_c[i]], lw=1.2)
for lvl in range(5):
    ax.plot([], [], color=colors[lvl], label=f"level {lvl}")
ax.legend(fontsize=8, loc="lower right")
ax.set(xlim=(0, 256), ylim=(256, 0), xlabel="x (px)", ylabel="y (px)",
       title=f"{len(strong)} confident boxes (score > 0.5) that only per-level NMS keeps")
plt.show()

# %% [markdown]
# The extra survivors of per-level NMS are near-duplicates that come from a *different level* than the
# box that would have suppressed them. They cost proposals but keep each level's best guess alive for
# the RoI heads (which pool from the level that matches each proposal's size).
#
# ## The effect of the 0.7 threshold
#
# A lower threshold suppresses more: fewer, more diverse proposals. A higher one keeps more
# duplicates. Below: how many proposals survive, and how many of the objects are found (a proposal with
# IoU >= 0.7) among the top 5 / 10 / 20 proposals, as the threshold varies.

# %%
thresholds = np.round(np.arange(0.3, 1.0, 0.1 if FAST else 0.05), 2)
counts, found = [], {5: [], 10: [], 20: []}
for t in thresholds:
    kept_boxes, _ = RegionProposalNetwork(gen, rpn.head, nms_thresh=float(t)).eval() \
        .filter_proposals(decoded, objectness, [(256, 256)], per_level)
    counts.append(len(kept_boxes[0]))
    for k in found:
        top_k = kept_boxes[0][:k]
        found[k].append(int((box_iou(gt, top_k).max(axis=1) >= 0.7).sum()) if len(top_k) else 0)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(thresholds, counts, "o-")
axes[0].axvline(0.7, color="gray", lw=0.8)
axes[0].set(title="Proposals kept (post_nms_top_n caps them at 1000)", xlabel="NMS IoU threshold",
            ylabel="proposals")
for k, v in found.items():
    axes[1].plot(thresholds, v, "o-", label=f"top {k}")
axes[1].axvline(0.7, color="gray", lw=0.8)
axes[1].set(title=f"Objects found among the top-k proposals ({len(gt)} objects)", xlabel="NMS IoU threshold",
            ylabel="objects with a proposal at IoU >= 0.7", ylim=(0, len(gt) + 0.5))
axes[1].legend()
fig.suptitle("The NMS threshold: proposals kept and objects found near the top of the ranking")
plt.tight_layout()
plt.show()
t_lo, t_hi = thresholds[0], thresholds[-1]
display(Markdown(
    f"What to see: among the top 5 proposals, {found[5][0]} of the {len(gt)} objects are found at threshold "
    f"{t_lo:g} and {found[5][-1]} at {t_hi:g}; {counts[0]} proposals survive at {t_lo:g}, and from "
    f"{thresholds[int(np.argmax(np.array(counts) >= 1000))]:g} up the cap of 1000 is reached."))

# %% [markdown]
# With a high threshold, the top of the ranking fills with copies of the most confident objects and the
# others fall out of the top-k; with a low one, each object gets its best box near the top quickly, but
# good second guesses are deleted as well (and neighbouring objects can suppress each other). 0.7 is
# the usual compromise for the RPN, whose job is recall: the RoI heads see 1000 proposals per image at
# test time and run their own, stricter NMS (0.5 per class) at the end.
