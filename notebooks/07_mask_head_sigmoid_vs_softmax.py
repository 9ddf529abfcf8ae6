# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 07 · The mask head: a sigmoid per class, or a softmax across classes?
#
# Mask R-CNN's mask branch predicts, for every RoI, **one 28x28 mask per class**: K logit maps.
# Training looks at only one of them. For an RoI whose ground-truth class is $k$, the loss is the
# per-pixel binary cross-entropy of channel $k$ against the RoI's mask target; the other $K-1$
# channels do not enter the loss at all. The paper calls this *decoupling* mask and class
# prediction: the mask branch never has to decide which class a pixel belongs to, because the box
# branch's classifier already did. The usual alternative in semantic segmentation (FCN) is a
# per-pixel **softmax across the K classes** with a multinomial cross-entropy. There the classes
# compete at every pixel. The paper's Table 2b reports 5.5 points of mask AP in favour of the sigmoid.
#
# This notebook looks at that difference on small, exact examples:
#
# 1. the layers and the shapes: (R, C, 14, 14) features -> (R, K, 28, 28) logits;
# 2. the mask targets: each gt mask cut out by RoIAlign at the RoI;
# 3. **which channels receive a gradient** under each loss;
# 4. the two losses and their gradients for one pixel, as the logit of a competing class rises;
# 5. **class competition**: two objects of different classes with the same box (so the same RoI
#    features). The sigmoid head can fit both masks; the best a softmax head can do is 0.5 on
#    every contested pixel.
#
# The switch in minirc is `MaskHeadConfig.loss` (`"sigmoid"`, the default, or `"softmax"`).

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np

import minirc
import minirc.random
from minirc.autograd import Tensor
from minirc.explore import mask_iou
from minirc.model import config as C
from minirc.model.mask_head import (MaskRCNNHeads, MaskRCNNPredictor, mask_loss, mask_probabilities,
                                    project_masks_on_boxes)

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100
minirc.random.manual_seed(0)
CLASS_NAMES = ["background", "disc", "square"]

# %% [markdown]
# ## 1 · Layers and shapes
#
# `MaskRCNNHeads` is a stack of 3x3 conv + ReLU at the pooled resolution (four 256-channel convs
# in torchvision's model; two 32-channel convs here, so it runs fast). `MaskRCNNPredictor` doubles
# the resolution with a 2x2 stride-2 transposed conv, then a 1x1 conv outputs **one channel per class**.

# %%
cfg = C.override(C.tiny(), {"num_classes": 3, "mask_head.pool_size": 14})
heads = MaskRCNNHeads(cfg.fpn.out_channels, cfg.mask_head.layers)
predictor = MaskRCNNPredictor(cfg.mask_head.layers[-1], cfg.mask_head.dim_reduced, cfg.num_classes)
x = Tensor(np.random.default_rng(0).standard_normal((5, cfg.fpn.out_channels, 14, 14)).astype(np.float32))
h = heads(x)
logits = predictor(h)
print("RoI features   ", x.shape, "  (R, C, P, P)")
print("after the head ", h.shape)
print("mask logits    ", logits.shape, "  (R, K, 2P, 2P): one 28x28 map per class")
for k, v in predictor.state_dict().items():
    print(f"  predictor.{k:24s} {v.shape}")

# %% [markdown]
# ## 2 · A scene with two classes that share a box
#
# A disc (class 1) sits in front of a square (class 2), centred on it and touching its sides, so the
# two objects have **the same bounding box**. The square's ground-truth mask holds only its visible
# pixels, the four corners. The mask target of an RoI is its gt mask cut out at the RoI and resized to
# 28x28 by RoIAlign (`aligned=False`, adaptive sampling, as torchvision does). The targets are soft:
# pixels on the disc's rim get fractional values.

# %%
H = W = 64
yy, xx = np.mgrid[0:H, 0:W] + 0.5  # pixel centres
disc = ((xx - 32) ** 2 + (yy - 32) ** 2 <= 20 ** 2).astype(np.uint8)
square = ((xx > 12) & (xx < 52) & (yy > 12) & (yy < 52)).astype(np.uint8) * (1 - disc)
gt_masks = np.stack([disc, square])  # (G, H, W)
gt_labels = np.array([1, 2])
box = np.array([12, 12, 52, 52], np.float32)
rois = np.stack([box, box])  # one RoI per object, both exactly the gt box
targets = project_masks_on_boxes(gt_masks, rois, np.array([0, 1]), 28)  # (R, 28, 28)

image = np.ones((H, W, 3)) * 0.95
image[square.astype(bool)] = (0.3, 0.5, 0.9)
image[disc.astype(bool)] = (0.95, 0.55, 0.2)
fig, axes = plt.subplots(1, 3, figsize=(12, 4.2), layout="constrained")
axes[0].imshow(image, extent=(0, W, H, 0))
axes[0].add_patch(plt.Rectangle(box[:2], box[2] - box[0], box[3] - box[1], fill=False, color="k", lw=1.5, ls="--"))
axes[0].set_title("disc (class 1) in front of square (class 2)\nthe shared box dashed")
for ax, t, name in zip(axes[1:], targets, ["disc RoI", "square RoI"]):
    im = ax.imshow(t, cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"target of the {name}\n(RoIAlign of its gt mask)")
    ax.set_xlabel("mask x (28 cells)")
    ax.set_ylabel("mask y")
axes[0].set_xlabel("x (pixels)")
axes[0].set_ylabel("y (pixels)")
fig.colorbar(im, ax=axes[1:], shrink=0.8, label="target value")
fig.suptitle("Two classes that share a box, and their mask targets")
plt.show()

# %% [markdown]
# Left: the scene. Middle and right: the two 28x28 targets. They are complementary inside the box:
# a pixel of the disc is foreground for the disc RoI and background for the square RoI.

# %% [markdown]
# ## 3 · Which channels get a gradient?
#
# Here is minirc's loss. With `"sigmoid"` it indexes `mask_logits[rows, labels]`, turning
# (R, K, S, S) into (R, S, S): only the gt class's channel reaches the binary cross-entropy.
# With `"softmax"` it normalises over the K channels first, so every channel enters.

# %%
print(inspect.getsource(mask_loss))

# %%
z0 = np.random.default_rng(1).standard_normal((2, 3, 28, 28)) * 0.5
grads = {}
for loss_type in ("sigmoid", "softmax"):
    z = Tensor(z0.copy(), requires_grad=True)
    mask_loss(z, gt_labels, targets, loss_type).backward()
    grads[loss_type] = z.grad[0]  # the disc RoI: (K, 28, 28)

fig, axes = plt.subplots(2, 3, figsize=(11, 7), layout="constrained")
vmax = max(np.abs(g).max() for g in grads.values())
for row, (loss_type, g) in enumerate(grads.items()):
    for k in range(3):
        im = axes[row, k].imshow(g[k], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        axes[row, k].set_title(f"{loss_type}: d loss / d logit\nchannel {k} ({CLASS_NAMES[k]})")
        axes[row, k].set_xlabel("mask x")
        axes[row, k].set_ylabel("mask y")
fig.colorbar(im, ax=axes, shrink=0.6, label="gradient")
fig.suptitle("Gradient of the disc RoI's mask loss per class channel: sigmoid (top) vs softmax (bottom)")
plt.show()
for loss_type, g in grads.items():
    print(f"{loss_type:8s} sum |grad| per channel of the disc RoI:", np.abs(g).sum(axis=(1, 2)).round(5))
assert not grads["sigmoid"][[0, 2]].any()  # only the gt class's channel gets a gradient
assert np.allclose(grads["softmax"].sum(axis=0), 0, atol=1e-12)  # softmax gradients sum to 0 over classes

# %% [markdown]
# Top row (sigmoid): the disc RoI's gradient is non-zero only in channel 1, its gt class. Channels
# 0 and 2 are blank, so nothing this RoI teaches can change the square's mask. Bottom row
# (softmax): all three channels move. Inside the disc, channel 1 is pushed up (blue) and the other
# two are pushed down (red). At each pixel the softmax gradients sum to zero over the classes.

# %% [markdown]
# ## 4 · One pixel: the losses as a competing class's logit rises
#
# Take one pixel whose target is the gt class (t = 1) and sweep its logit $z$. The background logit
# is fixed at 0, and a third class, the *competitor*, has logit $z_c$. The sigmoid loss,
# $\log(1 + e^{-z})$, ignores $z_c$: its gradient is $\sigma(z) - t$. The softmax loss is
# $-\log \frac{e^z}{1 + e^z + e^{z_c}}$, with gradient $p - t$. It grows with $z_c$, so a confident
# competitor has to be pushed down before this pixel counts as "right". Both curves below come from
# `mask_loss` and the autograd tape (a 1x1 "mask").

# %%
zs = np.linspace(-6, 6, 61 if FAST else 121)
competitors = (-2.0, 0.0, 2.0, 4.0)
curves = {}
for loss_type in ("sigmoid", "softmax"):
    for zc in competitors:
        values, slopes = [], []
        for z in zs:
            t = Tensor(np.array([0.0, z, zc]).reshape(1, 3, 1, 1), requires_grad=True)
            loss = mask_loss(t, np.array([1]), np.ones((1, 1, 1)), loss_type)
            loss.backward()
            values.append(loss.item())
            slopes.append(t.grad[0, 1, 0, 0])
        curves[loss_type, zc] = (np.array(values), np.array(slopes))

fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
for (loss_type, zc), (values, slopes) in curves.items():
    style = dict(ls="-" if loss_type == "softmax" else "--", lw=2 if loss_type == "sigmoid" else 1.3,
                 color="k" if loss_type == "sigmoid" else plt.cm.viridis(competitors.index(zc) / 3.5))
    label = "sigmoid (any $z_c$)" if loss_type == "sigmoid" else f"softmax, $z_c$ = {zc:g}"
    if loss_type == "sigmoid" and zc != competitors[0]:
        label = None
    axes[0].plot(zs, values, label=label, **style)
    axes[1].plot(zs, slopes, **style)
axes[0].set_title("loss of one pixel with target 1")
axes[1].set_title("its gradient d loss / d z")
for ax in axes:
    ax.set_xlabel("logit z of the gt class")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("loss")
axes[1].set_ylabel("gradient")
axes[0].legend()
fig.suptitle("One pixel with target 1: sigmoid vs softmax as the competitor's logit $z_c$ rises")
plt.show()

# %% [markdown]
# The black dashed curve is the sigmoid for every $z_c$: the four sigmoid curves lie on top of each
# other. The softmax curves move up and to the right as the competitor's logit $z_c$ grows. The
# same $z$ counts as a worse prediction, and its gradient stays strong for longer. The classes
# compete even though the RoI has only one gt class.

# %% [markdown]
# ## 5 · Class competition: two objects, one box
#
# The disc and the square have the same box, so RoIAlign gives the mask head the same features for
# both RoIs, and the head outputs the **same** K x 28 x 28 logits $Z$ for both. Let us fit $Z$ by
# gradient descent, once per loss. This is the best any head could do with those shared features:
#
# * sigmoid: the disc RoI trains channel 1 and the square RoI trains channel 2. The two never
#   touch, and both masks can be fit;
# * softmax: on a disc pixel the disc RoI wants class 1 and the square RoI wants background, from
#   one distribution. The optimum splits the pixel: $p_1 = p_0 = 0.5$. The corners split the same
#   way between the square and background.

# %%
def fit_shared_logits(loss_type, steps, lr=800.0):
    """Gradient descent on one (K, 28, 28) logit map shared by both RoIs; returns it and the loss curve."""
    z = Tensor(np.zeros((3, 28, 28)), requires_grad=True)
    history = []
    for _ in range(steps):
        z.grad = None
        loss = mask_loss(minirc.stack([z, z]), gt_labels, targets, loss_type)  # (2, K, 28, 28)
        loss.backward()
        z.data -= lr * z.grad  # the mean over 2 x 28 x 28 pixels makes per-pixel gradients small
        history.append(loss.item())
    return z.data, np.array(history)


steps = 150 if FAST else 600
fits = {loss_type: fit_shared_logits(loss_type, steps) for loss_type in ("sigmoid", "softmax")}
probs = {t: mask_probabilities(np.stack([z, z]), gt_labels, t) for t, (z, _) in fits.items()}  # (R, 28, 28)

fig = plt.figure(figsize=(13, 7), layout="constrained")
ax = fig.add_subplot(1, 3, 1)
for loss_type, (_, history) in fits.items():
    ax.plot(history, label=loss_type)
ax.set_title("training loss (shared logits)")
ax.set_xlabel("gradient step")
ax.set_ylabel("mask loss")
ax.legend()
for row, loss_type in enumerate(("sigmoid", "softmax")):
    for col, name in enumerate(["disc", "square"]):
        ax = fig.add_subplot(2, 3, 3 * row + col + 2)
        im = ax.imshow(probs[loss_type][col], cmap="magma", vmin=0, vmax=1)
        ax.contour(targets[col], levels=[0.5], colors="lime", linewidths=1.5)
        ax.set_title(f"{loss_type}: {name} RoI, p({name})")
        ax.set_xlabel("mask x")
        ax.set_ylabel("mask y")
fig.colorbar(im, ax=fig.axes[1:], shrink=0.7, label="mask probability (green: target's 0.5 contour)")
fig.suptitle("One logit map shared by both RoIs, fitted with each loss")
plt.show()
assert fits["softmax"][1][-1] > fits["sigmoid"][1][-1]  # the softmax loss stays above the sigmoid's


print(f"{'loss':8s} {'RoI':7s} {'IoU(p > 0.5)':>13s} {'IoU(p >= 0.5)':>14s} {'p on contested pixels':>22s}")
for loss_type, p in probs.items():
    for r, name in enumerate(["disc", "square"]):
        gt = targets[r] >= 0.5
        print(f"{loss_type:8s} {name:7s} {mask_iou(p[r] > 0.5, gt):13.3f} {mask_iou(p[r] >= 0.5, gt):14.3f} "
              f"{p[r][targets[r] > 0.99].mean():22.3f}")

# %% [markdown]
# Sigmoid (top row): both masks are learned. Each RoI's probability map follows its own target
# (the green contour), and the IoU is close to 1.
#
# Softmax (bottom row): every pixel that one RoI calls foreground and the other calls background
# climbs towards $p = 0.5$ and can never pass it (the last column of the table). Thresholded at 0.5,
# with `>` or `>=`, **both masks vanish** (IoU 0), although each RoI's class and box are right. The
# softmax loss also stays well above the sigmoid's. A real head sees slightly different features for
# two RoIs that overlap heavily but not exactly. That softens the conflict but does not remove it:
# the softmax must still spend capacity telling the classes apart at every pixel, which the sigmoid
# leaves to the box classifier.

# %% [markdown]
# ## 6 · The switch in minirc
#
# `MaskHeadConfig.loss` picks the training loss, and inference reads probabilities the matching way:
# a sigmoid of the predicted class's channel, or a softmax across channels followed by that channel.

# %%
print(inspect.getsource(mask_probabilities))
softmax_cfg = C.override(C.tiny(), {"mask_head.loss": "softmax"})
print("default:", C.tiny().mask_head.loss, "| switched:", softmax_cfg.mask_head.loss)

# %% [markdown]
# **Takeaways**
#
# * The mask branch predicts K masks per RoI. The sigmoid loss trains only the gt class's channel
#   (`mask_logits[rows, labels]`), so classes never compete for a pixel. The box classifier has
#   already chosen the class, and at inference the mask of the predicted class is read out.
# * A softmax across classes couples all K channels. Its gradient reaches every class, and the loss
#   depends on the other classes' logits.
# * When two objects of different classes share (almost) the same box, only the sigmoid head can
#   represent both masks. The softmax head is forced to 0.5 on every contested pixel.
