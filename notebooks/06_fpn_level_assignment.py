# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 06 · Which FPN level pools a box? The level assignment, its constants and its conventions
#
# A Feature Pyramid Network gives the RoI heads four maps, P2..P5 (strides 4, 8, 16, 32). Each RoI
# is pooled from **one** of them, chosen by its size (FPN paper, Lin et al. 2017, Eqn. 1):
#
# $$k = \left\lfloor k_0 + \log_2\!\left(\sqrt{wh}\,/\,224\right) \right\rfloor, \qquad k_0 = 4,$$
#
# clamped to the levels present. **Where 224 and 4 come from.** 224 x 224 is the ImageNet
# pre-training crop, the size at which the backbone learned what an object looks like; and the
# single-scale Faster R-CNN that FPN builds on (ResNet "C4") pools every RoI from the stride-16
# output of stage 4. So a box of ImageNet size goes where it always went, level 4, and every
# halving of the box side moves one level finer (a 112 px box on P3, 56 px on P2). The effect:
# in cells of its own level, a box always spans 14 to 28 cells -- 2 to 4 cells per bin of the 7x7
# box head -- except where the clamps take over.
#
# minirc implements torchvision's version, `minirc.detection.LevelMapper`, in float32:
# `floor(4 + log2(sqrt(area) / 224) + 1e-6)`, clamped to `[k_min, k_max]`, and
# `MultiScaleRoIAlign`, which also infers each level's scale from the feature shapes.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.ticker import NullFormatter

from minirc import Tensor
from minirc.detection import LevelMapper, MultiScaleRoIAlign
from minirc.detection.poolers import infer_scale
from minirc.ops.roi_align import roi_align

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100
rng = np.random.default_rng(0)
print(inspect.getsource(LevelMapper.__call__))


def squares(sides):
    """(n, 4) float32 square boxes of the given sides (only the area matters)."""
    sides = np.asarray(sides, np.float32)
    z = np.zeros_like(sides)
    return np.stack([z, z, sides, sides], 1)


# %% [markdown]
# ## Box size to level
#
# The step function below is the mapper's output for square boxes (level = index + 2 with P2..P5);
# the dashed line is the formula before flooring and clamping. Boundaries fall at 112, 224 and
# 448 px: everything under 112 px lands on P2 and everything from 448 px up on P5. The **clamps**
# act only further out: the formula itself gives P2 down to 56 px (`4 + log2(56/224) = 2`) and P5
# up to 896 px, so only boxes under 56 px (formula: P1 or lower) and from 896 px up (P6+) are
# clamped (shaded).

# %%
mapper = LevelMapper(2, 5)
sides = np.geomspace(8, 2048, 2000)
levels = mapper(squares(sides)) + 2
fig, ax = plt.subplots(figsize=(10, 4.2))
ax.plot(sides, 4 + np.log2(sides / 224), "--", color="0.6", label="4 + log2(side / 224) (unclamped)")
ax.step(sides, levels, where="post", lw=2.5, label="torchvision / minirc level")
ax.axvspan(8, 56, color="tab:orange", alpha=0.12, label="clamped to P2 (formula says P1 or lower)")
ax.axvspan(896, 2048, color="tab:purple", alpha=0.12, label="clamped to P5 (formula says P6+)")
for b in (112, 224, 448):
    ax.axvline(b, color="0.8", lw=0.8)
ax.set(xscale="log", xlabel="box side sqrt(w h) (px)", ylabel="FPN level k", ylim=(0.5, 7),
       title="Which level pools a box (canonical 224 px -> P4)")
ax.set_xticks([8, 16, 32, 56, 112, 224, 448, 896, 2048], ["8", "16", "32", "56", "112", "224", "448", "896", "2048"])
ax.xaxis.set_minor_formatter(NullFormatter())
ax.legend(loc="upper left", fontsize=9)
plt.show()
for lo, hi in ((0, 112), (112, 224), (224, 448), (448, 10 ** 9)):
    sel = (sides >= lo) & (sides < hi)
    print(f"sides {lo:>4} .. {hi if hi < 10 ** 9 else 'inf':>4} px -> P{sorted(set(levels[sel].tolist()))}")
unclamped = np.floor(4 + np.log2(sides / 224) + 1e-6)
clamped = unclamped != levels
print(f"clamped: sides {sides[clamped & (sides < 224)].min():.1f} .. {sides[clamped & (sides < 224)].max():.1f} px "
      f"and {sides[clamped & (sides > 224)].min():.1f} .. {sides[clamped & (sides > 224)].max():.1f} px")
assert sides[clamped & (sides < 224)].max() < 56 and abs(sides[~clamped].min() - 56) < 0.5

# %% [markdown]
# ## What the head sees: cells per bin
#
# The point of the rule is to give every RoI a similar number of feature cells. For the 7x7 box
# head (and the 14x14 mask head), the plot shows feature cells per output bin along one side,
# `side / stride / 7`. Between the clamps it saws between 2 and 4 for the box head (1 and 2 for
# the mask head). Below 56 px, P2 is the finest map there is: a 28 px box has one cell per bin and
# a 14 px box half a cell, so the 7x7 output is an *upsampling* of a handful of cells. Above 896 px
# the cells per bin grow without bound while `sampling_ratio=2` still takes only 2x2 samples per
# bin: most cells are skipped (aliasing).

# %%
strides = 2.0 ** levels
fig, ax = plt.subplots(figsize=(10, 4.2))
for size, color in ((7, "tab:blue"), (14, "tab:green")):
    ax.plot(sides, sides / strides / size, color=color, label=f"{size}x{size} pooling (levels by floor)")
ax.axhline(1, color="0.5", ls=":", lw=1)
ax.axvspan(8, 56, color="tab:orange", alpha=0.12, label="clamped to P2")
ax.axvspan(896, 2048, color="tab:purple", alpha=0.12, label="clamped to P5")
ax.set(xscale="log", yscale="log", xlabel="box side (px)", ylabel="feature cells per output bin (one side)",
       title="Resolution the heads get: flat between the clamps, falling or growing outside")
ax.set_xticks([8, 16, 32, 56, 112, 224, 448, 896, 2048], ["8", "16", "32", "56", "112", "224", "448", "896", "2048"])
ax.xaxis.set_minor_formatter(NullFormatter())
ax.legend()
plt.show()
per_bin = sides / strides / 7
between = (sides >= 56) & (sides < 896)
print(f"7x7 box head, cells per bin between the clamps (56 .. 896 px): {per_bin[between].min():.2f} .. "
      f"{per_bin[between].max():.2f}; 14x14 mask head: {per_bin[between].min() / 2:.2f} .. "
      f"{per_bin[between].max() / 2:.2f}; a 28 px box: {28 / 4 / 7:.2f}, a 14 px box: {14 / 4 / 7:.2f}")
assert 1.99 < per_bin[between].min() and per_bin[between].max() <= 4.0

# %% [markdown]
# ### At the clamps, seen in the pooled features
#
# Two extremes on synthetic maps. Left: a 16 px box on P2 (4 cells) pooled to 7x7 -- blocky
# interpolation of 4 x 4 values. Right: a 1200 px box on P5 over a checkerboard of 2x2-cell
# squares: with `sampling_ratio=2` (torchvision's detector) each bin takes 4 samples from ~29
# cells (a bin is `1200 / 32 / 7 = 5.4` cells on a side) and the output is a moiré; the adaptive grid (`sampling_ratio=-1`, `ceil(5.4) = 6` samples
# per side) averages it to (nearly) the grey it really is.

# %%
p2 = rng.standard_normal((1, 1, 64, 64)).astype(np.float32)
small_box = np.array([[0, 100.0, 100.0, 116.0, 116.0]], np.float32)
stripes = ((np.indices((48, 48)) // 2).sum(0) % 2).astype(np.float32)[None, None]  # 2x2-cell checkerboard
big_box = np.array([[0, 100.0, 100.0, 1300.0, 1300.0]], np.float32)
fig, axes = plt.subplots(1, 4, figsize=(18, 4.6), layout="constrained")
axes[0].imshow(p2[0, 0, 24:30, 24:30], cmap="viridis", vmin=-2, vmax=2, extent=(24, 30, 30, 24))
axes[0].add_patch(plt.Rectangle((25, 25), 4, 4, fill=False, ec="white", lw=2))
axes[0].set(title="P2 cells around\na 16 px box (white)", xlabel="cell x", ylabel="cell y")
im = axes[1].imshow(roi_align(p2, small_box, 7, 1 / 4, 2, True)[0, 0], cmap="viridis", vmin=-2, vmax=2)
fig.colorbar(im, ax=axes[:2], shrink=0.8, label="feature value")
axes[1].set(title="its 7x7 RoIAlign\n(upsampled)", xlabel="bin x", ylabel="bin y")
for ax, sr in zip(axes[2:], (2, -1)):
    pooled = roi_align(stripes, big_box, 7, 1 / 32, sr, True)[0, 0]
    im = ax.imshow(pooled, cmap="gray", vmin=0, vmax=1)
    ax.set(title=f"1200 px box on P5,\nsampling_ratio {sr}", xlabel="bin x", ylabel="bin y")
    print(f"sampling_ratio {sr:2d}: bins range {pooled.min():.3f} .. {pooled.max():.3f} (the pattern's mean is 0.5)")
fig.colorbar(im, ax=axes[2:], shrink=0.8, label="pooled value")
fig.suptitle("The clamps: too few cells for tiny boxes, too few samples for huge ones")
plt.show()

# %% [markdown]
# ## floor vs round, and three ways to place the eps
#
# The paper floors. Rounding instead (`round(4 + log2(s/224))`) would move every boundary down by a
# factor sqrt(2): P4 would take 158-317 px boxes rather than 224-448 (`224 / sqrt(2) = 158`), i.e.
# 10-20 cells of stride 16 instead of 14-28, one notch finer. Implementations also differ in details that matter only near a boundary:
#
# | implementation | level | dtype | area |
# |---|---|---|---|
# | torchvision (`ops/poolers.py`), minirc | `floor(4 + log2(s / 224) + 1e-6)` (eps after the log) | float32 | `(x2-x1)(y2-y1)` |
# | detectron2 (`modeling/poolers.py`) | `floor(4 + log2(s / 224 + 1e-8))` (eps inside) | float32 | `(x2-x1)(y2-y1)` |
# | Detectron / Caffe2 (`lib/modeling/FPN.py`) | `floor(4 + log2(s / 224 + 1e-6))` (eps inside) | float64 | `(x2-x1+1)(y2-y1+1)` |
#
# Below, the three as one-liners (our own transcription of the formulas in the table) next to the
# round variant, on the same axis.

# %%
def level_torchvision(boxes):
    return mapper(boxes) + 2


def level_detectron2(boxes):
    s = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).astype(np.float32)
    with np.errstate(divide="ignore"):
        return np.clip(np.floor(np.float32(4) + np.log2(s / np.float32(224) + np.float32(1e-8))), 2, 5).astype(int)


def level_detectron(boxes):
    b = boxes.astype(np.float64)
    s = np.sqrt((b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1))
    return np.clip(np.floor(4 + np.log2(s / 224 + 1e-6)), 2, 5).astype(int)


def level_round(boxes):
    s = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    with np.errstate(divide="ignore"):
        return np.clip(np.round(4 + np.log2(s / 224)), 2, 5).astype(int)


CONVENTIONS = {"torchvision / minirc": level_torchvision, "detectron2": level_detectron2,
               "Detectron (Caffe2, +1 area)": level_detectron, "round instead of floor": level_round}
fig, axes = plt.subplots(1, 2, figsize=(15, 4.2))
for (name, fn), ls in zip(CONVENTIONS.items(), ("-", "--", "-.", ":")):
    axes[0].step(sides, fn(squares(sides)), where="post", ls=ls, lw=2, label=name)
zoom = np.linspace(110, 113, 601)
for (name, fn), ls in zip(list(CONVENTIONS.items())[:3], ("-", "--", "-.")):
    axes[1].step(zoom, fn(squares(zoom)), where="post", ls=ls, lw=2, label=name)
axes[0].set(xscale="log", xlabel="box side (px)", ylabel="FPN level", title="floor vs round")
axes[0].xaxis.set_minor_formatter(NullFormatter())
axes[0].set_xticks([16, 56, 112, 158, 224, 317, 448, 896], ["16", "56", "112", "158", "224", "317", "448", "896"])
axes[1].set(xlabel="box side (px)", ylabel="FPN level", title="zoom on the P2/P3 boundary (112 px)", yticks=[2, 3])
axes[0].set_yticks([2, 3, 4, 5])
axes[0].legend(fontsize=9)
axes[1].legend(fontsize=9)
fig.tight_layout()
plt.show()

# %% [markdown]
# Detectron's inclusive `+1` moves its boundary a whole pixel: a 111.5 px box is P3 there and P2
# everywhere else. The eps only matters at the last float digits. In float32, torchvision's `+1e-6`
# after the log still lifts a box a few ulps below 112 px up to P3, where the formula without eps
# would drop it (the boundary moves by `112 * (1 - 2^-1e-6)`, about 8e-5 px). detectron2's `1e-8`
# is smaller than half a float32 ulp of `s / 224` for any box above ~38 px, so it changes nothing
# there; what it does is keep a zero-area box finite (`log2(1e-8) = -26.6` instead of `-inf`),
# which the clamp then sends to P2 in any case.

# %%
def ulps_below(v, n):
    v = np.float32(v)
    for _ in range(n):
        v = np.nextafter(v, np.float32(0))
    return v


print(f"{'side':>14} " + " ".join(f"{n:>27}" for n in CONVENTIONS))
for side in (112.0, ulps_below(112, 4), ulps_below(112, 200), 111.5, 224.0, ulps_below(224, 4), 0.0):
    b = squares([side])
    print(f"{float(side):14.6f} " + " ".join(f"{('P' + str(int(fn(b)[0]))):>27}" for fn in CONVENTIONS.values()))
print("float32: 0.5 + 1e-8 == 0.5 ->", np.float32(0.5) + np.float32(1e-8) == np.float32(0.5))
n_boxes = 2000 if FAST else 20000
xy = rng.uniform(0, 800, (n_boxes, 2))
wh = np.exp(rng.uniform(np.log(8), np.log(800), (n_boxes, 2)))
boxes = np.concatenate([xy, xy + wh], 1).astype(np.float32)
ref = level_torchvision(boxes)
for name, fn in list(CONVENTIONS.items())[1:]:
    print(f"{name:28s} differs from torchvision on {np.mean(fn(boxes) != ref):7.3%} of {n_boxes} random boxes")
differs = {name: float(np.mean(fn(boxes) != ref)) for name, fn in CONVENTIONS.items()}
display(Markdown(
    f"On random boxes the eps placement almost never matters (detectron2 differs on "
    f"{differs['detectron2']:.3%}: a box has to sit within a tiny fraction of a pixel of a boundary), the `+1` "
    f"matters for {differs['Detectron (Caffe2, +1 area)']:.2%} of them, and floor vs round for "
    f"{differs['round instead of floor']:.0%} (all boxes with sides between a boundary and 1/sqrt(2) of it)."))

# %% [markdown]
# ## Which level is which: scales inferred from the shapes, and cached
#
# `MultiScaleRoIAlign` is not told the strides. On its first call it infers each level's scale
# from the feature height and the largest image height in the batch,
# `2 ** round(log2(feat_h / image_h))` (widths are ignored), derives `k_min`, `k_max` from the
# first and last scale, and **caches** both for every later call, as torchvision does. Padding
# to a multiple of 32 makes the ratios slightly off a power of two; rounding the log absorbs it:

# %%
for image_h in (800, 803, 1333, 600):
    padded = int(np.ceil(image_h / 32) * 32)
    feats = [padded // s for s in (4, 8, 16, 32)]
    print(f"image height {image_h:5d} (padded {padded}): feature heights {feats} -> scales "
          f"{[infer_scale(f, image_h) for f in feats]}")

# %% [markdown]
# The rounding breaks down for tiny images, and the cache makes that permanent: if the very first
# batch is a 20 px image (padded to 32), P2 is 8 cells high and `8 / 20 = 0.4` rounds to scale 1/2,
# not 1/4. Every later call, on any image size, then pools with the wrong scales and the wrong
# level range. Reset with `pooler.scales = None`.

# %%
pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)
tiny = [Tensor(np.zeros((1, 8, 32 // s, 32 // s), np.float32)) for s in (4, 8, 16, 32)]
pooler(tiny, [np.array([[2.0, 2.0, 14.0, 14.0]], np.float32)], [(20, 20)])
print("after a first call on a 20 px image: scales", pooler.scales, "levels", pooler.map_levels.k_min, "..",
      pooler.map_levels.k_max)
pooler.scales = None
big = [Tensor(rng.standard_normal((1, 8, 800 // s, 800 // s)).astype(np.float32)) for s in (4, 8, 16, 32)]
boxes800 = [np.array([[10, 10, 40, 40], [100, 100, 300, 330], [50, 60, 700, 790]], np.float32)]
out = pooler(big, boxes800, [(800, 800)])
print("after a reset and an 800 px batch:    scales", pooler.scales, "levels", pooler.map_levels.k_min, "..",
      pooler.map_levels.k_max)
print("levels of the three boxes:", (pooler.map_levels(boxes800) + 2).tolist(), " output", out.shape)

# %% [markdown]
# **Takeaways.** Level = `floor(4 + log2(side / 224))`, clamped: 224 px boxes read P4 because that is
# where ImageNet-sized objects were pooled before FPN; between the clamps every RoI spans 2-4 cells
# per 7x7 bin. Outside them the heads get either a blurry upsampling (tiny boxes on P2) or a sparse,
# aliased sampling (huge boxes on P5 with `sampling_ratio=2`). Frameworks agree on the rule but
# differ in float details (eps placement, float32 vs float64) and, more visibly, in Detectron's `+1`.
# minirc reproduces torchvision's float32 version bit for bit (`tests/detection/test_poolers.py`).
