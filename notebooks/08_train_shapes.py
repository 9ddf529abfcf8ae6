# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 08 · Training Mask R-CNN on synthetic shapes
#
# Every earlier notebook looked at one stage. Here they all run together: we train a small Mask R-CNN
# from random weights on the synthetic shapes data, watch its five losses fall, look at its
# predictions on images it never saw, and open up the mask branch: the 28x28 probability grid each
# detection gets, and how it is pasted back into the image.
#
# Everything is `minirc` code; this notebook only calls it. `MINIRC_FAST=1` (CI) trains the `tiny`
# network for a few iterations, which shows the mechanics but not a good model; without it the
# notebook trains the demo network with the demo's recipe for 300 iterations (the demo itself,
# `python -m minirc demo`, runs 1500: the learning-rate schedule scales with the length).

# %%
# %matplotlib inline
import inspect
import os
import pathlib
import time

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

import minirc
from minirc import random as mrandom
from minirc.train import Trainer, plot_losses
from minirc.train.demo import build, demo_config
from minirc.train.evaluate import evaluate_predictions, predict_dataset
from minirc.visualize import draw_instances, show_predictions_vs_ground_truth

FAST = os.environ.get("MINIRC_FAST") == "1"
cfg = demo_config("tiny" if FAST else "shapes_demo")
if FAST:
    cfg.train.iters, cfg.train.budget_seconds, cfg.train.batch_size = 6, None, 2
    cfg.test_images = 4
else:
    cfg.train.iters, cfg.train.budget_seconds = 300, None  # a fifth of the demo's 1500 iterations
model, train_ds, test_ds = build(cfg, seed=0)
print(train_ds)
print(test_ds)

# %% [markdown]
# ## 1. The data
#
# Each image holds a few shapes (the counts are printed below the figure) on a flat or graded
# background with pixel noise; some images hold none. The training set and the held-out set are
# two seeds of the same generator, so they share no image. Item `i` is regenerated from `(seed, i)`
# on demand.

# %%
fig, axes = plt.subplots(2, 4, figsize=(13, 6.6))
for ax, i in zip(axes.flat, range(8)):
    image, target = train_ds[i]
    draw_instances(ax, image, target["boxes"], target["labels"], None, target["masks"], train_ds.class_names,
                   title=f"train image {i}: objects: {len(target['labels'])}")
fig.suptitle("Training images with their targets (boxes and masks of the visible pixels)")
fig.tight_layout()
plt.show()
display(Markdown(
    f"Training images hold up to {train_ds.max_objects} shapes and held-out images up to {test_ds.max_objects}, "
    f"of {len(train_ds.classes)} classes ({', '.join(train_ds.classes)})."))

# %% [markdown]
# What to see: where two shapes overlap, the one painted later wins the shared pixels, and the
# hidden one's mask *and box* shrink to its visible part (the COCO convention for real photos).
# Shapes hidden almost completely are dropped from the targets.
#
# ## 2. The model and one training step
#
# The model is a `MaskRCNN` built from a preset config; its parameter count per part:

# %%
def n_params(module):
    return sum(int(p.data.size) for p in module.parameters())


print(f"preset {cfg.model!r}: {n_params(model):,} parameters")
for name in ("backbone", "rpn", "roi_heads"):
    print(f"  {name:10s} {n_params(getattr(model, name)):>9,}")
print(model.config.transform)

# %% [markdown]
# In training mode the model takes images *and* targets and returns five scalar losses (the RPN's
# objectness and box regression, the box head's classification and regression, the mask head's
# per-pixel binary cross-entropy). One optimisation step sums them and runs SGD, exactly as
# torchvision's reference training script does:

# %%
print(inspect.getsource(Trainer.step))

# %% [markdown]
# ## 3. Training
#
# `Trainer` adds the rest: batches with random horizontal flips, a linear warm-up of the learning
# rate and two steps down by 10x near the end, a progress bar with running losses, a loss log and
# checkpoints from which a run resumes bit-identically.

# %%
trainer = Trainer(model, train_ds, cfg.train, progress=False)
started = time.perf_counter()
log = trainer.train()
print(f"{trainer.iteration} iterations of {cfg.train.batch_size} images in {time.perf_counter() - started:.0f} s "
      f"(warm-up {trainer.scheduler.warmup_iters} iterations, lr steps at {trainer.scheduler.milestones})")

# %%
fig = plot_losses(log, title=f"Training losses of the '{cfg.model}' network on shapes")
plt.show()

# %% [markdown]
# What to see: `loss_objectness` starts at ln 2 = 0.69 (a sigmoid that knows nothing) and
# `loss_classifier` at about ln 4 = 1.39 (four classes with background); both fall first, as the
# RPN learns where shapes are and the box head what they are. `loss_mask` starts above ln 2: the
# randomly initialised mask head's logits are far from 0, so its confident mistakes cost more than a
# shrug would; it falls once the positive RoIs fit their objects. The box regression losses are
# small from the start: they are averaged over all sampled anchors and RoIs, most of which carry no
# box target.
# In fast mode (CI) only the first few iterations run, so only the warm-up is visible.
#
# ### The demo's run
#
# A few hundred iterations show the mechanics, not a good model: the classifier's loss is still on
# its plateau (circles, squares and triangles not yet told apart). The demo command trains the same
# network with the same recipe for 1500 iterations; when its checkpoint is present
# (`python -m minirc demo --out runs/demo`), the rest of this notebook uses it, so notebooks 08, 09
# and 10 show one and the same model.

# %%
short_metrics = evaluate_predictions(test_ds, *predict_dataset(model, test_ds, batch_size=4)[:2])
DEMO = pathlib.Path("..") / "runs" / "demo" / "checkpoint.npz"
n_iters, source = trainer.iteration, f"the {trainer.iteration}-iteration run above"
if not FAST and DEMO.is_file():
    from minirc.train.checkpoint import load_model
    from minirc.train.logs import LossLog

    model, ckpt = load_model(DEMO)
    n_iters, source = ckpt["extra"]["iteration"], f"the demo's checkpoint ({ckpt['extra']['iteration']} iterations)"
    fig = plot_losses(LossLog(ckpt["extra"]["log"]),
                      title=f"Training losses of the demo's run ({n_iters} iterations, same recipe)")
    plt.show()
display(Markdown(f"The {trainer.iteration}-iteration run above reaches mask AP50 "
                 f"{short_metrics['segm']['AP50']:.3f} on the held-out images. From here on: **{source}**."))

# %%
predictions, image_ids, predict_seconds = predict_dataset(model, test_ds, batch_size=4)
k = min(6, len(test_ds))
items = [test_ds[i] for i in range(k)]
fig = show_predictions_vs_ground_truth([im for im, _ in items], [t for _, t in items], predictions[:k],
                                       train_ds.class_names,
                                       title="Held-out images: ground truth (top) vs predictions (bottom)")
plt.show()
print(f"inference: {len(test_ds) / predict_seconds:.1f} images/s")

# %% [markdown]
# What to see: each detection has a box, a class with its score and a mask outline in the class's
# colour. The longer the training, the more shapes are found, with higher scores and the right
# class; occluded shapes get masks of their visible part only, because that is what their targets
# taught. Detections below the 0.5 score cut are not drawn but still count in the AP below.
#
# ## 5. Masks at 28x28 and pasted back
#
# The mask head does not predict image-sized masks. For each detection it pools the box's features
# to a fixed grid and predicts an `S x S` (here 2x the pool size) probability map *in box
# coordinates*. Inference then pastes each map into the image: pad it by one zero pixel, grow the
# box to match, resize bilinearly to the box's integer pixel size, copy into a blank image. We run
# the model's stages one by one to catch the maps before pasting.

#
# (In fast mode the barely trained model gives every class a score below the usual 0.05 cut, so we
# lower the cut to 0 there: the detections are poor, but the mechanics are the same.)

# %%
import dataclasses  # noqa: E402

from minirc.model import paste_masks_in_image  # noqa: E402

if FAST:
    model.roi_heads.cfg = dataclasses.replace(model.roi_heads.cfg, score_thresh=0.0)
image, target = test_ds[0]
model.eval()
with minirc.no_grad():
    batch, _ = model.transform([image])
    features = model.backbone(minirc.Tensor(batch.tensors))
    proposals, _ = model.rpn(features, batch.image_sizes, batch.padded_size, None)
    detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
det = detections[0]
print(f"{len(det['scores'])} detections; box-space masks of shape {det['masks'].shape}; "
      f"resized image {batch.image_sizes[0]} from {image.shape[1:]}")
pasted = paste_masks_in_image(det["masks"], det["boxes"], batch.image_sizes[0])
same_as_model = (len(det["scores"]) == 0 or
                 np.allclose(pasted, model([image])[0]["masks"].reshape(pasted.shape), atol=1e-6))
print("pasting by hand gives the model's own output:", same_as_model)

# %%
n_show = min(3, len(det["scores"]))
if n_show == 0:
    print("no detection to show (the fast-mode model is barely trained)")
else:
    fig, axes = plt.subplots(2, n_show, figsize=(4.2 * n_show, 8), squeeze=False)
    for j in range(n_show):
        label, score = int(det["labels"][j]), float(det["scores"][j])
        ax = axes[0, j]
        im = ax.imshow(det["masks"][j], cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"{train_ds.class_names[label]} {score:.2f}: {det['masks'].shape[-1]}x{det['masks'].shape[-1]} map")
        ax.set_xlabel("mask column (box coordinates)")
        ax.set_ylabel("mask row")
        fig.colorbar(im, ax=ax, fraction=0.046, label="probability")
        draw_instances(axes[1, j], image, det["boxes"][j:j + 1], det["labels"][j:j + 1], det["scores"][j:j + 1],
                       pasted[j:j + 1], train_ds.class_names, score_threshold=0.0,
                       title="pasted into the image, outline at 0.5")
    fig.suptitle("The mask head's box-space probabilities (top) and the same masks pasted back (bottom)")
    fig.tight_layout()
    plt.show()

# %% [markdown]
# What to see: the top maps fill their whole grid (the box is tight around the object), with soft
# edges where the grid cells straddle the shape's boundary. After pasting, the 0.5 contour follows
# the shape in image pixels; the resolution of the outline is the grid's, stretched to the box,
# which is why thin parts of large objects come out rounded.
#
# ## 6. COCO-style average precision on the held-out images

# %%
metrics = evaluate_predictions(test_ds, predictions, image_ids)
print(f"{len(test_ds)} held-out images, {source}")
print(f"{'':5s} {'AP':>6s} {'AP50':>6s} {'AP75':>6s}")
for t in ("bbox", "segm"):
    print(f"{t:5s} {metrics[t]['AP']:6.3f} {metrics[t]['AP50']:6.3f} {metrics[t]['AP75']:6.3f}")

# %% [markdown]
# AP is COCO's: precision averaged over recall levels, classes and IoU thresholds 0.50 to 0.95
# (AP50 and AP75 at one threshold each), computed by `minirc.evaluation.evaluate_coco`. The demo
# command, `python -m minirc demo --out runs/demo`, trains the same network with the same recipe
# for five times as many iterations (1500) and writes its numbers to `metrics.json`; notebooks 09
# and 10 inspect and evaluate that checkpoint.
#
# ## 7. On a GPU
#
# The same loop runs on the `"cuda"` backend (`Trainer(..., backend="cuda")`); this cell runs only
# where a real GPU is present.

# %%
if minirc.backend.gpu_present():
    gpu_model, _, _ = build(cfg, seed=0)
    gpu_cfg = demo_config(cfg.model).train
    gpu_cfg.iters, gpu_cfg.budget_seconds = 5, None
    gpu_trainer = Trainer(gpu_model, train_ds, gpu_cfg, progress=False, backend="cuda")
    t0 = time.perf_counter()
    gpu_trainer.train()
    print(f"cuda: {gpu_trainer.iteration} iterations in {time.perf_counter() - t0:.1f} s, "
          f"last loss {gpu_trainer.log.records[-1]['loss']:.3f}")
else:
    print("no GPU here: skipped")
