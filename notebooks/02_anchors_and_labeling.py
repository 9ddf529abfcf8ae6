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
from matplotlib.patches import Rectangle

import minirc
from minirc.data import ShapesDataset
from minirc.detection import AnchorGenerator, Matcher
from minirc.ops.box_iou import box_iou
from minirc.visualize import draw_boxes, to_hwc

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 80


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
ax.set(title="image 3 and its ground-truth boxes", xlabel="x (px)", ylabel="y (px)")
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
# Rounding is why the size-32, ratio-0.5 anchor is 46 x 22 (area 1012) and not 45.25 x 22.63.
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
# (16,368 columns here). The heat maps show, for each location of each level, the best IoU
# over its three anchors and over all objects.

# %%
anchors = np.concatenate(levels)
iou = box_iou(gt, anchors)  # (M, S) float32
print("IoU matrix:", iou.shape, iou.dtype)

fig, axes = plt.subplots(1, 5, figsize=(19, 3.8))
start = 0
for lvl, (ax, (gh, gw)) in enumerate(zip(axes, grids)):
    count = gh * gw * 3
    best = iou[:, start:start + count].reshape(len(gt), gh, gw, 3).max(axis=(0, 3))  # (M, H, W, A) -> (H, W)
    start += count
    im = ax.imshow(best, vmin=0, vmax=1, cmap="viridis", extent=(0, 256, 256, 0))
    draw_boxes(ax, gt, "white", lw=1)
    ax.set(title=f"level {lvl} (size {gen.sizes[lvl][0]})", xlabel="x (px)", ylabel="y (px)")
fig.colorbar(im, ax=axes, shrink=0.8, label="best IoU at the location")
fig.suptitle("Best IoU with any object, over the 3 anchors of each location")
plt.show()

# %% [markdown]
# Each object lights up the level whose anchor size matches it: these objects are 40-90 px, so levels
# 1 and 2 (sizes 64 and 128) carry the high IoUs, level 0 (size 32) only for the smallest object,
# and levels 3-4 are nearly dark. That is the point of one anchor size per FPN level.
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

# %% [markdown]
# Only a couple of anchors reach 0.7, and three of the four objects have **no** anchor above 0.7 at all:
# by the thresholds alone they would never be taught to the RPN.
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

# %% [markdown]
# Every object now has positives. Objects with several rescued anchors have *ties*: an object wider
# than an anchor overlaps it equally at several x positions. Two subtleties, both reproduced from
# torchvision on purpose: a rescued anchor is matched to **its own** best object (not necessarily the
# object that rescued it), and the rule also rescues anchors far below 0.3.
#
# ## Anchor coverage explorer
#
# How well do the anchors fit a set of objects? A simple measure: the fraction of objects that have at
# least one anchor with IoU >= 0.7 (the objects that do not depend on the best-anchor rule).
# `coverage(boxes_list, sizes, ratios)` computes it; change the arguments to explore. Two object sets:
# the shapes data set (nearly square objects, 40-110 px) and random boxes with log-uniform sizes from
# 16 to 256 px and aspect ratios (height / width) spread log-normally around 1, more like real photos.

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
print("default anchors, shapes:", round(coverage(shapes_boxes, gen.sizes, (0.5, 1.0, 2.0)), 3),
      " random boxes:", round(coverage(random_boxes, gen.sizes, (0.5, 1.0, 2.0)), 3))

# %% [markdown]
# Read the curves left to right as "bigger anchors". Sizes a factor 2 apart leave gaps: an object
# halfway between two sizes reaches 0.7 with no anchor, so coverage depends on how the anchor scale
# lines up with the object sizes. For the nearly square shapes the extra ratios change nothing; for
# boxes of varied shapes they help, and an intermediate size per level (RetinaNet uses 2^(1/3) and
# 2^(2/3)) helps most. The best-anchor rule covers the objects left out.
#
# ## A float32-vs-float64 tie
#
# "Ties included" means exact equality, in the dtype of the IoU. torchvision computes in float32,
# where two IoUs that differ in the 8th significant digit are equal. For this box and the size-32
# anchors of a 32x32 grid (stride 4), float32 and float64 disagree on which anchors tie:

# %%
(a32,) = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))((128, 128), [(32, 32)])
box = np.array([[27.6, 26.1, 68.8, 57.9]], np.float32)
fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
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
plt.show()

# %% [markdown]
# In float32 six anchors (two rows of three) tie at IoU 0.6946622 and all become positive; in float64
# the lower row has 0.69466225 and the upper 0.69466217, so only three do. Reproducing torchvision's
# labels bit for bit therefore means computing the IoU in float32, as minirc's RPN does.
