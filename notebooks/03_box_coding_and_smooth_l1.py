# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 03 · Box coding and the smooth-L1 loss
#
# The RPN and the box head do not output box corners. They output four **deltas** that say how to
# move and rescale a reference box (an anchor, or a proposal) onto the object:
#
# $$d_x = w_x \frac{g_x - c_x}{w},\quad d_y = w_y \frac{g_y - c_y}{h},\quad
#   d_w = w_w \log\frac{g_w}{w},\quad d_h = w_h \log\frac{g_h}{h}$$
#
# with the reference's centre $(c_x, c_y)$ and size $(w, h)$, the target's $(g_x, g_y, g_w, g_h)$ and
# constant weights $(w_x, w_y, w_w, w_h)$: $(1, 1, 1, 1)$ for the RPN, $(10, 10, 5, 5)$ for the box
# head. This notebook runs `minirc.detection.BoxCoder` on real boxes, shows what the weights and the
# log-space clamp do, and compares L1, L2 and smooth-L1 losses (see `docs/box_coding.md`).

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from minirc import Tensor
from minirc.data import ShapesDataset
from minirc.detection import AnchorGenerator, BoxCoder, Matcher
from minirc.detection.box_coder import BBOX_XFORM_CLIP
from minirc.nn import functional as F
from minirc.ops.box_iou import box_iou
from minirc.visualize import draw_boxes, to_hwc

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100


# %% [markdown]
# ## Encode and decode real boxes
#
# An image of the shapes data set, one object, and the anchors the RPN would train on it (its
# positives after matching, see notebook 02). `encode(gt, anchors)` gives each anchor's regression
# target; `decode(targets, anchors)` must give the object back.

# %%
dataset = ShapesDataset(num_images=200, image_size=(256, 256), seed=1, empty_fraction=0.0, max_objects=5)
image, target = dataset[5]
grids = [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
anchors = np.concatenate(AnchorGenerator()((256, 256), grids))
matches = Matcher(0.7, 0.3, allow_low_quality_matches=True)(box_iou(target["boxes"], anchors))
k = 1  # the object to look at
positives = np.flatnonzero(matches == k)
gt = np.repeat(target["boxes"][k:k + 1], len(positives), axis=0)

rpn_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
deltas = rpn_coder.encode(gt, anchors[positives])
np.set_printoptions(precision=4, suppress=True)
print("object:", target["boxes"][k])
for a, d in zip(anchors[positives], deltas):
    print(f"anchor {a} -> (dx, dy, dw, dh) = {d}")
print("decode(encode(gt)) == gt:", np.abs(rpn_coder.decode(deltas, anchors[positives]) - gt).max(), "max abs error")

fig, ax = plt.subplots(figsize=(5, 5))
ax.imshow(to_hwc(image), extent=(0, 256, 256, 0), alpha=0.5)
draw_boxes(ax, target["boxes"][k:k + 1], "gold", lw=3)
for a, d in zip(anchors[positives], deltas):
    draw_boxes(ax, a[None], "tab:blue", lw=1, ls="--")
    cx, cy = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    w, h = a[2] - a[0], a[3] - a[1]
    ax.annotate("", xy=(cx + d[0] * w, cy + d[1] * h), xytext=(cx, cy),
                arrowprops=dict(arrowstyle="->", color="tab:red"))
ax.set(xlim=(0, 256), ylim=(256, 0), xlabel="x (px)", ylabel="y (px)",
       title="object (gold), its positive anchors (blue dashed)\nand the centre shift (dx*w, dy*h) of each (red)")
plt.show()
a = anchors[positives]
arrow_ends = (a[:, :2] + a[:, 2:]) / 2 + deltas[:, :2] * (a[:, 2:] - a[:, :2])
assert np.allclose(arrow_ends, (target["boxes"][k, :2] + target["boxes"][k, 2:]) / 2)  # all on the object's centre

# %% [markdown]
# The arrows all end on the object's centre: `dx, dy` are centre offsets measured in anchor widths and
# heights. `dw, dh` are log size ratios: positive where the anchor is smaller than the object. The
# verified torchvision case (proposal `(10, 20, 50, 100)`, gt `(15, 25, 45, 110)`, weights
# `(10, 10, 5, 5)`):

# %%
head_coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
proposal = np.array([[10, 20, 50, 100]], np.float32)
gt_box = np.array([[15, 25, 45, 110]], np.float32)
d = head_coder.encode(gt_box, proposal)
print("encode:", d, " decode:", head_coder.decode(d, proposal))
print(inspect.getsource(BoxCoder.decode))

# %% [markdown]
# ## What the weights (10, 10, 5, 5) do
#
# The box head regresses from proposals that already overlap their object well (its positives have
# IoU >= 0.5). Their raw deltas are small. Below: 20,000 boxes (5,000 in fast mode) made by jittering the objects of the
# data set, kept if their IoU with the object is >= 0.5 (like box-head positives), and the anchors that
# the RPN's matcher makes positive.

# %%
rng = np.random.default_rng(0)
objects = np.concatenate([dataset[i][1]["boxes"] for i in range(40 if FAST else 200)])
n = 5000 if FAST else 20000
obj = objects[rng.integers(0, len(objects), n)]
wh = obj[:, 2:] - obj[:, :2]
centre = (obj[:, :2] + obj[:, 2:]) / 2 + rng.normal(0, 0.15, (n, 2)) * wh
size = wh * np.exp(rng.normal(0, 0.2, (n, 2)))
jittered = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
iou = np.concatenate([np.diag(box_iou(jittered[i:i + 500], obj[i:i + 500])) for i in range(0, n, 500)])  # paired IoU
keep = np.flatnonzero(iou >= 0.5)
raw_head = BoxCoder((1, 1, 1, 1)).encode(obj[keep], jittered[keep])
weighted_head = head_coder.encode(obj[keep], jittered[keep])

rpn_raw = []
for i in range(20 if FAST else 100):
    boxes = dataset[i][1]["boxes"]
    m = Matcher(0.7, 0.3, True)(box_iou(boxes, anchors))
    pos = np.flatnonzero(m >= 0)
    rpn_raw.append(rpn_coder.encode(boxes[m[pos]], anchors[pos]))
rpn_raw = np.concatenate(rpn_raw)

names = ["dx", "dy", "dw", "dh"]
for label, x in [("box-head positives, raw", raw_head), ("box-head positives, weighted (10, 10, 5, 5)", weighted_head),
                 ("RPN positive anchors, raw", rpn_raw)]:
    print(f"std of the deltas, {label:44s}", dict(zip(names, x.std(0).astype(float).round(3).tolist())),
          f"({len(x)} samples)")

fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
for ax, col in zip(axes, [0, 2]):
    bins = np.linspace(-3, 3, 61)
    ax.hist(raw_head[:, col], bins, alpha=0.6, density=True, label="box head, raw")
    ax.hist(weighted_head[:, col], bins, alpha=0.6, density=True, label="box head, weighted (10, 10, 5, 5)")
    ax.hist(rpn_raw[:, col], bins, histtype="step", lw=2, density=True, label="RPN anchors, raw (weights 1)")
    ax.set(title=f"{names[col]} of positive samples", xlabel=names[col], ylabel="density")
axes[0].legend(fontsize=8, loc="upper left")
fig.suptitle("Regression targets of positive samples: raw and weighted")
plt.tight_layout()
plt.show()
raw_std, weighted_std, rpn_std = raw_head.std(0), weighted_head.std(0), rpn_raw.std(0)
display(Markdown(
    f"Raw box-head deltas are squeezed into a standard deviation of about {raw_std[:2].mean():.2f} (centre) and "
    f"{raw_std[2:].mean():.2f} (size); the weights stretch them to {weighted_std[:2].mean():.2f} and "
    f"{weighted_std[2:].mean():.2f}, about unit standard deviation. The RPN's positive anchors have raw targets "
    f"of {rpn_std[:2].mean():.2f} and {rpn_std[2:].mean():.2f}, just as small."))

# %% [markdown]
# That is exactly what py-faster-rcnn did by dividing the targets by
# fixed standard deviations `(0.1, 0.1, 0.2, 0.2)` (1/0.1 = 10, 1/0.2 = 5). At unit scale the box
# head's smooth-L1 loss (beta 1/9, below) works almost entirely in its linear part and its size is
# comparable to the classification loss. Decoding divides by the same weights, so predictions come
# back in the same units. The RPN keeps weights 1: its positive anchors' targets are just as small
# (the anchors it learns from overlap their objects by IoU 0.7, or are the best available), and the
# beta of 1/9 is what adapts the loss to that scale.
#
# ## Why the log-space clamp exists
#
# Decoding computes `w' = exp(dw) * w`. An untrained or diverging head can predict any `dw`: `exp(20)`
# is 485 million, and float32 `exp` overflows to infinity above 88.7. torchvision (and minirc) clamp
# `dw` and `dh` from above at `log(1000 / 16) = 4.135` after dividing by the weights: a box can grow at
# most 62.5 times its reference (the constant is "1000 px from a 16 px anchor"). There is no lower clamp.

# %%
dw = np.linspace(-6, 12, 200).astype(np.float32)
ref = np.array([[0, 0, 16, 16]], np.float32)
codes = np.zeros((len(dw), 4), np.float32)
codes[:, 2] = dw
decoded = rpn_coder.decode(codes, np.repeat(ref, len(dw), 0))
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.semilogy(dw, 16 * np.exp(dw.astype(np.float64)), "--", label="exp(dw) * w, no clamp")
ax.semilogy(dw, decoded[:, 2] - decoded[:, 0], label="minirc / torchvision decode")
ax.axvline(BBOX_XFORM_CLIP, color="gray", lw=0.8)
ax.text(BBOX_XFORM_CLIP + 0.2, 2, "dw = log(1000/16)", color="gray")
ax.set(title="Decoded width of a 16 px anchor", xlabel="predicted dw", ylabel="decoded width (px, log)")
ax.legend()
plt.show()
clamped_box = head_coder.decode(np.array([[0, 0, 100, 100]], np.float32), proposal)
print("deltas (0, 0, 100, 100) with weights (10, 10, 5, 5):", clamped_box)
with np.errstate(over="ignore"):
    print("without the clamp, float32 exp(100 / 5) * 40 =", np.exp(np.float32(20)) * np.float32(40),
          "and exp(100) =", np.exp(np.float32(100)))
display(Markdown(
    f"What to see: the decoded width follows `exp(dw) * 16` up to dw = {BBOX_XFORM_CLIP:.3f} and stays at "
    f"{16 * np.exp(BBOX_XFORM_CLIP):.0f} px after it. The clamped box `({', '.join(f'{v:.0f}' for v in clamped_box[0])})` "
    "is absurd but finite; clipping to the image turns it into the whole image and NMS handles it. An infinite box "
    "would turn IoUs into NaN."))
#
# ## L1, L2 and smooth L1
#
# The regression loss compares predicted and target deltas, `d = prediction - target`. `smooth_l1_loss`
# is quadratic near zero and linear beyond `beta`:
# `0.5 d^2 / beta` if `|d| < beta`, else `|d| - 0.5 beta`. The curves below are computed with minirc's
# differentiable `smooth_l1_loss`, and the gradients by the autograd tape (`loss.backward()`).

# %%
d = np.linspace(-2, 2, 401)


def loss_and_grad(beta):
    x = Tensor(d.copy(), requires_grad=True)
    loss = F.smooth_l1_loss(x, np.zeros_like(d), beta=beta, reduction="none")
    loss.sum().backward()
    return loss.numpy(), x.grad


fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
curves = {"L1 (beta = 0, detectron2)": loss_and_grad(0.0), "smooth L1, beta = 1/9 (torchvision)": loss_and_grad(1 / 9),
          "smooth L1, beta = 1": loss_and_grad(1.0), "L2 (0.5 d^2)": (0.5 * d ** 2, d)}
for name, (loss, grad) in curves.items():
    axes[0].plot(d, loss, label=name)
    axes[1].plot(d, grad, label=name)
axes[0].set(title="Loss", xlabel="d = prediction - target", ylabel="loss", ylim=(0, 2))
axes[1].set(title="Gradient (autograd)", xlabel="d = prediction - target", ylabel="d loss / d prediction",
            ylim=(-2, 2))
axes[1].legend(fontsize=8)
fig.suptitle("L1, L2 and smooth L1: the loss and its gradient")
plt.tight_layout()
plt.show()

# %% [markdown]
# L2's gradient grows with the error, so a few badly matched samples (an anchor whose object is far
# bigger, a mislabelled box) dominate the update. L1's gradient has constant size, robust to those
# outliers, but it jumps at zero, so the prediction keeps jittering around the target. Smooth L1 is
# L1 far away and L2 near zero: bounded gradients and a smooth finish.
#
# ## Beta sweep
#
# `beta` sets where the quadratic part ends. How hard does each sample pull on the prediction? Left:
# the gradient for several beta. Right: the mean gradient size over the RPN positives' targets, first
# for an untrained head (prediction 0, so the error is the whole target), then once training has
# shrunk every error 10-fold.

# %%
betas = [0.0, 1 / 27, 1 / 9, 1 / 3, 1.0, 3.0]
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for beta in betas:
    loss, grad = loss_and_grad(beta)
    axes[0].plot(d, grad, label=f"beta = {beta:.3g}")
axes[0].set(title="Gradient of smooth L1 for several beta", xlabel="d", ylabel="d loss / d prediction")
axes[0].legend(fontsize=8)
grad_size = {}
for scale, style in [(1.0, "o-"), (0.1, "s--")]:
    errors = scale * rpn_raw.ravel()
    sizes = grad_size[scale] = []
    for beta in betas:
        x = Tensor(errors.copy(), requires_grad=True)
        F.smooth_l1_loss(x, np.zeros_like(errors), beta=beta, reduction="sum").backward()
        sizes.append(np.abs(x.grad).mean())
    axes[1].plot([max(b, 1e-2) for b in betas], sizes, style, label=f"errors = {scale} x RPN targets")
axes[1].set_xscale("log")
axes[1].set(title="Mean |gradient| per coordinate", xlabel="beta (0 shown at 0.01)", ylabel="mean |d loss / d x|",
            ylim=(0, 1.05))
axes[1].legend(fontsize=8)
fig.suptitle("How hard smooth L1 pulls, as a function of beta")
plt.tight_layout()
plt.show()
tv = betas.index(1 / 9)
display(Markdown(
    "Small beta behaves like L1: every sample pulls with about the same force until it is nearly exact. Large beta "
    "behaves like L2 with a small step: errors inside the quadratic zone get weak gradients, and an almost-trained "
    "model barely moves. With torchvision's beta = 1/9 the untrained RPN's gradients are still mostly L1-like (mean "
    f"size {grad_size[1.0][tv]:.2f}), while the fine-tuning phase (errors 10x smaller) gets the smooth quadratic "
    f"finish ({grad_size[0.1][tv]:.2f}). detectron2 goes all the way to beta = 0 (plain L1) and relies on the "
    "learning-rate schedule for the finish."))
