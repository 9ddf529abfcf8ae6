# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 05 · RoIPool vs RoIAlign: the misalignment problem
#
# The heads of Mask R-CNN see an object only through a small, fixed-size crop of the feature map:
# 7x7 for the box head, 14x14 for the mask head. How that crop is cut decides whether a mask can
# line up with the object at all. Fast R-CNN's **RoIPool** rounds twice: the box corners to whole
# feature cells, then every bin to whole cells. Mask R-CNN's **RoIAlign** (He et al. 2017, Sec. 3)
# rounds nothing: it averages bilinear samples taken at exact sub-cell positions.
#
# This notebook makes the difference visible and measurable, with minirc's kernels (bit-exact
# with torchvision's, `tests/ops/test_roi_*.py`):
#
# * **a** the misalignment budget: how far RoIPool's cells are from the box, in image pixels;
# * **b** two different boxes that RoIPool cannot tell apart;
# * **c** what each op actually reads: uneven integer bins vs bilinear samples and their weights;
# * **d** moving a box by fractions of a cell: steps vs a continuous response (and its gradient);
# * **e** what it does to masks: crop a ground-truth mask, paste it back, measure IoU;
# * **f** translation: shift image and box together and see which pooling keeps its output;
# * **g** an explorer: one RoI, any sub-cell offset, box size, stride, pooling and sampling ratio.
#
# Coordinates are continuous (`docs/pixel_model.md`): pixel `j` covers `[j, j+1)` and its value sits
# at `j + 0.5`; a stride-`s` feature cell `j` covers image pixels `[s j, s j + s)`.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

from minirc import Tensor
from minirc.detection import LevelMapper
from minirc.explore import (POOLING_COLORS as COLORS, POOLINGS, cell_average, draw_roi_crop, draw_roi_paste,
                            draw_roi_reads, interactive, mask_iou, paste_bilinear, pool_box, roi_case,
                            roi_explorer_figure, roipool_bin_edges)
from minirc.nn import functional as F
from minirc.ops._bilinear import align_roi_geometry, bilinear_neighbours, sample_coord
from minirc.ops.box_iou import box_iou
from minirc.ops.roi_pool import pool_bin_range, pool_roi_geometry

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100
rng = np.random.default_rng(0)


def rounded_cells(box, stride):
    """RoIPool's region: cells round(x1/s) .. round(x2/s) (inclusive, C rounding), via minirc's own helper."""
    sh, sw, bh, bw = pool_roi_geometry(*np.float32(box), np.float32(1 / stride), 1, 1)
    h = max(round(bh), 1)
    w = max(round(bw), 1)
    return sw, sh, sw + w, sh + h  # cell index range [x_start, x_end) in cells


# %% [markdown]
# ## a. The misalignment budget
#
# Take the box `[37.3, 21.8, 141.7, 119.2]` on a stride-16 map. RoIAlign uses the box as it is,
# `[2.33, 1.36, 8.86, 7.45]` in cell units. RoIPool rounds the corners with C's `round` (half away
# from zero) and treats the ends as inclusive (`width = x2 - x1 + 1` cells, the Fast R-CNN
# convention for integer pixel boxes), so it pools whole cells 2..9 x 1..7: in image pixels
# `[32, 16, 160, 128]` (asserted below). Then it splits that region into 7x7 bins of *whole* cells
# (`[floor(p * bin), ceil((p+1) * bin))`), so bins have uneven sizes and neighbours can share a
# cell. The bars under and beside each map show every bin's extent, one lane per bin so that
# overlaps stay visible: left RoIPool's, right RoIAlign's (whose bins are also drawn on the map).

# %%
STRIDE, BOX = 16, (37.3, 21.8, 141.7, 119.2)
assert rounded_cells(BOX, STRIDE) == (2, 1, 10, 8)  # cells 2..9 x 1..7, i.e. [32, 16, 160, 128] px


def draw_grid(ax, stride, extent):
    for v in range(0, extent + 1, stride):
        ax.axvline(v, color="0.85", lw=0.8, zorder=0)
        ax.axhline(v, color="0.85", lw=0.8, zorder=0)


def bin_bars(ax, xs, ys, colors):
    """Each bin's x-extent as a bar under the map and its y-extent as a bar beside it, one lane per bin."""
    for i, (x0, x1) in enumerate(xs):
        ax.add_patch(Rectangle((x0, 150 + 4 * i), x1 - x0, 3, color=colors[i % 2]))
    for i, (y0, y1) in enumerate(ys):
        ax.add_patch(Rectangle((170 + 4 * i, y0), 3, y1 - y0, color=colors[i % 2]))


fig, axes = plt.subplots(1, 2, figsize=(13, 6))
xs, ys = roipool_bin_edges(BOX, STRIDE, 7)
x0, y0, x1, y1 = (STRIDE * v for v in rounded_cells(BOX, STRIDE))
axes[0].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, color="tab:red", alpha=0.2, lw=0))
bin_bars(axes[0], xs, ys, ("tab:red", "tab:purple"))
wb, hb = (BOX[2] - BOX[0]) / 7, (BOX[3] - BOX[1]) / 7
exact_x = [(BOX[0] + i * wb, BOX[0] + (i + 1) * wb) for i in range(7)]
exact_y = [(BOX[1] + i * hb, BOX[1] + (i + 1) * hb) for i in range(7)]
for (a, _), (c, _) in zip(exact_x[1:], exact_y[1:]):
    axes[1].plot([a, a], [BOX[1], BOX[3]], color="tab:blue", lw=1.2)
    axes[1].plot([BOX[0], BOX[2]], [c, c], color="tab:blue", lw=1.2)
bin_bars(axes[1], exact_x, exact_y, ("tab:blue", "tab:cyan"))
errors = dict(left=x0 - BOX[0], top=y0 - BOX[1], right=x1 - BOX[2], bottom=y1 - BOX[3])
for ax, title in zip(axes, ("RoIPool: rounded region (red) and its whole-cell bins",
                            "RoIAlign: the box itself, 7 equal bins")):
    draw_grid(ax, STRIDE, 176)
    ax.add_patch(Rectangle(BOX[:2], BOX[2] - BOX[0], BOX[3] - BOX[1], fill=False, lw=2.5, ec="black", zorder=3))
    ax.set(xlim=(0, 200), ylim=(180, 0), aspect="equal", title=title, xlabel="image x (px)", ylabel="image y (px)")
axes[0].text(2, 143, "edge error (px): " + ", ".join(f"{k} {v:+.1f}" for k, v in errors.items()), fontsize=9)
fig.suptitle("One RoI on a stride-16 map (grey: cells; black: the box; bars: each bin's extent along x and y)")
plt.show()
print("RoIPool bin widths along x (px):", [int(b - a) for a, b in xs], " along y:", [int(b - a) for a, b in ys])
print(f"RoIAlign bin size (px): {wb:.2f} x {hb:.2f}")
cells_x, cells_y = (x1 - x0) // STRIDE, (y1 - y0) // STRIDE
display(Markdown(
    f"What to see: along x, the {cells_x} rounded cells are cut into 7 bins of {int(xs[0][1] - xs[0][0]) // STRIDE} "
    f"cells ({int(xs[0][1] - xs[0][0])} px) that overlap, where RoIAlign's bins are {wb:.1f} px side by side; along "
    f"y, {cells_y} cells give 7 bins of {int(ys[0][1] - ys[0][0])} px (RoIAlign: {hb:.1f}). RoIPool's region starts "
    f"{-errors['left']:.1f} and {-errors['top']:.1f} px before the box (left, top) and ends {errors['bottom']:.1f} "
    f"and {errors['right']:.1f} px after it (bottom, right: the `+1` of inclusive ends)."))

# %% [markdown]
# How large can these errors get? For random boxes, the histograms show the edge errors of
# RoIPool's region and the worst error over all 8 inner bin edges of a 7x7 pooling, on each FPN
# stride, **for the boxes the level mapper sends to that stride** (`LevelMapper(2, 5)`, as in the
# detector: small boxes on P2, large ones on P5; notebook 06). RoIAlign's error is 0 by
# construction (its bins *are* the box split evenly); its `aligned=False` variant moves what it
# reads by a constant half cell (grey line, see section c).

# %%
def roipool_errors(boxes, stride, size=7):
    """Per box: left-edge error, right-edge error, worst inner-bin-edge error (image px)."""
    out = []
    for box in boxes:
        xs, _ = roipool_bin_edges(box, stride, size)
        exact = box[0] + np.arange(size + 1) * (box[2] - box[0]) / size
        quant = np.array([xs[0][0]] + [b for _, b in xs])  # RoIPool's bin edges (first left, then rights)
        x0, _, x1, _ = rounded_cells(box, stride)
        out.append((stride * x0 - box[0], stride * x1 - box[2], np.abs(quant - exact)[1:-1].max()))
    return np.array(out)


n_boxes = 600 if FAST else 6000
xy = rng.uniform(0, 400, (n_boxes, 2))
side = np.exp(rng.uniform(np.log(16), np.log(800), (n_boxes, 2)))
random_boxes = np.concatenate([xy, xy + side], 1)
box_stride = 2 ** (LevelMapper(2, 5)(random_boxes.astype(np.float32)) + 2)  # the stride each box is pooled at
box_side = np.sqrt(side.prod(axis=1))

fig, axes = plt.subplots(1, 4, figsize=(16, 3.8), sharey=True)
budget = {}
for ax, s in zip(axes, (4, 8, 16, 32)):
    err = roipool_errors(random_boxes[box_stride == s], s)
    budget[s] = err
    bins = np.linspace(-s, 2.25 * s, 53)
    ax.hist(err[:, 0], bins, alpha=0.6, label="left edge")
    ax.hist(err[:, 1], bins, alpha=0.6, label="right edge")
    ax.hist(err[:, 2], bins, alpha=0.6, label="worst inner bin edge |err|")
    ax.axvline(s / 2, color="0.4", ls="--", label="aligned=False shift (s/2)")
    ax.axvline(0, color="tab:blue", lw=2, label="RoIAlign (exact)")
    sides_here = box_side[box_stride == s]
    ax.set(title=f"stride {s}: {len(err)} boxes, sides {sides_here.min():.0f}-{sides_here.max():.0f} px",
           xlabel="error (image px)")
axes[0].set_ylabel("number of boxes")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=9)
fig.suptitle(f"RoIPool's misalignment budget: {n_boxes} random boxes (16-800 px sides), each on the stride "
             "the level mapper picks for it")
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()
print(f"{'stride':>6} {'boxes':>6} {'left edge range':>18} {'right edge range':>18} {'worst bin edge':>15} "
      f"{'as % of side':>12}")
relative = {}
for s, e in budget.items():
    relative[s] = np.max(np.abs(e[:, 2]) / box_side[box_stride == s])
    print(f"{s:6d} {len(e):6d} {e[:, 0].min():8.1f} .. {e[:, 0].max():5.1f} {e[:, 1].min():8.1f} .. "
          f"{e[:, 1].max():5.1f} {e[:, 2].max():14.1f} {100 * relative[s]:11.1f}%")

# %%
display(Markdown(
    "What to see: the budget scales with the stride. Corners land anywhere within half a cell (`±s/2`), the "
    "inclusive end adds one more cell on the right and bottom (`s/2 .. 3s/2`), and the inner bin edges, which "
    "carry both errors plus their own floor/ceil, are off by up to "
    f"{max(budget[s][:, 2].max() / s for s in budget):.1f} cells. On P5 (stride 32) the right edge is off by up to "
    f"{budget[32][:, 1].max():.0f} px, on P2 (stride 4) by up to {budget[4][:, 1].max():.0f} px; since the mapper "
    "gives P3-P5 boxes of a similar size in cells, the worst inner bin edge is a similar fraction of the box side "
    "there: " + ", ".join(f"{100 * v:.0f}% on stride {s}" for s, v in relative.items())
    + ". P2 is worse because every box under 56 px is clamped to it (notebook 06): a 16 px box is 4 cells there."))
assert relative[4] == max(relative.values())

# %% [markdown]
# ## b. Different boxes, identical features
#
# Because of the rounding, every box whose corners round to the same cells gets exactly the same
# RoIPool features. Boxes A `[25, 25, 137, 137]` and B `[39, 39, 151, 151]` differ by 14 px (almost
# a cell; IoU 0.62), yet both round to cells 2..9. Their ground-truth mask targets (the object cut
# out with each box) are clearly different, so a mask head fed by RoIPool is asked to predict two
# different masks from one input. RoIAlign's features move with the box.

# %%
assert rounded_cells((25, 25, 137, 137), 16) == rounded_cells((39, 39, 151, 151), 16) == (2, 2, 10, 10)
assert round(float(box_iou(np.array([[25, 25, 137, 137]], np.float32), np.array([[39, 39, 151, 151]], np.float32))[0, 0]), 2) == 0.62
H = W = 256
yy, xx = np.mgrid[0:H, 0:W] + 0.5  # pixel centres
gt = ((((xx - 96) / 52) ** 2 + ((yy - 84) / 40) ** 2) <= 1).astype(np.float32)  # an ellipse
feat16 = cell_average(gt, 16)
box_a, box_b = (25, 25, 137, 137), (39, 39, 151, 151)
target = {n: pool_box("RoIAlign aligned=True", gt, b, 28, 1) for n, b in (("A", box_a), ("B", box_b))}
crops = {(k, n): pool_box(k, feat16, b, 14, 16) for k in ("RoIPool", "RoIAlign aligned=True")
         for n, b in (("A", box_a), ("B", box_b))}
assert np.array_equal(crops["RoIPool", "A"], crops["RoIPool", "B"])  # bit-identical

fig, axes = plt.subplots(2, 4, figsize=(15, 7.6))
axes[0, 0].imshow(gt, cmap="gray")
for b, c, n in ((box_a, "tab:green", "A"), (box_b, "tab:purple", "B")):
    axes[0, 0].add_patch(Rectangle(b[:2], b[2] - b[0], b[3] - b[1], fill=False, ec=c, lw=2, label=f"box {n}"))
axes[0, 0].legend(loc="lower right", fontsize=8)
axes[0, 0].set(title="object and the two boxes", xlabel="x (px)", ylabel="y (px)")
axes[0, 1].imshow(target["A"], cmap="gray", vmin=0, vmax=1)
axes[0, 1].set(title="mask target for A (28x28)", xlabel="mask x", ylabel="mask y")
axes[0, 2].imshow(target["B"], cmap="gray", vmin=0, vmax=1)
axes[0, 2].set(title="mask target for B (28x28)", xlabel="mask x", ylabel="mask y")
axes[0, 3].imshow(feat16, cmap="gray", vmin=0, vmax=1)
axes[0, 3].set(title="stride-16 feature map (cell means)", xlabel="cell x", ylabel="cell y")
panels = [("RoIPool", "A"), ("RoIPool", "B"), ("RoIAlign aligned=True", "A"), ("RoIAlign aligned=True", "B")]
for ax, (kind, n) in zip(axes[1], panels):
    ax.imshow(crops[kind, n], cmap="gray", vmin=0, vmax=1)
    ax.set(title=f"{kind.split()[0]} features, box {n} (14x14)", xlabel="bin x", ylabel="bin y")
fig.suptitle("Boxes A and B: different targets; RoIPool gives identical features, RoIAlign does not")
fig.tight_layout()
plt.show()
for kind in ("RoIPool", "RoIAlign aligned=True"):
    print(f"{kind:22s} max |features A - features B| = {np.abs(crops[kind, 'A'] - crops[kind, 'B']).max():.3f}")
print(f"mask targets           max |target A - target B|     = {np.abs(target['A'] - target['B']).max():.3f}")

# %% [markdown]
# ## c. What each op reads
#
# A 2x2 pooling of the box `[0.8, 1.3, 5.4, 4.1]` on a small map (spatial scale 1, so image
# pixels = cells; grey squares are cells, dots their centres, where their values sit).
#
# * **RoIPool** rounds the box to cells 1..5 x 1..4 and cuts them into whole-cell bins: the five
#   columns become two bins of three columns that share column 3 (each bin's window has its own
#   colour).
# * **RoIAlign** places `sampling_ratio x sampling_ratio` points per bin at sub-bin centres (black
#   dots) and reads each by bilinear interpolation of its four neighbouring cells. For one point
#   (the red star) the figure draws the four cells it reads, with their weights. With
#   `aligned=True` the four cell centres surround the point; with `aligned=False` they sit half a
#   cell **down and to the right** of it, because the legacy kernel treats cell `j`'s value as
#   sitting at `j` instead of at its centre `j + 0.5`.
#
# The bilinear helper is shared by minirc's CPU and CUDA kernels:

# %%
print(inspect.getsource(bilinear_neighbours.py_func))

# %%
CBOX = (0.8, 1.3, 5.4, 4.1)


def sample_points(box, size, sampling_ratio, aligned):
    """Sample positions (continuous coords, x and y per bin) and, per sample, the 4 cells read + weights."""
    f = np.float32
    sh, sw, bh, bw, gh, gw, _ = align_roi_geometry(*(f(v) for v in box), f(1), aligned, sampling_ratio, size, size)
    shift = 0.5 if aligned else 0.0  # index coordinate -> continuous coordinate of what is read
    pts = []
    for ph in range(size):
        for iy in range(gh):
            y = sample_coord(f(sh), ph, f(bh), iy, gh)
            for pw in range(size):
                for ix in range(gw):
                    x = sample_coord(f(sw), pw, f(bw), ix, gw)
                    nb = bilinear_neighbours(f(y), f(x), 7, 7)
                    pts.append((x + shift, y + shift, nb))
    return pts, (gh, gw)


def draw_cells(ax, n=7):
    for i in range(n):
        for j in range(n):
            ax.add_patch(Rectangle((j, i), 1, 1, fill=False, ec="0.75", lw=0.8))
            ax.plot(j + 0.5, i + 0.5, ".", color="0.6", ms=4)
    ax.add_patch(Rectangle(CBOX[:2], CBOX[2] - CBOX[0], CBOX[3] - CBOX[1], fill=False, ec="black", lw=2))
    ax.set(xlim=(0, n), ylim=(n - 1.5, 0), aspect="equal", xlabel="x (cells)", ylabel="y (cells)")


def draw_align(ax, size, sampling_ratio, aligned, highlight=None):
    draw_cells(ax)
    pts, grid = sample_points(CBOX, size, sampling_ratio, aligned)
    bw, bh = (CBOX[2] - CBOX[0]) / size, (CBOX[3] - CBOX[1]) / size
    for i in range(1, size):
        ax.axvline(CBOX[0] + i * bw, color="tab:blue", lw=1, ls=":")
        ax.axhline(CBOX[1] + i * bh, color="tab:blue", lw=1, ls=":")
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "k.", ms=7)
    if highlight is not None:
        x, y, (ok, yl, xl, yh, xh, w1, w2, w3, w4) = pts[highlight]
        cells = ((yl, xl), (yl, xh), (yh, xl), (yh, xh))
        for (r, c), wgt in zip(cells, (w1, w2, w3, w4)):
            ax.add_patch(Rectangle((c, r), 1, 1, color="tab:orange" if not aligned else "tab:green", alpha=0.3))
            ax.plot([x, c + 0.5], [y, r + 0.5], "-", color="0.3", lw=1)
            ax.text(c + 0.5, r + 0.88, f"{wgt:.2f}", ha="center", fontsize=9, color="0.1")
        ax.plot(x, y, "*", color="red", ms=12)
        # the weighted centre of the four cells: the position whose content the sample really reads
        read = sum(wgt * np.array([c + 0.5, r + 0.5]) for (r, c), wgt in zip(cells, (w1, w2, w3, w4)))
        return grid, read - np.array([x, y])
    return grid


fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
draw_cells(axes[0])
sh, sw, bh, bw = pool_roi_geometry(*np.float32(CBOX), np.float32(1), 2, 2)
bh, bw = np.float32(bh), np.float32(bw)
for ph in range(2):
    for pw in range(2):
        h0, h1 = pool_bin_range(sh, ph, bh, 7)
        w0, w1 = pool_bin_range(sw, pw, bw, 7)
        axes[0].add_patch(Rectangle((w0 + 0.06 * pw, h0 + 0.06 * ph), w1 - w0 - 0.12, h1 - h0 - 0.12, fill=False,
                                    ec=["tab:red", "tab:purple", "tab:brown", "tab:pink"][2 * ph + pw], lw=2.5))
axes[0].set_title("RoIPool: 2x2 whole-cell bins of the rounded box")
_, legacy_offset = draw_align(axes[1], 2, 2, False, highlight=8)
axes[1].set_title("RoIAlign aligned=False, sampling_ratio 2\n(red star's 4 cells + weights)")
_, aligned_offset = draw_align(axes[2], 2, 2, True, highlight=8)
axes[2].set_title("RoIAlign aligned=True, sampling_ratio 2\n(red star's 4 cells + weights)")
fig.suptitle("What a 2x2 pooling of the black box reads (dotted: RoIAlign bin boundaries)")
fig.tight_layout(rect=(0, 0, 1, 0.94))
plt.show()
print("weighted centre of the 4 cells minus the sample point (x, y), in cells: aligned=False",
      legacy_offset.round(6), " aligned=True", aligned_offset.round(6))
assert np.allclose(legacy_offset, 0.5, atol=1e-5) and np.allclose(aligned_offset, 0, atol=1e-5)

# %% [markdown]
# The middle panel is the half-pixel problem in one picture: the legacy kernel's four cells lie down
# and to the right of the point (the weighted centre of the four cells is half a cell right of and
# below it, as printed), so it reads the content of a point half a cell further down-right. The
# sampling grid itself: one point per bin (`sampling_ratio=1`), 2x2 (torchvision's detector), or
# adaptive `ceil(bin size)` per side (`-1`), here 2 rows x 3 columns because the bins are 2.3 cells
# wide and 1.4 cells high.

# %%
fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
for ax, sr in zip(axes, (1, 2, -1)):
    gh, gw = draw_align(ax, 2, sr, True)
    ax.set_title(f"aligned=True, sampling_ratio {sr}: {gh}x{gw} points per bin")
fig.suptitle("RoIAlign's sample points (black) for three sampling ratios")
fig.tight_layout()
plt.show()

# %% [markdown]
# ### The half cell, seen in a crop
#
# Pool a ramp (the image's x coordinate, so every cell holds the x of its centre) and a vertical
# edge at x = 70 px, both at stride 16, over the box `[40, 40, 104, 104]` with 8x8 bins. The exact
# answer for the ramp is the x of each bin's centre (44, 52, ..., 100). `aligned=True` returns it;
# `aligned=False` returns values half a cell (8 px) too large: it reads every sample 8 px to the
# right. On the edge, the crop's 0.5 crossing moves by the same half cell.

# %%
xx_img = np.tile(np.arange(128, dtype=np.float32) + 0.5, (128, 1))  # pixel centres' x
ramp, edge = cell_average(xx_img, 16), cell_average((xx_img > 70).astype(np.float32), 16)
ramp_box = (40.0, 40.0, 104.0, 104.0)
exact = ramp_box[0] + (np.arange(8) + 0.5) * 8  # bin centres' x
fig, axes = plt.subplots(2, 3, figsize=(15, 8.6))
crops = {}
for row, (name, fmap, vmin, vmax) in enumerate([("ramp", ramp, 40, 112), ("edge", edge, 0, 1)]):
    for col, kind in enumerate(POOLINGS[1:]):
        crop = pool_box(kind, fmap, ramp_box, 8, 16, 2)
        crops[name, kind] = crop
        im = axes[row, col].imshow(crop, cmap="viridis", vmin=vmin, vmax=vmax)
        fig.colorbar(im, ax=axes[row, col], fraction=0.046, pad=0.04, label="pooled value")
        axes[row, col].set(title=f"{name}, {kind}", xlabel="bin x", ylabel="bin y")
    ax = axes[row, 2]
    for kind in POOLINGS[1:]:
        ax.plot(exact, crops[name, kind][4], "o-", color=COLORS[kind], label=kind)
    if name == "ramp":
        ax.plot(exact, exact, "k--", label="exact: the bin centre's x")
        ax.set(ylabel="pooled value (x of what was read, px)")
    else:
        ax.axvline(70, color="k", ls="--", label="the edge (x = 70 px)")
        ax.axhline(0.5, color="0.6", lw=0.8)
        ax.set(ylabel="pooled value")
    ax.set(title=f"{name}: row 4 of each crop", xlabel="bin centre x (image px)")
    ax.legend(fontsize=8)
fig.suptitle("Legacy (aligned=False) vs aligned RoIAlign on a ramp and an edge, stride 16, 8x8 bins")
fig.tight_layout(rect=(0, 0, 1, 0.96))
plt.show()
inner = slice(1, 7)  # bins away from the map border, where both read interpolated values
shift = {k: float(np.mean(crops["ramp", k][4, inner] - exact[inner])) for k in POOLINGS[1:]}
display(Markdown(
    f"What to see: on the ramp, `aligned=True` reads each bin centre's x (mean error {abs(shift[POOLINGS[2]]):.1e} px) "
    f"and `aligned=False` reads {shift[POOLINGS[1]]:.2f} px too far right (half a stride-16 cell); on the edge, its "
    "crop switches on half a cell early (the legacy curve crosses 0.5 left of the dashed line)."))

# %% [markdown]
# ## d. Moving a box by fractions of a cell
#
# Slide a 4x4-cell box across a smooth random feature map by 0 to 2 cells and watch one output bin
# (bin (0, 0) of a 2x2 pooling). RoIPool's output is a staircase: it only changes when a rounded
# corner jumps to the next cell, and its derivative w.r.t. the box position is 0 or undefined.
# RoIAlign responds continuously. Below, the gradient maps `d bin / d features` (what the
# backward sends to the feature map) at four positions: RoIPool's goes to a single argmax cell that
# jumps, RoIAlign's is spread over the cells under the bin and slides with the box.

# %%
def smooth_field(h, w, n_blobs, sigma, seed):
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    out = np.zeros((h, w))
    for cx, cy, a in zip(r.uniform(0, w, n_blobs), r.uniform(0, h, n_blobs), r.normal(0, 1, n_blobs)):
        out += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma ** 2))
    return out.astype(np.float32)


field = smooth_field(12, 12, 14, 1.6, seed=3)
shifts = np.linspace(0, 2, 41 if FAST else 161)


def bin_value(kind, dx):
    return pool_box(kind, field, (2 + dx, 2.3, 6 + dx, 6.3), 2, 1)[0, 0]


values = {k: np.array([bin_value(k, d) for d in shifts]) for k in ("RoIPool", "RoIAlign aligned=True")}
fig, axes = plt.subplots(1, 2, figsize=(13, 4))
for k, v in values.items():
    axes[0].plot(shifts, v, label=k, color=COLORS[k])
    axes[1].plot(shifts[:-1], np.diff(v) / np.diff(shifts), label=k, color=COLORS[k])
axes[0].set(title="output bin (0, 0) as the box slides right", xlabel="shift (cells)", ylabel="bin value")
axes[1].set(title="its derivative w.r.t. the shift (finite differences)", xlabel="shift (cells)",
            ylabel="d bin / d shift")
axes[0].legend()
plt.show()

# %%
def gradient_map(kind, dx):
    """d(bin (0,0)) / d(feature map), through minirc's autograd wrappers."""
    t = Tensor(field[None, None], requires_grad=True)
    box = np.array([[0, 2 + dx, 2.3, 6 + dx, 6.3]], np.float32)
    out = F.roi_pool(t, box, 2) if kind == "RoIPool" else F.roi_align(t, box, 2, 1.0, 2, aligned=True)
    g = np.zeros(out.shape, np.float32)
    g[0, 0, 0, 0] = 1
    out.backward(g)
    return t.grad[0, 0]


def show_shift(dx, axes_row=None):
    """The two gradient maps at one shift; each row shares one colour scale (RoIPool 0..1, RoIAlign 0..0.25)."""
    if axes_row is None:
        fig, axes_row = plt.subplots(1, 2, figsize=(9, 4))
        fig.suptitle(f"Where the gradient of bin (0, 0) lands, shift {dx:.2f} cells")
    for ax, kind in zip(axes_row, ("RoIPool", "RoIAlign aligned=True")):
        im = ax.imshow(gradient_map(kind, dx), cmap="magma", vmin=0, vmax=0.25 if kind != "RoIPool" else 1,
                       extent=(0, 12, 12, 0))
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="d bin / d cell")
        ax.add_patch(Rectangle((2 + dx, 2.3), 2, 2, fill=False, ec="cyan", lw=1.5))
        ax.set(title=f"{kind.split()[0]}, shift {dx:.2f}", xlabel="x (cells)", ylabel="y (cells)",
               xlim=(0, 7), ylim=(6.5, 0))


fig, axes = plt.subplots(2, 4, figsize=(17, 8.6))
for col, dx in enumerate((0.0, 0.25, 0.5, 0.75)):
    show_shift(dx, axes[:, col])
fig.suptitle("Where the gradient of bin (0, 0) lands (cyan: the bin), as the box moves by quarter cells")
fig.tight_layout()
plt.show()
nonzero = {k: [int((gradient_map(k, dx) != 0).sum()) for dx in (0.0, 0.25, 0.5, 0.75)]
           for k in ("RoIPool", "RoIAlign aligned=True")}
print("cells with a non-zero gradient at shifts 0, 0.25, 0.5, 0.75:", nonzero)
assert max(nonzero["RoIPool"]) == 1 and min(nonzero["RoIAlign aligned=True"]) > 1

# %% [markdown]
# With `ipywidgets` installed, the slider below redraws the gradient maps for any shift (the static
# small multiples above show the same drawing).

# %%
interactive(lambda shift: show_shift(shift), shift=(0.0, 2.0, 0.05, 0.0))

# %% [markdown]
# ## e. The effect on masks
#
# An idealised experiment isolates the pooling. For ellipses of many sizes at random sub-pixel
# positions: take the ground-truth mask, build an "ideal" stride-`s` feature map (each cell is the
# fraction of its `s x s` pixels inside the object), crop it to 28x28 with each pooling (a mask
# head that reproduced its input perfectly would predict exactly this), paste the crop back into
# the image and compare with the ground truth (mask IoU after thresholding at 0.5).
#
# Pasting is the inverse crop: image pixel centre `x + 0.5` maps to mask coordinate
# `(x + 0.5 - x1) * 28 / w`, sampled bilinearly. That *is* RoIAlign with `aligned=True` and one
# sample per output pixel, run on the 28x28 mask (with a ring of zeros around it) and the image
# window as the "box" -- so minirc's `roi_align` does the paste too
# (`minirc.explore.paste_bilinear`). The detector's own paste, `minirc.model.paste`, follows
# torchvision's integer conventions and adds up to a pixel of its own error; here we want only
# the pooling's.
#
# First the masks themselves: a disc inscribed in its box, the box corner half a cell past a cell
# corner, pooled to the mask head's 14x14 and pasted back. The lime outline is the ground truth,
# the coloured outlines the pasted masks' 0.5 contours, one per pooling.

# %%
mask_cells, mask_strides = (2, 4, 8), (8, 16)  # disc diameters in cells of the stride
fig, axes = plt.subplots(len(mask_strides), len(mask_cells), figsize=(15, 9.6))
mask_ious = {}
for row, s in enumerate(mask_strides):
    for col, size in enumerate(c * s for c in mask_cells):
        ax = axes[row, col]
        for kind in POOLINGS:
            case = roi_case(offset=0.5, box_size=size, stride=s, kind=kind, sampling_ratio=2, output_size=14)
            draw_roi_paste(ax, case, show_image=False)
            mask_ious[s, size, kind] = case["iou"]
        ax.imshow(case["gt"], cmap="Greys", vmin=0, vmax=4, extent=(0, case["gt"].shape[1], case["gt"].shape[0], 0))
        ax.set_title(f"{size} px disc ({size // s} cells) on stride {s}: IoU "
                     + " / ".join(f"{mask_ious[s, size, k]:.2f}" for k in POOLINGS), fontsize=9)
for kind in POOLINGS:
    axes[0, 0].plot([], [], color=COLORS[kind], label=kind)
axes[0, 0].plot([], [], color="lime", label="ground truth")
axes[0, 0].legend(fontsize=7, loc="lower right")
fig.suptitle("Pasted 0.5 contours of each pooling (IoUs in the order RoIPool / aligned=False / aligned=True)")
fig.tight_layout(rect=(0, 0, 1, 0.96))
plt.show()
aligned_ious = [v for (s, n, k), v in mask_ious.items() if k == POOLINGS[2]]
assert all(mask_ious[key[:2] + (POOLINGS[2],)] >= v for key, v in mask_ious.items())  # aligned is best everywhere
display(Markdown(
    "What to see: the blue (aligned) contour follows the lime outline, rounded off where the object is only two "
    "cells wide; the orange (legacy) one comes out shifted up and to the left -- it read the content half a cell "
    "down-right of where it pasted it -- and the red (RoIPool) one is blocky and pulled towards the rounded top-left "
    f"corner. Aligned RoIAlign reaches IoU {min(aligned_ious):.2f}-{max(aligned_ious):.2f} over the panels; the other "
    f"two fall to {min(mask_ious[key] for key in mask_ious if key[2] == POOLINGS[1]):.2f} (legacy) and "
    f"{min(mask_ious[key] for key in mask_ious if key[2] == POOLINGS[0]):.2f} (RoIPool) on two-cell objects."))

# %% [markdown]
# Now many ellipses, of many sizes at random sub-pixel positions, cropped to 28x28. The dashed line
# crops the full-resolution mask instead of a feature map: the best a 28x28 mask can do.

# %%
def ellipse(size, r):
    H = W = 320
    cx, cy = r.uniform(H / 2 - 8, H / 2 + 8, 2)
    a, b = size / 2, size / 2 * r.uniform(0.55, 1.0)
    t = r.uniform(0, np.pi)
    yy, xx = np.mgrid[0:H, 0:W] + 0.5
    u, v = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t), -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
    m = (u / a) ** 2 + (v / b) ** 2 <= 1
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return m, (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)  # tight box around the pixel squares


sizes = [16, 32, 64, 128, 256] if FAST else [16, 24, 32, 48, 64, 96, 128, 192, 256]
reps = 2 if FAST else 6
strides = (4, 8, 16, 32)
iou = {(k, s): np.zeros((len(sizes), reps)) for k in POOLINGS + ("full-res crop",) for s in strides}
r = np.random.default_rng(1)
for i, size in enumerate(sizes):
    for j in range(reps):
        m, box = ellipse(size, r)
        full = mask_iou(paste_bilinear(pool_box("RoIAlign aligned=True", m.astype(np.float32), box, 28, 1), box, *m.shape) >= 0.5, m)
        for s in strides:
            iou["full-res crop", s][i, j] = full
            feat = cell_average(m.astype(np.float32), s)
            for k in POOLINGS:
                iou[k, s][i, j] = mask_iou(paste_bilinear(pool_box(k, feat, box, 28, s), box, *m.shape) >= 0.5, m)

fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), sharey=True)
for ax, s in zip(axes, strides):
    for k in POOLINGS:
        ax.plot(sizes, iou[k, s].mean(1), "o-", color=COLORS[k], label=k)
    ax.plot(sizes, iou["full-res crop", s].mean(1), "k--", label="28x28 crop of the full-res mask")
    ax.set(xscale="log", title=f"stride {s}", xlabel="object size (px)", ylim=(0, 1))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sizes, [str(v) for v in sizes], fontsize=8)
axes[0].set_ylabel("mask IoU after crop + paste")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, fontsize=9)
fig.suptitle("How much of a mask survives each pooling (ideal features; mean over random positions)")
fig.tight_layout(rect=(0, 0.08, 1, 1))
plt.show()
print("mean IoU, objects of 32 px:", {f"{k} / s={s}": round(float(iou[k, s][sizes.index(32)].mean()), 3)
                                     for k in POOLINGS for s in (8, 16)})

# %%
mean_iou = {key: v.mean(1) for key, v in iou.items()}
big = sizes.index(max(sizes))
eight_cells = {s: [i for i, v in enumerate(sizes) if v < 8 * s] for s in strides}
display(Markdown(
    "What to see: RoIAlign with `aligned=True` tracks the full-resolution bound (dashed) until the object is only "
    "a few cells wide. RoIPool loses much of every object smaller than about eight cells: its mean IoU on those is "
    + ", ".join(f"{np.mean(mean_iou['RoIPool', s][eight_cells[s]]):.2f} at stride {s}" for s in strides if eight_cells[s])
    + f", and on the {max(sizes)} px objects it reaches "
    + ", ".join(f"{mean_iou['RoIPool', s][big]:.2f}" for s in strides)
    + " against the bound's " + ", ".join(f"{mean_iou['full-res crop', s][big]:.2f}" for s in strides)
    + ". `aligned=False` sits in between: its half-cell shift costs little on large objects and a lot on small ones "
    f"(at 32 px on stride 8: {mean_iou[POOLINGS[1], 8][sizes.index(32)]:.2f} against aligned's "
    f"{mean_iou[POOLINGS[2], 8][sizes.index(32)]:.2f})."))

# %% [markdown]
# A trained network can learn to compensate the legacy kernel's constant shift (detectron2's
# observation), while RoIPool's box-dependent rounding cannot be learned away. In the detector, FPN
# keeps small objects on fine levels (notebook 06), which is exactly why the left of each panel
# matters.

# %% [markdown]
# ## f. Translation: shift image and box together
#
# A detector should be (nearly) translation-equivariant: move the image content and the box by the
# same `d` pixels and the pooled features should not change. Here the image is a smooth analytic
# pattern, evaluated at pixel centres shifted by `d`, its stride-16 feature map is the cell average,
# and the box moves with it. The plot shows the relative change of the 7x7 output vs `d`.

# %%
def analytic_image(d, n=256):
    yy, xx = np.mgrid[0:n, 0:n] + 0.5 - d  # content moves by +d
    r = np.random.default_rng(7)
    out = np.zeros((n, n))
    for cx, cy, a, sg in zip(r.uniform(40, 216, 16), r.uniform(40, 216, 16), r.normal(0, 1, 16), r.uniform(10, 25, 16)):
        out += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sg ** 2))
    return out.astype(np.float32)


box0 = np.array([70.0, 58.0, 166.0, 170.0])
ds = np.arange(0, 33, 2 if FAST else 1)
ref = {k: pool_box(k, cell_average(analytic_image(0), 16), box0, 7, 16) for k in POOLINGS}
change = {k: [] for k in POOLINGS}
for d in ds:
    feat = cell_average(analytic_image(d), 16)
    for k in POOLINGS:
        out = pool_box(k, feat, box0 + d, 7, 16)
        change[k].append(np.abs(out - ref[k]).max() / np.abs(ref[k]).max())
fig, ax = plt.subplots(figsize=(9, 4))
for k in POOLINGS:
    ax.plot(ds, change[k], "o-", ms=3, color=COLORS[k], label=k)
for v in (16, 32):
    ax.axvline(v, color="0.7", ls=":")
ax.set(title="Output change when image and box move together (stride 16)", xlabel="shift d (image px)",
       ylabel="max |out(d) - out(0)| / max |out(0)|")
ax.legend()
plt.show()
for k in POOLINGS:
    sub = [c for d, c in zip(ds, change[k]) if d % 16]
    print(f"{k:24s} mean change at sub-cell shifts {np.mean(sub):.3f}; at d = 16, 32: "
          f"{change[k][list(ds).index(16)]:.1e}, {change[k][list(ds).index(32)]:.1e}")
sub_cell = {k: float(np.mean([c for d, c in zip(ds, change[k]) if d % 16])) for k in POOLINGS}
display(Markdown(
    "What to see: at whole-cell shifts (16, 32 px) every pooling returns its output at d = 0 again, to float "
    "rounding (the feature map and the rounded box move by exactly one cell). In between, RoIPool's output jumps "
    f"(mean change {sub_cell['RoIPool']:.2f}) as the rounded box stays put and then leaps a cell, while both "
    f"RoIAlign variants change by {sub_cell[POOLINGS[1]]:.3f} and {sub_cell[POOLINGS[2]]:.3f}, only as much as the "
    "stride-16 cell averages themselves do: their error is the feature map's, not the pooling's. Aligned or not "
    "hardly matters here -- a constant half-cell shift is itself translation invariant; it shows up only against "
    "the ground truth (section e)."))

# %% [markdown]
# ## g. Explore one RoI
#
# `minirc.explore.roi_explorer_figure` draws one RoI three ways: what the pooling reads (RoIPool's
# whole-cell bins, or the points whose content RoIAlign's samples read), the pooled crop of the
# ideal feature map, and the crop pasted back against the ground truth. The object is a disc
# inscribed in the box; the box corner sits `offset` cells past a cell corner. Static version
# first: the three poolings (rows) for a 40 px box on stride 16, half a cell off the grid.

# %%
fig, axes = plt.subplots(3, 3, figsize=(15, 13))
explorer_ious = {}
for row, kind in enumerate(POOLINGS):
    case = roi_case(offset=0.5, box_size=40, stride=16, kind=kind, sampling_ratio=2, output_size=14)
    explorer_ious[kind] = case["iou"]
    draw_roi_reads(axes[row, 0], case)
    draw_roi_crop(axes[row, 1], case)
    draw_roi_paste(axes[row, 2], case)
fig.suptitle("One RoI (40 px disc, stride 16, offset 0.5 cell), three poolings: reads, 14x14 crop, paste "
             "(lime: ground truth)")
fig.tight_layout(rect=(0, 0, 1, 0.97))
plt.show()
display(Markdown(
    "What to see: RoIPool's bins (outlines) start at the rounded corner and overlap; the legacy kernel's reads "
    "(dots) are the aligned ones moved half a cell down-right, past the disc's lower-right edge, so its pasted "
    "mask comes out shifted up-left; the pasted masks reach IoU "
    + ", ".join(f"{v:.2f} ({k})" for k, v in explorer_ious.items()) + "."))

# %% [markdown]
# And the paste alone for a sweep of sub-cell offsets (columns) with each pooling (rows): RoIAlign
# aligned stays put while the others change with the offset.

# %%
offsets = (0.0, 0.25, 0.5, 0.75)
fig, axes = plt.subplots(3, 4, figsize=(17, 12.5))
sweep = {}
for row, kind in enumerate(POOLINGS):
    for col, off in enumerate(offsets):
        case = roi_case(offset=off, box_size=40, stride=16, kind=kind, sampling_ratio=2, output_size=14)
        sweep[kind, off] = case["iou"]
        draw_roi_paste(axes[row, col], case)
        axes[row, col].set_title(f"{kind}, offset {off:g}: IoU {case['iou']:.3f}", fontsize=9)
fig.suptitle("Pasted masks of a 40 px disc on stride 16 as its box moves by quarter cells (lime: ground truth)")
fig.tight_layout(rect=(0, 0, 1, 0.97))
plt.show()
display(Markdown(
    "What to see: over the four offsets the IoU ranges " + "; ".join(
        f"{min(sweep[k, o] for o in offsets):.2f}-{max(sweep[k, o] for o in offsets):.2f} for {k}" for k in POOLINGS)
    + "."))

# %% [markdown]
# With `ipywidgets` installed, the controls below redraw the three panels for any sub-cell offset,
# box size, stride, pooling and sampling ratio (`-1`: adaptive, `ceil(bin size)` samples per side).
# RoIWarp (SPP-net/Fast R-CNN's warp) is not in `minirc.ops`, so it is not among the poolings.

# %%
interactive(roi_explorer_figure, offset=(0.0, 0.95, 0.05, 0.5), box_size=(8.0, 128.0, 4.0, 40.0),
            stride=[16, 4, 8, 32], kind=list(POOLINGS[::-1]), sampling_ratio=[2, 1, 4, -1], output_size=[14, 7, 28])

# %% [markdown]
# **Takeaways.** RoIPool's two roundings cost up to `1.5 s` pixels per edge (section a), merge
# different boxes (b), read uneven whole-cell bins (c), respond in steps with a jumping gradient
# (d), lose much of small masks (e, g) and break sub-cell translation equivariance (f). RoIAlign
# fixes all of it by sampling at exact positions; `aligned=True` additionally puts the samples where
# the pixel model says the values are (`docs/pixel_model.md`).
