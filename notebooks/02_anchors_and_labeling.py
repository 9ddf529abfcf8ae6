# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 02 · Anchors and labelling
#
# The region proposal network (RPN) never predicts a box from nothing. At every position of every
# pyramid level it looks at a few fixed **anchors** and answers two questions: *is there an object
# here?* and *how should this anchor move to fit it?* To train those answers, every anchor needs a
# label: object, background, or "don't care". This notebook builds the anchors of torchvision's
# Mask R-CNN with `minirc.detection.AnchorGenerator` and labels them with `minirc.detection.Matcher`.
#
# Conventions (all torchvision's, see `docs/anchors.md` and `docs/matching.md`): boxes are
# `x1, y1, x2, y2` in continuous pixel coordinates; aspect ratio is height / width.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.patches import Rectangle

import minirc
from minirc.data import ShapesDataset
from minirc.detection import AnchorGenerator, BalancedPositiveNegativeSampler, Matcher
from minirc.explore import anchor_coverage_figure, draw_anchor_coverage, interactive
from minirc.ops.box_iou import box_iou
from minirc.visualize import draw_boxes, to_hwc

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100


# %% [markdown]
# ## A test image
#
# A 256x256 image from minirc's synthetic shapes data set (no download). 256 is a multiple of 32,
# so the padded batch is the image itself and the five FPN levels (strides 4, 8, 16, 32, 64) have
# grids of 64, 32, 16, 8 and 4 cells.

# %%
dataset = ShapesDataset(num_images=200, image_size=(256, 256), seed=1, empty_fraction=0.0, max_objects=5)
image, target = dataset[3]
gt = target["boxes"]
print("ground-truth boxes (x1, y1, x2, y2):\n", gt)
print("widths x heights:", (gt[:, 2:] - gt[:, :2]).astype(int).tolist())

fig, ax = plt.subplots(figsize=(4, 4))
ax.imshow(to_hwc(image), extent=(0, 256, 256, 0))
draw_boxes(ax, gt, "yellow", lw=2)
for i, b in enumerate(gt):
    ax.text(b[0] + 2, b[1] + 2, str(i), color="yellow", va="top", fontsize=10)
ax.set(title="image 3 and its ground-truth boxes (indices as in the text)", xlabel="x (px)", ylabel="y (px)")
plt.show()

# %% [markdown]
# ## The anchors of one cell
#
# For each level torchvision builds a few *cell anchors* centred on (0, 0): for each aspect ratio
# `r` and size `s`, width `s / sqrt(r)` and height `s * sqrt(r)`, computed in float32 and **rounded
# half to even**. Here is the code minirc runs:

# %%
print(inspect.getsource(minirc.detection.anchors.cell_anchors))
gen = AnchorGenerator()  # FPN defaults: one size per level (32 ... 512), ratios 0.5, 1, 2
for (size,), cell in zip(gen.sizes, gen.cell_anchors):
    print(f"size {size:3d}:", cell.astype(int).tolist())

# %% [markdown]
# Rounding is why the size-32, ratio-0.5 anchor is 46 x 22 (area 1012) and not 45.25 x 22.63:
# the float32 half-width `32 / sqrt(0.5) / 2 = 22.63` rounds to 23 and the half-height 11.31 to 11.
#
# ## Anchors of every level
#
# The generator shifts the cell anchors over the grid: the centre of location `(y, x)` is
# `(x * stride_w, y * stride_h)`, with `stride = padded_size // grid_size`, and the anchors of a
# level are listed location by location (row-major), then anchor by anchor. Each panel shows the grid
# of anchor centres (dots) and the three anchors of one location, near the centre of the image.

# %%
grids = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
levels = gen((256, 256), grids)
strides = gen.strides((256, 256), grids)
print("anchors per level:", [len(a) for a in levels], "total:", sum(len(a) for a in levels))
print("strides:", strides)

fig, axes = plt.subplots(1, 5, figsize=(18, 4))
for lvl, (ax, anchors, (gh, gw), (sh, sw)) in enumerate(zip(axes, levels, grids, strides)):
    ax.imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.6)
    centres = (anchors[::3, :2] + anchors[::3, 2:]) / 2  # one centre per location
    ax.plot(centres[:, 0], centres[:, 1], ".", ms=1 if lvl < 2 else 3, color="k")
    y, x = gh // 2, gw // 2
    i = (y * gw + x) * 3  # location-major index of location (y, x)
    for a, color in zip(range(3), ["tab:red", "tab:green", "tab:blue"]):
        draw_boxes(ax, anchors[i + a:i + a + 1], color, lw=2)
    margin = max(0.0, np.abs(gen.cell_anchors[lvl]).max() - 128) + 20  # zoom out until the anchors fit
    ax.set(xlim=(-margin, 256 + margin), ylim=(256 + margin, -margin), aspect="equal",
           title=f"level {lvl}: size {gen.sizes[lvl][0]}, {gh}x{gw} grid, stride {sh}",
           xlabel="x (px)", ylabel="y (px)")
    ax.add_patch(Rectangle((0, 0), 256, 256, fill=False, ec="gray", ls="--"))
fig.suptitle("Anchor centres (dots) and the 3 anchors of one location (red: ratio 0.5, green: 1, blue: 2); "
             "dashed: the image")
plt.tight_layout()
plt.show()

# %% [markdown]
# Anchors of the coarse levels stick far out of the image: torchvision keeps them all (there is no
# "straddle" filter) and clips proposals to the image later. Note also that centres sit on cell
# *corners*: the first centre of every level is (0, 0), the image's top-left corner.
#
# ## IoU of every anchor with the ground truth
#
# Labelling starts from the IoU matrix `box_iou(gt, anchors)`, one row per object, one column per anchor
# (the total printed above). The heat maps show, for each location of each level, the best IoU
# over its three anchors and over all objects. Each heat-map cell is drawn centred on its anchors'
# centre `(x * stride, y * stride)`, so the map reaches half a stride past the image's top-left corner.

# %%
anchors = np.concatenate(levels)
iou = box_iou(gt, anchors)  # (M, S) float32
print("IoU matrix:", iou.shape, iou.dtype)

fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
start = 0
level_best = np.zeros((len(gt), len(grids)), np.float32)  # best IoU of each object on each level
for lvl, (ax, (gh, gw)) in enumerate(zip(axes, grids)):
    count = gh * gw * 3
    block = iou[:, start:start + count]
    level_best[:, lvl] = block.max(axis=1)
    best = block.reshape(len(gt), gh, gw, 3).max(axis=(0, 3))  # (M, H, W, A) -> (H, W)
    start += count
    s = 256 // gw  # location (y, x) is centred on (x s, y s): its cell spans x s -+ s/2
    im = ax.imshow(best, vmin=0, vmax=1, cmap="viridis", extent=(-s / 2, 256 - s / 2, 256 - s / 2, -s / 2))
    draw_boxes(ax, gt, "white", lw=1)
    ax.set(title=f"level {lvl} (size {gen.sizes[lvl][0]})", xlabel="x (px)", ylabel="y (px)",
           xlim=(-32, 256), ylim=(256, -32))
fig.colorbar(im, ax=axes, shrink=0.8, label="best IoU at the location")
fig.suptitle("Best IoU with any object, over the 3 anchors of each location")
plt.show()
print("best IoU of each object (rows) on levels 0-4 (columns):\n", level_best.round(3))

# %%
sides = np.sqrt((gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1]))
best_level = level_best.argmax(axis=1)
display(Markdown(
    f"Each object lights up the level whose anchor size matches it: these objects are {sides.min():.0f}-"
    f"{sides.max():.0f} px, and their best anchors sit on level(s) "
    f"{', '.join(str(v) for v in sorted(set(best_level.tolist())))} (sizes "
    f"{', '.join(str(gen.sizes[v][0]) for v in sorted(set(best_level.tolist())))}); levels 3 and 4 reach at most "
    f"IoU {level_best[:, 3:].max():.2f}. That is the point of one anchor size per FPN level."))
#
# ## The 0.7 / 0.3 bands
#
# Each anchor takes its best object. IoU >= 0.7: positive; < 0.3: background; in between: ignored
# (no loss). The histogram is over the anchors with any overlap at all (the log scale hides nothing:
# most anchors have IoU 0 and are background).

# %%
best_iou = iou.max(axis=0)
fig, ax = plt.subplots(figsize=(7, 3.2))
ax.hist(best_iou[best_iou > 0], bins=np.linspace(0, 1, 51), color="gray", log=True)
ax.axvspan(0, 0.3, color="tab:blue", alpha=0.15, label="background (< 0.3)")
ax.axvspan(0.3, 0.7, color="tab:orange", alpha=0.15, label="ignored [0.3, 0.7)")
ax.axvspan(0.7, 1.0, color="tab:green", alpha=0.15, label="positive (>= 0.7)")
ax.set(title="Best IoU of each overlapping anchor", xlabel="IoU with the best ground-truth box",
       ylabel="number of anchors (log)")
ax.legend()
plt.show()
print(f"anchors: {len(best_iou)}, IoU = 0: {(best_iou == 0).sum()}, background: {(best_iou < 0.3).sum()}, "
      f"ignored: {((best_iou >= 0.3) & (best_iou < 0.7)).sum()}, positive: {(best_iou >= 0.7).sum()}")
print("best IoU of each object:", np.round(iou.max(axis=1), 3))
uncovered = np.flatnonzero(iou.max(axis=1) < 0.7)
display(Markdown(
    f"Only {(best_iou >= 0.7).sum()} of {len(best_iou)} anchors reach 0.7, and {len(uncovered)} of the {len(gt)} "
    f"objects (indices {uncovered.tolist()}) have **no** anchor at 0.7 at all: by the thresholds alone they would "
    "never be taught to the RPN."))
#
# ## The best-anchor rule
#
# Faster R-CNN (section 3.1.2) adds a rule: for each object, the anchors with the highest IoU with it
# become positive too, whatever their IoU, **ties included**. In torchvision it is
# `Matcher(0.7, 0.3, allow_low_quality_matches=True)`:

# %%
plain = Matcher(0.7, 0.3)(iou)
rpn_matcher = Matcher(0.7, 0.3, allow_low_quality_matches=True)
matches = rpn_matcher(iou)
rescued = (matches >= 0) & (plain < 0)
print(f"positives with thresholds only: {(plain >= 0).sum()}, with the best-anchor rule: {(matches >= 0).sum()} "
      f"({rescued.sum()} rescued)")
print(inspect.getsource(Matcher._set_low_quality_matches))

fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.4)
draw_boxes(ax, gt, "gold", lw=3)
draw_boxes(ax, anchors[(plain >= 0)], "tab:green", lw=2)
draw_boxes(ax, anchors[rescued], "magenta", lw=1, ls="--")
ax.set(xlim=(0, 256), ylim=(256, 0), xlabel="x (px)", ylabel="y (px)",
       title="gold: objects, green: IoU >= 0.7,\nmagenta dashed: rescued by the best-anchor rule")
plt.show()
assert all((matches == k).any() for k in range(len(gt)))  # every object has a positive now

# %% [markdown]
# Every object now has positives. Objects with several rescued anchors have *ties*: an object wider
# than an anchor overlaps it equally at several x positions. Two subtleties, both reproduced from
# torchvision on purpose: a rescued anchor is matched to **its own** best object (not necessarily the
# object that rescued it), and the rule also rescues anchors far below 0.3.
#
# ## Balanced sampling: 256 anchors per image
#
# The labels above give one positive for every few hundred background anchors. A loss over all of
# them would be swamped by easy background, so the RPN's loss sees only a **sample** of each image:
# `BalancedPositiveNegativeSampler(256, 0.5)` draws at most 128 positives at random, then fills the
# rest of the 256 with random negatives; ignored anchors are never drawn (Faster R-CNN Sec. 3.1.3,
# torchvision's `_utils.BalancedPositiveNegativeSampler`, `docs/matching.md`).

# %%
labels = np.where(matches >= 0, 1, np.where(matches == Matcher.BELOW_LOW_THRESHOLD, 0, -1))  # as the RPN labels
sampler = BalancedPositiveNegativeSampler(256, 0.5)
(pos_mask,), (neg_mask,) = sampler([labels], rng=np.random.default_rng(0))
level_of = np.repeat(np.arange(len(levels)), [len(a) for a in levels])
table = np.array([[np.sum((level_of == lv) & (labels == 1)), np.sum((level_of == lv) & (labels == 0)),
                   np.sum((level_of == lv) & (labels == -1)), np.sum(pos_mask & (level_of == lv)),
                   np.sum(neg_mask & (level_of == lv))] for lv in range(len(levels))])
print("per level: positive, negative, ignored | sampled positive, sampled negative\n", table)

fig, axes = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [1, 1.2]})
axes[0].imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.4)
centres = (anchors[:, :2] + anchors[:, 2:]) / 2
axes[0].plot(*centres[neg_mask].T, "x", color="tab:blue", ms=4, label=f"sampled negatives ({neg_mask.sum()})")
draw_boxes(axes[0], anchors[pos_mask], "tab:green", lw=1)
axes[0].plot([], [], color="tab:green", label=f"sampled positives ({pos_mask.sum()})")
axes[0].legend(loc="lower left", fontsize=8)
axes[0].set(xlim=(-40, 296), ylim=(296, -40), aspect="equal", xlabel="x (px)", ylabel="y (px)",
            title="one draw of the sampler: positives (boxes), negatives (centres)")
x = np.arange(len(levels))
for j, (name, color) in enumerate([("sampled positives", "tab:green"), ("sampled negatives", "tab:blue")]):
    axes[1].bar(x + 0.4 * j - 0.2, table[:, 3 + j], 0.4, color=color, label=name)
axes[1].set(xticks=x, xticklabels=[f"{lv}\n(size {gen.sizes[lv][0]})" for lv in x], xlabel="pyramid level",
            ylabel="anchors in the sample", title="the 256 sampled anchors per level")
axes[1].legend()
fig.tight_layout()
plt.show()

n_pos, n_neg = sampler.num_samples(int((labels == 1).sum()), int((labels == 0).sum()))
assert (pos_mask.sum(), neg_mask.sum()) == (n_pos, n_neg) and not (pos_mask | neg_mask)[labels == -1].any()
display(Markdown(
    f"What to see: this image has {(labels == 1).sum()} positives, fewer than the 128 allowed, so the sample takes "
    f"all of them and {n_neg} negatives fill it to {n_pos + n_neg}. The negatives are drawn uniformly from "
    f"{(labels == 0).sum()} background anchors, so they land where most anchors are: level 0 holds "
    f"{np.mean(level_of[labels == 0] == 0):.0%} of the background and {table[0, 4]} of the {n_neg} sampled "
    "negatives, and most of them are easy, far from every object. Another seed draws other negatives; the "
    "positives only change when an image has more than 128."))

# %% [markdown]
# ## Anchor coverage explorer
#
# How well do the anchors fit a set of objects? A simple measure: the fraction of objects that have at
# least one anchor with IoU >= 0.7 (the objects that do not depend on the best-anchor rule).
# `minirc.explore.draw_anchor_coverage` draws one set of boxes: covered boxes in green, boxes with no
# positive anchor in red (labelled with their index and best IoU, their best anchor dotted). Below,
# a dozen random boxes with log-uniform sizes from 16 to 256 px and aspect ratios (height / width)
# spread log-normally around 1, more like real photos than the shapes, for three sets of ratios and
# two IoU thresholds.

# %%
rng = np.random.default_rng(3)
n_show = 12
side = np.exp(rng.uniform(np.log(16), np.log(256), n_show))
ratio = np.exp(rng.normal(0.0, 0.7, n_show))
w, h = side / np.sqrt(ratio), side * np.sqrt(ratio)
cx, cy = rng.uniform(w / 2, 256 - w / 2), rng.uniform(h / 2, 256 - h / 2)
explore_boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)
ratio_sets = [(1.0,), (0.5, 1.0, 2.0), (0.25, 0.5, 1.0, 2.0, 4.0)]
fig, axes = plt.subplots(2, 3, figsize=(15, 10.5))
missed = {}
for row, threshold in enumerate((0.5, 0.7)):
    for col, ratios in enumerate(ratio_sets):
        missed[threshold, ratios] = draw_anchor_coverage(axes[row, col], explore_boxes, (256, 256),
                                                         gen.sizes, ratios, threshold)
fig.suptitle("Which boxes get no positive anchor (red) with FPN sizes 32 ... 512: ratios across, threshold down")
fig.tight_layout(rect=(0, 0, 1, 0.97))
plt.show()

# %%
always = sorted(set.intersection(*(set(m.tolist()) for m in missed.values())))
counts = {t: [len(missed[t, rs]) for rs in ratio_sets] for t in (0.5, 0.7)}
box_sides = np.sqrt((explore_boxes[:, 2] - explore_boxes[:, 0]) * (explore_boxes[:, 3] - explore_boxes[:, 1]))
display(Markdown(
    f"What to see: red boxes are the ones only the best-anchor rule teaches the RPN. With 1, 3 and 5 ratios, "
    f"{', '.join(map(str, counts[0.7]))} of {n_show} boxes are missed at IoU 0.7 and "
    f"{', '.join(map(str, counts[0.5]))} at 0.5. Boxes {always} are missed in every panel: with sides of "
    f"{', '.join(f'{box_sides[i]:.0f}' for i in always)} px they are "
    + ("smaller than the smallest anchor (32 px)" if box_sides[always].max(initial=0) < 32 else "between the anchor sizes")
    + ", which no choice of ratios fixes (a smaller `size_scale` in the explorer below does)."))

# %% [markdown]
# With `ipywidgets` installed (`pip install "minirc[notebooks]"`), the sliders below redraw the same
# panel for any anchor scale, set of ratios and threshold.

# %%
interactive(lambda size_scale, ratios, threshold: anchor_coverage_figure(explore_boxes, (256, 256), size_scale,
                                                                          ratios, threshold),
            size_scale=(0.5, 2.0, 0.125, 1.0), ratios=["0.5, 1, 2", "1", "0.25, 0.5, 1, 2, 4"],
            threshold=(0.3, 0.9, 0.05, 0.7))

# %% [markdown]
# ### Coverage over many objects
#
# `coverage(boxes_list, sizes, ratios)` gives the fraction of objects that are covered, for two object
# sets: the shapes data set (nearly square objects) and 1,500 random boxes like the dozen above.

# %%
n_images = 20 if FAST else 100
shapes_boxes = [dataset[i][1]["boxes"] for i in range(n_images)]
rng = np.random.default_rng(0)
n_random = 300 if FAST else 1500
side = np.exp(rng.uniform(np.log(16), np.log(256), n_random))  # sqrt(area), px
ratio = np.exp(rng.normal(0.0, 0.7, n_random))                   # height / width
w, h = side / np.sqrt(ratio), side * np.sqrt(ratio)
cx, cy = rng.uniform(0, 256, n_random), rng.uniform(0, 256, n_random)
random_boxes = [np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1).astype(np.float32)]


def coverage(boxes_list, sizes, ratios, threshold=0.7):
    """Fraction of boxes with an anchor at IoU >= threshold; sizes: one tuple of sizes per level."""
    g = AnchorGenerator(sizes=sizes, aspect_ratios=(tuple(ratios),) * len(sizes))
    a = np.concatenate(g((256, 256), grids))
    hits = [box_iou(b, a).max(axis=1) >= threshold for b in boxes_list if len(b)]
    return float(np.concatenate(hits).mean())


scales = [0.5, 0.75, 1.0, 1.25, 1.5, 2.0] if not FAST else [0.5, 1.0, 1.5, 2.0]
configs = {"ratios 1": ((1.0,), 1), "ratios 0.5, 1, 2 (default)": ((0.5, 1.0, 2.0), 1),
           "ratios 0.25 ... 4": ((0.25, 0.5, 1.0, 2.0, 4.0), 1),
           "ratios 0.5, 1, 2 and sizes s, 1.41 s per level": ((0.5, 1.0, 2.0), 2)}
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, (name, boxes_list) in zip(axes, [("shapes data set", shapes_boxes), ("random boxes", random_boxes)]):
    for label, (ratios, per_level) in configs.items():
        cov = []
        for scale in scales:
            sizes = tuple(tuple(32 * scale * 2 ** (k + j / 2) for j in range(per_level)) for k in range(5))
            cov.append(coverage(boxes_list, sizes, ratios))
        ax.plot(scales, cov, "o-", label=label)
    ax.set(title=f"{name}: {sum(map(len, boxes_list))} objects", ylim=(0, 1),
           xlabel="anchor sizes, as a multiple of (32, 64, 128, 256, 512)",
           ylabel="objects with an anchor at IoU >= 0.7")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
at_default = {name: {label: coverage(boxes_list, tuple(tuple(32 * 2 ** (k + j / 2) for j in range(per_level))
                                                       for k in range(5)), ratios)
                     for label, (ratios, per_level) in configs.items()}
              for name, boxes_list in [("shapes", shapes_boxes), ("random boxes", random_boxes)]}
for name, row in at_default.items():
    print(f"{name:12s} coverage at scale 1:", {k: round(v, 3) for k, v in row.items()})

# %%
sq, rnd = at_default["shapes"], at_default["random boxes"]
display(Markdown(
    "Read the curves left to right as \"bigger anchors\". Sizes a factor 2 apart leave gaps: an object halfway "
    "between two sizes reaches 0.7 with no anchor, so coverage depends on how the anchor scale lines up with the "
    f"object sizes. At scale 1, going from ratio 1 to the default three ratios changes the shapes' coverage from "
    f"{sq['ratios 1']:.2f} to {sq['ratios 0.5, 1, 2 (default)']:.2f} and the random boxes' from "
    f"{rnd['ratios 1']:.2f} to {rnd['ratios 0.5, 1, 2 (default)']:.2f}; five ratios give the random boxes "
    f"{rnd['ratios 0.25 ... 4']:.2f}, and an intermediate size per level (RetinaNet uses 2^(1/3) and 2^(2/3)) "
    f"{rnd['ratios 0.5, 1, 2 and sizes s, 1.41 s per level']:.2f}. The best-anchor rule covers the objects left out."))
#
# ## A float32-vs-float64 tie
#
# "Ties included" means exact equality, in the dtype of the IoU. torchvision computes in float32,
# where two IoUs that differ in the 8th significant digit are equal. For this box and the size-32
# anchors of a 32x32 grid (stride 4), float32 and float64 disagree on which anchors tie:

# %%
(a32,) = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))((128, 128), [(32, 32)])
box = np.array([[27.6, 26.1, 68.8, 57.9]], np.float32)
ties = {}
fig, axes = plt.subplots(1, 2, figsize=(9, 4.6))
for ax, dtype in zip(axes, (np.float32, np.float64)):
    q = box_iou(box.astype(dtype), a32.astype(dtype))
    tied = np.flatnonzero(q[0] == q[0].max())
    positives = np.flatnonzero(Matcher(0.7, 0.3, True)(q) >= 0)
    print(f"{dtype.__name__}: best IoU {q[0].max():.10f}, tied anchors {tied.tolist()}, "
          f"their IoUs {[f'{v:.10f}' for v in q[0, tied]]}, positives {len(positives)}")
    draw_boxes(ax, box, "black", lw=2.5)
    draw_boxes(ax, a32[tied], "tab:red", lw=1.2)
    ax.set(xlim=(15, 80), ylim=(70, 15), aspect="equal", xlabel="x (px)", ylabel="y (px)",
           title=f"{dtype.__name__}: {len(tied)} anchors tie for the best IoU")
    ties[dtype.__name__] = (tied, q[0], len(positives))
fig.suptitle("A float32 tie that float64 breaks (black: the box; red: the anchors tied for its best IoU)")
plt.show()

# %%
(t32, q32, p32), (t64, q64, p64) = ties["float32"], ties["float64"]
dropped = np.setdiff1d(t32, t64)
display(Markdown(
    f"In float32 {len(t32)} anchors tie at IoU {q32[t32[0]]:.7f} and all become positive ({p32} positives); in "
    f"float64 anchors {t64.tolist()} have {q64[t64[0]]:.8f} and anchors {dropped.tolist()} have "
    f"{q64[dropped].max():.8f}, so only {p64} are positive. Reproducing torchvision's labels bit for bit therefore "
    "means computing the IoU in float32, as minirc's RPN does."))
