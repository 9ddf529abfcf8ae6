# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
# ---

# %% [markdown]
# # 01 · Convolution layers: from loops to im2col to Numba to CUDA
#
# Nearly all of Mask R-CNN's arithmetic is convolution: ResNet-50, the FPN, the RPN head and the
# mask head. This notebook builds `conv2d` the slow, obvious way, then turns it into one matrix
# product (**im2col**), then looks at minirc's Numba and CUDA kernels, checking every rung against
# the NumPy reference and timing it. The second half derives the **backward pass** and checks it
# with finite differences by hand.
#
# Conventions (torch's, see `docs/conv.md`): `x (N, C, H, W)`, weight `w (O, C, kh, kw)`, and conv
# is a *cross-correlation* (the kernel is not flipped):
#
# $$y[n, o, o_h, o_w] = b[o] + \sum_{c, i, j} w[o, c, i, j]\; x[n, c,\; o_h s - p + i d,\; o_w s - p + j d]$$
#
# with stride $s$, zero padding $p$ and dilation $d$; $H_o = \lfloor (H + 2p - d(k-1) - 1)/s \rfloor + 1$.

# %%
import inspect
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display
from matplotlib.patches import Rectangle
from matplotlib.ticker import NullFormatter

import minirc
from minirc.ops.conv2d import Geometry, conv2d_backward, conv2d_forward, im2col_numpy
from minirc.ops.conv_transpose2d import conv_transpose2d_forward
from minirc.testing import call_times

FAST = os.environ.get("MINIRC_FAST") == "1"
plt.rcParams["figure.dpi"] = 100
rng = np.random.default_rng(0)


def best_time(fn, repeats=3):
    """Best wall time of a few calls, in seconds (after one warm-up call that compiles Numba kernels)."""
    return min(call_times(fn, repeats))


# %% [markdown]
# ## Stride, padding and dilation on a small image
#
# Each output pixel reads a $k \times k$ grid of input pixels. **Stride** moves that grid by $s$
# pixels from one output to the next, **padding** surrounds the image with $p$ rings of zeros, and
# **dilation** spreads the taps $d$ pixels apart. The panels show the taps read by the first
# output pixel (blue squares) and by its right-hand neighbour (orange outlines) on a 7x7 image
# (grey; white = zero padding).

# %%
def show_taps(ax, size, k, s, p, d):
    # image pixels grey, padding white (Greys maps 0 to white)
    ax.imshow(np.pad(np.full((size, size), 0.35), p), cmap="Greys", vmin=0, vmax=1,
              extent=(-p - 0.5, size + p - 0.5, size + p - 0.5, -p - 0.5))
    for ow, style in ((0, dict(fc="tab:blue", ec="none", alpha=0.55)),
                      (1, dict(fill=False, ec="tab:orange", lw=2.5))):
        inset = 0.05 if ow == 0 else 0.2  # the orange outline sits inside the blue square where they share a pixel
        for i in range(k):
            for j in range(k):
                r, c = i * d - p, ow * s + j * d - p  # input pixel read by tap (i, j) of output (0, ow)
                ax.add_patch(Rectangle((c - 0.5 + inset, r - 0.5 + inset), 1 - 2 * inset, 1 - 2 * inset, **style))
    ho = (size + 2 * p - d * (k - 1) - 1) // s + 1
    ax.set(title=f"stride {s}, padding {p}, dilation {d}\noutput {ho}x{ho}", xlabel="input column",
           ylabel="input row", xticks=range(-p, size + p), yticks=range(-p, size + p))
    ax.tick_params(labelsize=7)


fig, axes = plt.subplots(1, 4, figsize=(15, 4.6))
for ax, (s, p, d) in zip(axes, [(1, 0, 1), (2, 0, 1), (1, 1, 1), (1, 0, 2)]):
    show_taps(ax, 7, 3, s, p, d)
fig.suptitle("Input pixels read by a 3x3 kernel for output (0, 0) (blue) and output (0, 1) (orange)")
plt.tight_layout()
plt.show()

# %% [markdown]
# What to see: with stride 2 the orange grid jumps two columns, so the output shrinks to 3x3;
# padding 1 lets the first window hang over the border (its outer taps read zeros) and keeps the
# output 7x7, as in every 3x3 conv of ResNet; dilation 2 covers a 5x5 area with the same 9 weights.
#
# ## Rung 1: loops
#
# The definition, written as loops over every output pixel (the sum over channels and taps is a
# NumPy product of the window with the kernel, so this rung takes a fraction of a second here rather
# than minutes; the time is printed).

# %%
def conv2d_loops(x, w, stride=1, padding=0, dilation=1):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    ho = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    wo = (wd + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, o, ho, wo), dtype=x.dtype)
    for b in range(n):
        for oc in range(o):
            for oh in range(ho):
                for ow in range(wo):
                    r, col = oh * stride, ow * stride
                    window = xp[b, :, r: r + dilation * (kh - 1) + 1: dilation,
                                col: col + dilation * (kw - 1) + 1: dilation]  # (C, kh, kw)
                    y[b, oc, oh, ow] = np.sum(window * w[oc])
    return y


N, C, O, HW = (1, 8, 8, 16) if FAST else (2, 32, 32, 32)
x = rng.standard_normal((N, C, HW, HW)).astype(np.float32)
w = (rng.standard_normal((O, C, 3, 3)) / np.sqrt(C * 9)).astype(np.float32)
reference = conv2d_forward(x, w, None, 1, 1, 1, backend="numpy")
y_loops = conv2d_loops(x, w, padding=1)
print("loops vs NumPy reference, max |difference|:", np.abs(y_loops - reference).max())
times = {"loops": best_time(lambda: conv2d_loops(x, w, padding=1), repeats=1)}
print(f"shape x {x.shape}, w {w.shape}: loops take {times['loops'] * 1e3:.0f} ms")

# %% [markdown]
# ## Rung 2: im2col, one matrix product
#
# The loops compute `N*O*Ho*Wo` small dot products, each between a window and a kernel. Copy every
# window into a column of a matrix once, and all of them become a single matrix product:
#
# * `cols[n]` is `(C*kh*kw, Ho*Wo)`: row `(c, i, j)` holds what tap `(i, j)` of channel `c` sees at
#   each output position, column `(oh, ow)` is one window, flattened;
# * `y[n] = W @ cols[n]` with `W = w.reshape(O, C*kh*kw)`.
#
# The picture: a 4x4 image, a 3x3 kernel, no padding, so 2x2 outputs and a 9x4 `cols` matrix.

# %%
img = np.arange(1, 17, dtype=np.float32).reshape(1, 1, 4, 4)
cols = im2col_numpy(img, Geometry(3, 3, 1, 1, 0, 0, 1, 1), (2, 2))[0]  # (9, 4)

fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(9, 4.5), gridspec_kw={"width_ratios": [1, 1.1]})
ax0.imshow(img[0, 0], cmap="Blues", vmin=-8, vmax=20)
for (r, c), v in np.ndenumerate(img[0, 0]):
    ax0.text(c, r, int(v), ha="center", va="center")
ax0.add_patch(Rectangle((0.5, -0.5), 3, 3, fill=False, ec="tab:orange", lw=3))
ax0.set(title="input 4x4; window of output (0, 1) in orange", xlabel="column", ylabel="row",
        xticks=range(4), yticks=range(4))
ax1.imshow(cols, cmap="Blues", vmin=-8, vmax=20, aspect="auto")
for (r, c), v in np.ndenumerate(cols):
    ax1.text(c, r, int(v), ha="center", va="center")
ax1.add_patch(Rectangle((0.5, -0.5), 1, 9, fill=False, ec="tab:orange", lw=3))
ax1.set(title="cols (9 x 4): one column per output pixel", xlabel="output pixel (oh, ow)",
        ylabel="kernel tap (i, j)", xticks=range(4), xticklabels=["(0,0)", "(0,1)", "(1,0)", "(1,1)"],
        yticks=range(9), yticklabels=[f"({i},{j})" for i in range(3) for j in range(3)])
plt.tight_layout()
plt.show()
assert (cols == 6).any(axis=0).all()  # pixel 6 sits in every window

# %% [markdown]
# What to see: the orange window of the input is the orange column of `cols`, read row by row.
# Each pixel appears in several columns (pixel 6 in all four): im2col trades memory, `kh*kw` copies
# of the input, for one large matrix product, which BLAS runs near the machine's peak.
# minirc's NumPy reference builds `cols` with one strided slice per kernel tap:

# %%
print(inspect.getsource(im2col_numpy))
y_numpy = conv2d_forward(x, w, None, 1, 1, 1, backend="numpy")
times["im2col (NumPy)"] = best_time(lambda: conv2d_forward(x, w, None, 1, 1, 1, backend="numpy"))
print("im2col vs loops, max |difference|:", np.abs(y_numpy - y_loops).max())

# %% [markdown]
# ## Rung 3: Numba on the CPU
#
# The `"cpu"` backend keeps the same plan with a few changes. The work is cut into blocks of about
# 4 MiB of `cols` (bands of output rows, or several small images), shared among the cores. Each
# block's `cols` is written by one Numba kernel (`_im2col_block_kernel`, printed below) straight
# from the input, into a buffer that belongs to the thread, with the zero padding written as it
# goes, and is then multiplied by BLAS at once. For a stride-1 conv whose output is as wide as its
# input, all the rows of one tap are a single shifted copy. On the blocks of a demo training step
# this is 1.5x faster than padding the rows and copying a strided view with NumPy
# (`docs/performance.md`), and since every block builds its own columns, no core waits while one
# pads the whole input. A 1x1 stride-1 convolution
# skips im2col altogether, since its `cols` is the input itself, and the input gradient of a
# stride-1 conv is itself a convolution (see the backward section below).

# %%
from minirc.ops import conv2d as conv_module  # noqa: E402

print(inspect.getsource(conv_module._cols_cpu))
print(inspect.getsource(conv_module._im2col_block_kernel.py_func))
y_cpu = conv2d_forward(x, w, None, 1, 1, 1, backend="cpu")
times["Numba + BLAS (cpu)"] = best_time(lambda: conv2d_forward(x, w, None, 1, 1, 1, backend="cpu"))
print("cpu vs NumPy reference, max |difference|:", np.abs(y_cpu - reference).max())

# %% [markdown]
# ### Fewer multiplications: Winograd F(2x2, 3x3)
#
# For a 3x3, stride-1 conv with enough channels and work (this one at full size: 32 channels, 2
# images of 32x32; the small fast-mode run takes im2col) the `"cpu"` backend does not even
# multiply `W @ cols`. Winograd's minimal filtering computes a 2x2
# tile of outputs from a 4x4 input patch `d` as `A^T [(G g G^T) * (B^T d B)] A`: 16
# multiplications instead of 36. Summed over channels, each of the 16 positions is one matrix
# product `U[k] (O x C) @ V[k] (C x tiles)`, so the GEMM work falls 2.25x and the transforms are
# only additions (`minirc/ops/_winograd.py`, `docs/conv.md`). Here is one tile by hand, checked
# against the direct sum: the numbers differ by float rounding only.

# %%
from minirc.ops import _winograd  # noqa: E402

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
patch = np.pad(x[0, 0].astype(np.float64), 1)[:4, :4]  # the padded input under output tile (0, 0)
kernel = w[0, 0].astype(np.float64)
tile = AT @ ((_winograd.G @ kernel @ _winograd.G.T) * (BT @ patch @ BT.T)) @ AT.T
direct = np.array([[np.sum(patch[i:i + 3, j:j + 3] * kernel) for j in range(2)] for i in range(2)])
print("Winograd tile (one channel pair):\n", tile.round(6), "\ndirect 3x3 sums:\n", direct.round(6))
print("multiplications per tile and channel pair: Winograd 16, direct", 2 * 2 * 9)
uses_winograd = _winograd.applies(Geometry(3, 3, 1, 1, 1, 1, 1, 1), x.shape[1], w.shape[0],
                                  x.shape[0] * x.shape[2] * x.shape[3])
print("the cpu backend takes this route for x", x.shape, ":", uses_winograd)

# %% [markdown]
# ## Rung 4: CUDA
#
# On a GPU, minirc launches one thread per element of `cols` (im2col), then a **tiled GEMM**: each
# 16x16 block of threads computes a 16x16 tile of the output, walking along the shared dimension
# one tile at a time, with both input tiles staged in shared memory (`minirc/ops/matmul.py`; a
# comment on each `syncthreads` says why it is there).

# %%
if minirc.backend.gpu_present():
    y_cuda = conv2d_forward(x, w, None, 1, 1, 1, backend="cuda")
    times["CUDA"] = best_time(lambda: conv2d_forward(x, w, None, 1, 1, 1, backend="cuda"))
    print("cuda vs NumPy reference, max |difference|:", np.abs(y_cuda - reference).max())
else:
    print("No GPU here: the CUDA rung is skipped (the test suite runs the same kernels in Numba's "
          "simulator on tiny shapes).")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
names = list(times)
ax.barh(names, [times[k] * 1e3 for k in names], color="tab:blue")
for i, k in enumerate(names):
    ax.text(times[k] * 1e3, i, f" {times[k] * 1e3:.2f} ms", va="center")
ax.set(xscale="log", xlim=(min(times.values()) * 1e3 / 3, max(times.values()) * 1e3 * 6),
       xlabel="forward time (ms, log scale; includes the host-device copies on CUDA)", ylabel="rung",
       title=f"conv2d forward, x {x.shape}, 3x3 kernel, {O} outputs")
ax.xaxis.set_minor_formatter(NullFormatter())  # label decades only
ax.invert_yaxis()
plt.tight_layout()
plt.show()
speedup = {k: times["loops"] / times[k] for k in names[1:]}
for k, v in speedup.items():
    print(f"{k}: {v:.0f}x faster than the loops")
display(Markdown(
    f"What to see: the loops are {min(speedup.values()):.0f} to {max(speedup.values()):.0f} times slower than "
    f"the matrix-product versions (the printed ratios; {np.log10(min(speedup.values())):.1f} to "
    f"{np.log10(max(speedup.values())):.1f} orders of magnitude), and all rungs agree with the reference to "
    f"float32 rounding. The Numba + BLAS version runs "
    f"{times['im2col (NumPy)'] / times['Numba + BLAS (cpu)']:.1f}x the speed of the NumPy im2col on this layer: "
    "both spend their time in a BLAS product, and on a layer this small fixed costs weigh as much as the work."))

# %% [markdown]
# The cpu backend pays off on larger layers and in training (bounded memory per block, the im2col
# copies on every core, the stride-1 input gradient as a convolution); `benchmarks/bench_conv.py`
# compares it with PyTorch on ResNet-sized layers (numbers in `docs/conv.md`).
#
# ## The backward pass
#
# With `g = dL/dy` (same shape as y) and `y[n] = W @ cols[n]`, the chain rule gives two products:
#
# * **weights**: `dW = sum_n g[n] @ cols[n]^T`. Written out, $dw[o,c,i,j] = \sum_{n,o_h,o_w}
#   g[n,o,o_h,o_w]\, x[n, c, o_h s - p + i d, o_w s - p + j d]$: a correlation of the input with
#   the output gradient;
# * **input**: `dcols[n] = W^T @ g[n]`, and each entry of `dcols` is sent back to the pixel it was
#   copied from, overlaps summed (**col2im**, the transpose of im2col). The result is a
#   *transposed convolution* of `g` with the same weights;
# * **bias**: `db[o]` = `g` summed over everything but `o`.
#
# On the `"cpu"` backend, col2im runs in blocks of *input channels*: the rows of `W^T` that belong
# to channels `c0..c1` give exactly the rows of `dcols` whose entries land in those channels' planes
# of `dx`, so each thread multiplies and scatters its own channels, and no two threads ever write
# the same pixel (no locks, no atomics, the same bits whatever the thread count).
#
# Both claims can be checked with minirc's own kernels:

# %%
s, p = 2, 1
xs = rng.standard_normal((2, 3, 7, 7))
ws = rng.standard_normal((4, 3, 3, 3))
g = rng.standard_normal(conv2d_forward(xs, ws, None, s, p, backend="numpy").shape)
dx, dw, db = conv2d_backward(g, xs, ws, s, p, backend="numpy")

dx_transposed = conv_transpose2d_forward(g, ws, None, s, p, backend="numpy")
print("dx == conv_transpose2d(g, w):", np.allclose(dx, dx_transposed), "(shapes", dx.shape, dx_transposed.shape, ")")

dw_loops = np.zeros_like(ws)
xp = np.pad(xs, ((0, 0), (0, 0), (p, p), (p, p)))
for i in range(3):
    for j in range(3):
        seen = xp[:, :, i: i + s * (g.shape[2] - 1) + 1: s, j: j + s * (g.shape[3] - 1) + 1: s]
        dw_loops[:, :, i, j] = np.einsum("nohw,nchw->oc", g, seen)  # correlate g with what tap (i, j) saw
print("dw == correlation of x and g:", np.allclose(dw, dw_loops))

# %% [markdown]
# For a **stride-1** convolution the transposed convolution is itself an ordinary convolution:
# $dx[c,h,w] = \sum_{o,i,j} g[o, h + p - i d, w + p - j d]\, w[o,c,i,j]$ is the correlation of `g`
# with the kernel flipped in both spatial axes and its two channel axes swapped, padded by
# $d(k-1) - p$. The `"cpu"` backend computes `dx` that way (im2col of `g` and one product whose inner
# size is $O k_h k_w$, instead of a product with inner size $O$ followed by col2im's scatter):

# %%
g1 = rng.standard_normal(conv2d_forward(xs, ws, None, 1, p, backend="numpy").shape)
dx1 = conv2d_backward(g1, xs, ws, 1, p, need=(True, False, False), backend="numpy")[0]
w_flipped = ws.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]  # (C, O, kh, kw), rotated 180 degrees
print("stride 1: dx == conv2d(g, flipped w, padding k-1-p):",
      np.allclose(dx1, conv2d_forward(g1, np.ascontiguousarray(w_flipped), None, 1, 3 - 1 - p, backend="numpy")))

# %% [markdown]
# ### Transposed convolution's uneven coverage
#
# A consequence of "dx is a transposed convolution": with a 3x3 kernel and stride 2, some input
# pixels sit under one window, some under two, some under four. Setting every weight and every
# output gradient to 1 makes `dx` count the windows that cover each pixel:

# %%
cover = conv2d_backward(np.ones((1, 1, 4, 4)), np.zeros((1, 1, 8, 8)), np.ones((1, 1, 3, 3)), 2, 1,
                        need=(True, False, False), backend="cpu")[0][0, 0]
fig, ax = plt.subplots(figsize=(4, 4))
im = ax.imshow(cover, cmap="viridis")
for (r, c), v in np.ndenumerate(cover):
    ax.text(c, r, int(v), ha="center", va="center", color="w")
ax.set(title="windows covering each input pixel\n(3x3, stride 2, padding 1)", xlabel="column", ylabel="row")
plt.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# What to see: the 1-2-4 checkerboard. Gradients flowing back through a strided conv (and outputs
# of a strided transposed conv) are uneven in exactly this pattern. The mask head's transposed conv
# uses kernel 2 with stride 2, which tiles the output with no overlap, so every pixel is covered once.
#
# ## A finite-difference check, by hand
#
# Take the scalar $L = \sum y \cdot G$ for a fixed random $G$ (so $\partial L / \partial y = G$).
# Nudging one weight by $\pm\varepsilon$ and differencing $L$ estimates $\partial L/\partial w$ with an
# error of order $\varepsilon^2$; in float64 it should agree with the analytic `dw` to about 1e-8.

# %%
def loss(x_, w_, b_):
    return np.sum(conv2d_forward(x_, w_, b_, s, p, backend="numpy") * g)


bs = rng.standard_normal(4)
dx, dw, db = conv2d_backward(g, xs, ws, s, p, backend="numpy")
eps = 1e-6
fd_errors = []
for name, arr, grad, idx in [("w", ws, dw, (1, 2, 0, 2)), ("w", ws, dw, (3, 0, 1, 1)),
                             ("x", xs, dx, (0, 1, 3, 4)), ("x", xs, dx, (1, 2, 0, 0)), ("b", bs, db, (2,))]:
    old = arr[idx]
    arr[idx] = old + eps
    hi = loss(xs, ws, bs)
    arr[idx] = old - eps
    lo = loss(xs, ws, bs)
    arr[idx] = old
    numeric = (hi - lo) / (2 * eps)
    fd_errors.append(abs(grad[idx] - numeric))
    print(f"d{name}{list(idx)}: analytic {grad[idx]: .9f}, finite difference {numeric: .9f}, "
          f"|diff| {abs(grad[idx] - numeric):.1e}")
display(Markdown(f"Every entry agrees to {max(fd_errors):.0e} or better. The test suite runs the same check over "
                 "*every* entry of x, w and b (`minirc.testing.gradcheck`), for conv2d, conv_transpose2d and "
                 "linear, and then checks that the cpu and CUDA backwards equal the NumPy one."))
