# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 10 · Evaluation: how COCO's AP is computed
#
# "Mask AP 34.6" compresses thousands of detections into one number. This notebook takes the
# number apart, step by step, with `minirc.evaluation` -- a from-scratch implementation of the
# COCO rules that returns exactly what `pycocotools` returns (`docs/evaluation.md`):
#
# 1. **IoU** between every detection and every ground-truth object of an image and class;
# 2. **greedy matching**: detections, best score first, claim the free object they overlap most;
# 3. the **precision-recall curve** over all images, its envelope and the **101-point** average;
# 4. **AP across IoU thresholds** 0.50:0.95, object sizes, and the 12 summary numbers.
#
# Until the demo model of `python -m minirc demo` has been trained, the "model" here is a stand-in:
# the ground truth, jittered and degraded (shifted boxes, eroded masks, misses, duplicates, wrong
# classes, false alarms). A marked cell below switches to the demo model's real predictions when
# `runs/demo/checkpoint.npz` exists.

# %%
import inspect
import os
import pathlib

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.patches import Rectangle
from scipy import ndimage

import minirc
from minirc.data import ShapesDataset
from minirc.evaluation import (box_iou_xywh, dataset_to_coco, evaluate_image, plot_per_class_ap,
                               plot_precision_recall, predictions_to_coco_results, rle_iou, run_coco_eval)
from minirc.evaluation.accumulate import interpolate, precision_recall
from minirc.evaluation.matching import greedy_match_numpy
from minirc.visualize import to_hwc

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 80
rng = np.random.default_rng(0)

# %% [markdown]
# ## Ground truth and a stand-in model
#
# Held-out images from the synthetic shapes set, turned into a COCO ground-truth dict with
# `dataset_to_coco` (boxes as `[x, y, w, h]`, masks as compressed RLE, `area` = mask pixels).

# %%
dataset = ShapesDataset(num_images=16 if FAST else 40, image_size=96, seed=7, max_objects=4)
gt = dataset_to_coco(dataset)
print(f"{len(gt['images'])} images, {len(gt['annotations'])} objects, classes:",
      [c["name"] for c in gt["categories"]])


def shifted(mask, dx, dy):
    """The mask moved by (dx, dy) whole pixels, zeros shifted in."""
    out = np.zeros_like(mask)
    h, w = mask.shape
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def fake_predictions(image, target, rng):
    """Jittered ground truth: a score that falls with the jitter, some misses, duplicates, errors."""
    h, w = image.shape[1:]
    boxes, labels, scores, masks = [], [], [], []
    for box, label, mask in zip(target["boxes"], target["labels"], target["masks"]):
        if rng.random() < 0.1:                                   # missed object
            continue
        size = max(box[2] - box[0], box[3] - box[1])
        for copy in range(1 + (rng.random() < 0.15)):            # sometimes a duplicate
            jitter = rng.normal(0, 0.07 + 0.1 * copy, 2) * size
            dx, dy = (int(round(v)) for v in jitter)
            m = shifted(mask, dx, dy)
            if rng.random() < 0.5:
                m = ndimage.binary_erosion(m).astype(np.uint8)
            quality = np.exp(-np.hypot(*jitter) / size * 4)      # 1 = perfect placement
            boxes.append(box + [dx, dy, dx, dy] + rng.normal(0, 0.03, 4) * size)
            labels.append(label if rng.random() < 0.9 else rng.integers(1, dataset.num_classes))
            scores.append(np.clip(0.3 + 0.6 * quality + rng.normal(0, 0.1), 0.05, 0.99))
            masks.append(m)
    for _ in range(rng.integers(0, 3)):                          # false alarms on the background
        x, y, s = rng.uniform(0, w - 20), rng.uniform(0, h - 20), rng.uniform(8, 20)
        m = np.zeros((h, w), np.uint8)
        m[int(y):int(y + s), int(x):int(x + s)] = 1
        boxes.append(np.array([x, y, x + s, y + s]))
        labels.append(rng.integers(1, dataset.num_classes))
        scores.append(rng.uniform(0.05, 0.6))
        masks.append(m)
    return {"boxes": np.array(boxes, np.float32).reshape(-1, 4), "labels": np.array(labels, np.int64),
            "scores": np.array(scores, np.float32), "masks": np.array(masks, np.uint8).reshape(-1, h, w)}


items = [dataset[i] for i in range(len(dataset))]
predictions = [fake_predictions(im, t, rng) for im, t in items]
image_ids = [t["image_id"] for _, t in items]
source = "stand-in predictions (jittered ground truth)"

# %% [markdown]
# ### ▶ The demo model's own predictions (used when `runs/demo/checkpoint.npz` exists)
#
# After `python -m minirc demo --out runs/demo`, this cell rebuilds the demo's held-out images
# from the seed stored in the checkpoint and replaces the stand-in with the trained model's
# predictions. Without the checkpoint it does nothing.

# %%
DEMO = pathlib.Path("..") / "runs" / "demo" / "checkpoint.npz"
if DEMO.exists():
    from minirc.train.checkpoint import load_model
    from minirc.train.demo import TEST_SEED_OFFSET
    from minirc.train.evaluate import predict_dataset

    model, ckpt = load_model(DEMO)
    cfg = ckpt["extra"]["demo"]
    dataset = ShapesDataset(12 if FAST else cfg["test_images"], image_size=cfg["image_size"],
                            classes=tuple(cfg["classes"]), max_objects=cfg["max_objects"],
                            seed=cfg["train"]["seed"] + TEST_SEED_OFFSET)
    gt = dataset_to_coco(dataset)
    items = [dataset[i] for i in range(len(dataset))]
    predictions, image_ids, _ = predict_dataset(model, dataset)
    source = f"the demo model ({DEMO})"
print("evaluating:", source)

# %% [markdown]
# The predictions become a COCO results list (one entry per detection: image id, category id,
# score, `bbox` `[x, y, w, h]`, `segmentation` as RLE), exactly what a COCO results file holds.

# %%
results_bbox = predictions_to_coco_results(predictions, image_ids, iou_type="bbox")
results_segm = predictions_to_coco_results(predictions, image_ids, iou_type="segm")
print(len(results_bbox), "detections; the first one:", results_bbox[0])

# %% [markdown]
# ## 1. The IoU matrix of one image and one class
#
# Matching happens per image **and per class**: a circle detection is only ever compared with
# circle objects. Rows are the detections sorted by score, columns the ground-truth objects.
# COCO boxes are `[x, y, w, h]` and the box area is `w * h` (no `+1`).

# %%
def pick_image(min_dets=3):
    """An image/class pair with several detections, for the illustrations."""
    for i, (_, t) in enumerate(items):
        for c in np.unique(t["labels"]):
            if (predictions[i]["labels"] == c).sum() >= min_dets and (t["labels"] == c).sum() >= 2:
                return i, int(c)
    return 0, int(items[0][1]["labels"][0]) if len(items[0][1]["labels"]) else 1


i, cls = pick_image()
image, target = items[i]
pred = predictions[i]
iid = image_ids[i]
gts = [a for a in gt["annotations"] if a["image_id"] == iid and a["category_id"] == cls]
dets = sorted([r for r in results_bbox if r["image_id"] == iid and r["category_id"] == cls],
              key=lambda r: -r["score"])
dets_segm = sorted([r for r in results_segm if r["image_id"] == iid and r["category_id"] == cls],
                   key=lambda r: -r["score"])
box_ious = box_iou_xywh([d["bbox"] for d in dets], [g["bbox"] for g in gts])
mask_ious = rle_iou([d["segmentation"] for d in dets_segm], [g["segmentation"] for g in gts])

fig, axes = plt.subplots(1, 3, figsize=(13, 4.3), gridspec_kw={"width_ratios": [1.3, 1, 1]})
axes[0].imshow(to_hwc(image), extent=(0, image.shape[2], image.shape[1], 0))
label_box = {"facecolor": "black", "alpha": 0.6, "pad": 1, "edgecolor": "none"}
for g, a in enumerate(gts):
    x, y, w, h = a["bbox"]
    axes[0].add_patch(Rectangle((x, y), w, h, fill=False, ec="lime", lw=2))
    axes[0].text(x, y, f"gt {g}", color="lime", fontsize=9, va="bottom", bbox=label_box)
for d, r in enumerate(dets):
    x, y, w, h = r["bbox"]
    axes[0].add_patch(Rectangle((x, y), w, h, fill=False, ec="yellow", lw=1.2, ls="--"))
    axes[0].text(x + w if d % 2 else x, y + h, f"d{d}", color="yellow", fontsize=8,
                 ha="right" if d % 2 else "left", va="top", bbox=label_box)   # alternate corners
axes[0].set(title=f"image {iid}, class '{dataset.class_names[cls]}'", xlabel="x (px)", ylabel="y (px)")
for ax, m, name in ((axes[1], box_ious, "box IoU"), (axes[2], mask_ious, "mask IoU")):
    ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
    for (r, c), v in np.ndenumerate(m):
        ax.text(c, r, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    ax.set(title=name, xlabel="ground-truth object", ylabel="detection (score)",
           xticks=range(len(gts)), yticks=range(len(dets)),
           yticklabels=[f"d{d} ({r['score']:.2f})" for d, r in enumerate(dets)])
plt.tight_layout()
plt.show()

# %% [markdown]
# Green: ground truth; dashed yellow: detections with their scores. The two matrices agree on who
# overlaps whom, but mask IoU is lower than box IoU: a mask that is off by a pixel (shifted, too thin
# or too fat at its border) loses pixels all along its border, while its box barely changes. That
# is why mask AP is usually below box AP.

# %% [markdown]
# ## 2. Greedy matching
#
# For each IoU threshold `t` separately: take the detections from the highest score down; each
# claims the **still free** object with the highest IoU, if that IoU is `>= t`. A claimed object is
# gone for everyone after. Detections that claim nothing are false positives; objects never
# claimed are misses. Nothing is optimised globally: a confident but sloppy detection can take an
# object that a better-placed, lower-scored one would have matched. Here is the whole rule (the
# Numba-compiled twin runs the same source):

# %%
print(inspect.getsource(greedy_match_numpy))

# %%
thresholds = np.array([0.5, 0.75, 0.9])
areas = [g["area"] for g in gts]
rec = evaluate_image(box_ious, areas, [g["iscrowd"] for g in gts], [d["bbox"][2] * d["bbox"][3] for d in dets],
                     (0, 1e10), thresholds)
print("detection:        " + "  ".join(f"d{d}" for d in range(len(dets))))
for t, row in zip(thresholds, rec["match"]):
    print(f"matched gt @ {t:.2f}: " + "  ".join(f"{'g' + str(m) if m >= 0 else '--':>2}" for m in row))

# %% [markdown]
# Each row is one threshold: `gN` means the detection became a true positive by claiming object N,
# `--` that it is a false positive at that threshold. Raising the threshold can only turn matches
# into misses, never the other way round.
#
# Two refinements of the rule (`minirc/evaluation/matching.py`): **crowd** regions
# (`iscrowd=1`) can absorb any number of detections, which are then *ignored* (neither right nor
# wrong; their IoU is intersection / area of the detection); and objects outside the **area
# range** being evaluated are ignored too, as are unmatched detections outside it.

# %% [markdown]
# ## 3. Precision, recall and the 101-point interpolation
#
# Now pool one class over **all** images. Sort every detection of that class by score; walking
# down the list, `recall = TP / (number of objects)` and `precision = TP / (TP + FP)`. The raw curve
# zig-zags: every false positive drops precision. COCO replaces it by its **envelope** (the best
# precision at this or any higher recall) and reads that at 101 recall points 0, 0.01, ..., 1.
# **AP is the mean of those 101 values.**

# %%
res_box = run_coco_eval(gt, results_bbox, "bbox")
res_segm = run_coco_eval(gt, results_segm, "segm")
k = res_box.category_ids.index(cls)
t = 0                                         # IoU 0.50
recs = [res_box.per_image[k, 0, n] for n in range(len(res_box.image_ids)) if (k, 0, n) in res_box.per_image]
scores = np.concatenate([r["scores"] for r in recs])
order = np.argsort(-scores, kind="mergesort")
matched = np.concatenate([r["matched"][t] for r in recs])[order]
ignored = np.concatenate([r["det_ignore"][t] for r in recs])[order]
n_pos = sum(int((~r["gt_ignore"]).sum()) for r in recs)
rc, pr = precision_recall(matched, ignored, n_pos)
q, _ = interpolate(rc, pr, scores[order], res_box.params.recall_thresholds)
envelope = np.maximum.accumulate(pr[::-1])[::-1]
assert np.isclose(q.mean(), res_box.per_class_ap(iou=0.5)[dataset.class_names[cls]])

fig, ax = plt.subplots(figsize=(6, 4))
ax.plot(rc, pr, ".-", color="0.6", label="raw precision after each detection")
ax.step(rc, envelope, where="post", color="tab:blue", label="envelope (interpolated precision)")
ax.plot(res_box.params.recall_thresholds, q, "o", ms=3, color="tab:orange",
        label=f"101 recall points: mean = AP50 = {q.mean():.3f}")
ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="recall", ylabel="precision",
       title=f"box precision-recall, class '{dataset.class_names[cls]}', IoU 0.50")
ax.legend(loc="lower left", fontsize=8)
plt.show()

# %% [markdown]
# Grey: the raw curve, one point per detection. Blue: the envelope, which never goes up. Orange:
# the 101 samples that are averaged; recall points beyond the last one reached (the misses) count
# as precision 0, so missing objects costs AP as much as false alarms do.

# %% [markdown]
# ## 4. AP across IoU thresholds, object sizes, and the 12 numbers
#
# "AP" on its own is the mean over the ten thresholds 0.50, 0.55, ..., 0.95 (and over classes):
# it rewards detections that are not only found but placed precisely. AP50 is the lenient
# PASCAL-VOC-style number, AP75 a strict one.

# %%
thr = res_box.params.iou_thresholds
fig, ax = plt.subplots(figsize=(6, 3.5))
for res, name in ((res_box, "box"), (res_segm, "mask")):
    per_t = [res.precision[j, :, :, 0, -1][res.precision[j, :, :, 0, -1] > -1].mean() for j in range(len(thr))]
    ax.plot(thr, per_t, "o-", label=f"{name}: mean over thresholds = AP = {res.stats['AP']:.3f}")
ax.set(xlabel="IoU threshold", ylabel="AP at that threshold", ylim=(0, 1.05),
       title=f"AP falls as the IoU threshold rises ({source.split(' (')[0]})")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# Both curves fall as the threshold rises: at 0.5 a roughly placed detection still counts, at 0.95
# almost nothing does. The mask curve falls faster -- small shifts cost masks more IoU than boxes.
#
# Object size: **APs / APm / APl** evaluate only objects with `area` below 32², between 32² and
# 96², and above 96² pixels (the ground truth's `area` field; others are ignored). **AR1 / AR10 /
# AR100** are the recall (averaged over thresholds) when keeping 1, 10, 100 detections per image.
# A number is **-1** when no ground truth falls in its range at all (the cell below says whether
# that happens here).

# %%
print(res_box.summary())
print(res_segm.summary())
largest = max(a["area"] for a in gt["annotations"])
img_h, img_w = items[0][0].shape[1:]
display(Markdown(
    f"Here the largest object covers {largest:.0f} pixels of a {img_h}x{img_w} image"
    + (", below 96² = 9216, so APl and ARl are -1." if largest <= 96 ** 2 else ", so APl and ARl are defined.")))

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
plot_precision_recall(res_segm, ious=(0.5, 0.75, 0.9), ax=axes[0])
plot_per_class_ap(res_segm, ax=axes[1])
plt.tight_layout()
plt.show()

# %% [markdown]
# Left: the library's precision-recall helper for the masks (mean over classes), one curve per IoU
# threshold; the area under each is that threshold's AP. Right: mask AP per class, to see which
# class drags the mean down.
#
# ## 5. Cross-check with pycocotools (optional)
#
# When `pycocotools` is installed, the same results files give the same 12 numbers.

# %%
try:
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError:
    print("pycocotools is not installed: skipping the cross-check")
else:
    for iou_type, results, mine in (("bbox", results_bbox, res_box), ("segm", results_segm, res_segm)):
        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO()
            coco_gt.dataset = copy.deepcopy(gt)
            coco_gt.createIndex()
            ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(results)), iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        diff = np.abs(np.array(list(mine.stats.values())) - ev.stats).max()
        print(f"{iou_type}: largest difference to pycocotools over the 12 numbers = {diff}")
