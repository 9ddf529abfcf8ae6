"""2-D convolution (cross-correlation, as in ``torch.nn.functional.conv2d``), forward and backward.

Shape shorthand: x (N, C, H, W) input, w (O, C, kh, kw) weight, b (O,) bias, y (N, O, Ho, Wo) with
``Ho = (H + 2 ph - dh (kh - 1) - 1) // sh + 1`` (same for Wo), where s/p/d are stride, padding, dilation::

    y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] * x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]

(taps that fall in the zero padding contribute nothing). The reference computes it as a matrix
product through *im2col*: ``cols[n]`` is a (C*kh*kw, Ho*Wo) matrix whose row ``(c, i, j)`` holds the
input pixel that tap (i, j) of channel c sees at each output position, so ``y[n] = W @ cols[n]``
with ``W = w.reshape(O, C*kh*kw)``. The backward pass is two more matrix products:

* ``dw = sum_n g[n] @ cols[n]^T`` -- a correlation of x with grad_out;
* ``dx[n] = col2im(W^T @ g[n])`` -- col2im, the adjoint of im2col, sends every column entry back to
  the pixel it was copied from, summing overlaps: dx is a transposed convolution of grad_out.

Backends: "numpy" (the reference: im2col by slicing, one loop over kernel taps), "cpu" (im2col
by a Numba kernel and a BLAS product per block of output columns, blocks shared among
threads; Winograd F(2x2, 3x3) for big 3x3 stride-1 convs, :mod:`minirc.ops._winograd`; dx of a
stride-1 conv as a conv of g, of a strided or dilated conv by col2im in blocks of input channels
shared among threads), "cuda" (one thread per cols element for im2col, the tiled GEMM of
:mod:`minirc.ops.matmul`, and a col2im in which each input pixel *gathers* its contributions:
deterministic, no atomics).
See docs/conv.md for the derivation and the measured speed.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np
from numba import cuda, njit, uint64

from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, device_zeros, like_input, to_device
# Geometry is re-exported: im2col_numpy takes one, and notebook 01 imports both from this module
from minirc.ops._conv_args import Geometry, check_conv_inputs, check_grad_out, geometry, output_size  # noqa: F401
from minirc.ops.matmul import gemm_cuda_device
from minirc.ops import _winograd as winograd
from minirc.ops._conv_blocks import GROUPS, col2im_blocks, each_block, im2col_blocks, scratch
from minirc.ops.split_gemm import split_dot


# ---- NumPy reference: the spec -------------------------------------------------------------------
def im2col_numpy(x, geom, out_hw):
    """(N, C, H, W) -> cols (N, C*kh*kw, Ho*Wo); row (c, i, j), column (oh, ow)."""
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    (n, c, _, _), (ho, wo) = x.shape, out_hw
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    cols = np.empty((n, c, kh, kw, ho, wo), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # tap (i, j) sees padded pixel (oh*sh + i*dh, ow*sw + j*dw) at output (oh, ow)
            cols[:, :, i, j] = xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh,
                                  j * dw: j * dw + sw * (wo - 1) + 1: sw]
    return cols.reshape(n, c * kh * kw, ho * wo)


def col2im_numpy(cols, x_shape, geom, out_hw):
    """The adjoint of im2col: (N, C*kh*kw, Ho*Wo) -> (N, C, H, W), overlapping taps summed."""
    kh, kw, sh, sw, ph, pw, dh, dw = geom
    (n, c, h, w), (ho, wo) = x_shape, out_hw
    cols = cols.reshape(n, c, kh, kw, ho, wo)
    xp = np.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            xp[:, :, i * dh: i * dh + sh * (ho - 1) + 1: sh,
               j * dw: j * dw + sw * (wo - 1) + 1: sw] += cols[:, :, i, j]
    return xp[:, :, ph: ph + h, pw: pw + w]  # what landed in the padding is dropped


def _forward_numpy(x, w, geom):
    out_hw = geom.out_size(*x.shape[2:])
    cols = im2col_numpy(x, geom, out_hw)
    y = w.reshape(w.shape[0], -1) @ cols                     # (O, CK) @ (N, CK, P) -> (N, O, P)
    return y.reshape(x.shape[0], w.shape[0], *out_hw)


def _input_grad_numpy(g, w, x_hw, geom):
    n, o, ho, wo = g.shape
    dcols = w.reshape(o, -1).T @ g.reshape(n, o, ho * wo)     # (CK, O) @ (N, O, P) -> (N, CK, P)
    return col2im_numpy(dcols, (n, w.shape[1], *x_hw), geom, (ho, wo))


def _weight_grad_numpy(g, x, geom):
    n, o, ho, wo = g.shape
    cols = im2col_numpy(x, geom, (ho, wo))
    dw = (g.reshape(n, o, ho * wo) @ cols.transpose(0, 2, 1)).sum(axis=0)  # sum_n g[n] @ cols[n]^T
    return dw.reshape(o, x.shape[1], geom.kh, geom.kw)


# ---- Numba CPU ----------------------------------------------------------------------------------
# im2col and its product run block by block, the blocks shared among threads (ops/_conv_blocks.py).
# The col2im of dx (strided and dilated convs) runs by blocks of input channels: _input_grad_col2im.


@njit(cache=True)
def _valid_range(n_out, n_in, stride, offset):
    """Output indices o in [lo, hi) whose tap o*stride + offset lands inside [0, n_in)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    hi = min(n_out, (n_in - 1 - offset) // stride + 1)  # Python floor division, also in Numba
    return lo, max(lo, hi)


@njit(cache=True, nogil=True)
def _col2im_planes_kernel(dcols, n0, n1, c0, c1, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, dx):
    # dx[n, c] = col2im(dcols) for images n0..n1-1 and channels c0..c1-1, whose rows (c, i, j) and
    # columns (n, oh, ow) dcols holds. Each plane is zeroed, then gets its kh*kw taps in a fixed
    # order (bit-for-bit deterministic, no atomics) while it stays in cache. nogil: minirc's
    # threads run blocks of planes side by side. Offsets are unsigned so that Numba drops its
    # negative-index check and the inner loop vectorizes (2.1x faster than 2-D indexing with
    # stride 2, 4.6x with stride 1).
    h, w = dx.shape[2], dx.shape[3]
    positions = ho * wo
    for n in range(n0, n1):
        for c in range(c0, c1):
            plane = dx[n, c].reshape(h * w)
            plane[:] = 0
            for i in range(kh):
                oh_lo, oh_hi = _valid_range(ho, h, sh, i * dh - ph)
                for j in range(kw):
                    ow_lo, ow_hi = _valid_range(wo, w, sw, j * dw - pw)
                    src = dcols[((c - c0) * kh + i) * kw + j]
                    for oh in range(oh_lo, oh_hi):
                        s0 = uint64((n - n0) * positions + oh * wo + ow_lo)
                        d0 = uint64((oh * sh + i * dh - ph) * w + ow_lo * sw + j * dw - pw)
                        for q in range(uint64(ow_hi - ow_lo)):
                            plane[d0 + q * uint64(sw)] += src[s0 + q]


@njit(cache=True, inline="always")
def _zero(a, start, count):
    """a[start : start + count] = 0; start is unsigned, count >= 0."""
    for t in range(uint64(count)):
        a[start + t] = 0


@njit(cache=True, nogil=True)
def _im2col_block_kernel(x, n0, n1, r0, r1, kh, kw, sh, sw, ph, pw, dh, dw, wo, cols):
    # cols[(c, i, j), (n - n0, oh - r0, ow)] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw], 0 where
    # that falls in the padding, for images n0..n1-1 and output rows r0..r1-1. Each (c, i, j, n) is
    # one run of rows * Wo entries of cols. nogil: minirc's threads build blocks side by side.
    # Offsets are unsigned (every term cast, as uint64 + int64 would be a float in Numba), so that
    # Numba drops its negative-index check and the copies vectorise.
    c, h, w = x.shape[1], x.shape[2], x.shape[3]
    xf, cf = x.reshape(x.size), cols.reshape(cols.size)
    rows = r1 - r0
    # stride 1 with Wo == W (a 'same' conv): consecutive output rows read consecutive input rows,
    # so all the rows of a run are one shifted copy; the columns it wraps around are zeroed after
    same = sh == 1 and sw == 1 and wo == w
    q = uint64(0)
    for ch in range(c):
        for i in range(kh):
            a, b = _valid_range(r1, h, sh, i * dh - ph)  # output rows whose tap row is in the image
            a = min(max(a, r0), r1)
            b = min(max(a, b), r1)  # _valid_range's lo (and so hi) can lie past r1: clamp both
            for j in range(kw):
                off = j * dw - pw
                ow_lo, ow_hi = _valid_range(wo, w, sw, off)
                ow_lo, ow_hi = min(ow_lo, wo), min(ow_hi, wo)
                for n in range(n0, n1):
                    plane = (n * c + ch) * h * w
                    _zero(cf, q, (a - r0) * wo)                              # rows above the image
                    _zero(cf, q + uint64((b - r0) * wo), (r1 - b) * wo)      # rows below it
                    if same and b > a:
                        d0 = q + uint64((a - r0) * wo)
                        # entry t of the run is x's flat entry s0 + t (s0 may be negative: the
                        # unsigned sum wraps back); t from max(0, -off) to (b - a) * Wo - max(0, off)
                        # keeps the reads inside rows a..b-1 of the plane
                        s0 = uint64(plane + (a + i * dh - ph) * w + off)
                        t0 = max(0, -off)
                        t1 = max(t0, (b - a) * wo - max(0, off))
                        for t in range(uint64(t0), uint64(t1)):
                            cf[d0 + t] = xf[s0 + t]
                        for r in range(b - a):
                            e = d0 + uint64(r * wo)
                            _zero(cf, e, ow_lo)
                            _zero(cf, e + uint64(ow_hi), wo - ow_hi)
                    else:
                        for r in range(a, b):
                            e = q + uint64((r - r0) * wo)
                            _zero(cf, e, ow_lo)
                            s0 = uint64(plane + (r * sh + i * dh - ph) * w + ow_lo * sw + off)
                            d0 = e + uint64(ow_lo)
                            if sw == 1:
                                for t in range(uint64(ow_hi - ow_lo)):
                                    cf[d0 + t] = xf[s0 + t]
                            else:
                                for t in range(uint64(ow_hi - ow_lo)):
                                    cf[d0 + t] = xf[s0 + t * uint64(sw)]
                            _zero(cf, e + uint64(ow_hi), wo - ow_hi)
                    q += uint64(rows * wo)


def _cols_cpu(x, blk, geom, wo):
    """The block's cols, in this thread's scratch buffer (slot 0): rows (c, i, j), columns
    (n, oh, ow) for images n0..n1-1 and output rows r0..r1-1 of blk, read from x (C-contiguous)
    by one Numba kernel that writes the zero padding as it goes.

    On the blocks of a demo training step this is 1.5x faster than padding the block's rows into a
    buffer and copying a strided view of it with ``np.copyto`` (docs/performance.md).
    """
    n0, n1, r0, r1 = blk
    x = np.ascontiguousarray(x)
    cols = scratch((x.shape[1] * geom.kh * geom.kw, (n1 - n0) * (r1 - r0) * wo), x.dtype)
    _im2col_block_kernel(x, n0, n1, r0, r1, *geom, wo, cols)
    return cols


def _grad_block(g3, blk, wo):
    """The (O, columns) slice of grad_out (N, O, P) that a block covers: a strided view BLAS reads
    directly when the block lies in one image, a copy when it spans several."""
    n0, n1, r0, r1 = blk
    if n1 - n0 == 1:
        return g3[n0][:, r0 * wo: r1 * wo]
    return g3[n0:n1].transpose(1, 0, 2).reshape(g3.shape[1], -1)


def _forward_cpu(x, w, geom):
    """y = conv2d(x, w), no bias."""
    (n, c, h, wd), o = x.shape, w.shape[0]
    ho, wo = geom.out_size(h, wd)
    if winograd.applies(geom, c, o, n * ho * wo):  # 3x3 stride 1: 2.25x fewer multiplications
        return winograd.conv2d_winograd(x, w, geom)
    w2 = w.reshape(o, -1)
    y = np.empty((n, o, ho * wo), dtype=x.dtype)
    if geom.is_pointwise():  # a plain matrix product
        for k in range(n):
            split_dot(w2, x[k].reshape(c, -1), out=y[k])
        return y.reshape(n, o, ho, wo)

    def block_product(_, blk, dot):
        n0, n1, r0, r1 = blk
        cols = _cols_cpu(x, blk, geom, wo)
        if n1 - n0 == 1:  # straight into the output rows of the band
            dot(w2, cols, out=y[n0][:, r0 * wo: r1 * wo])
        else:
            y[n0:n1] = dot(w2, cols).reshape(o, n1 - n0, -1).transpose(1, 0, 2)
    each_block(*im2col_blocks(n, ho, wo, w2.shape[1], o, x.itemsize), block_product)
    return y.reshape(n, o, ho, wo)


def _full_correlation_geometry(geom):
    """The geometry under which dx of a stride-1 conv is itself a stride-1 conv (docs/conv.md).

    dx[c, h, w] = sum_{o,i,j} g[o, h + p - i*d, w + p - j*d] * w[o, c, i, j] is the correlation of g
    with the kernel flipped and its two channel axes swapped, padded by d*(k-1) - p. None where that
    padding would be negative or the stride is not 1 (then col2im is the way back).
    """
    ph, pw = geom.dh * (geom.kh - 1) - geom.ph, geom.dw * (geom.kw - 1) - geom.pw
    if (geom.sh, geom.sw) != (1, 1) or ph < 0 or pw < 0 or geom.is_pointwise():
        return None
    return Geometry(geom.kh, geom.kw, 1, 1, ph, pw, geom.dh, geom.dw)


def _input_grad_cpu(g, w, x_hw, geom):
    (n, o), c = g.shape[:2], w.shape[1]
    full = _full_correlation_geometry(geom)
    if full is not None:
        # im2col of g and one GEMM with K = O*kh*kw replaces a GEMM with K = O (narrow, slow in
        # OpenBLAS) followed by the read-modify-write scatter of col2im (docs/conv.md)
        return _forward_cpu(g, np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1]), full)
    if geom.is_pointwise():  # dx[n] = W^T @ g[n], col2im would only copy
        w2t = np.ascontiguousarray(w.reshape(o, c).T)
        dx = np.empty((n, c, *x_hw), dtype=g.dtype)
        for k in range(n):
            split_dot(w2t, g[k].reshape(o, -1), out=dx[k].reshape(c, -1))
        return dx
    return _input_grad_col2im(g, w, x_hw, geom)


def _input_grad_col2im(g, w, x_hw, geom):
    """dx of a strided or dilated conv: dcols = W^T @ g, then col2im, by blocks of input channels.

    A block's rows of W^T give exactly the dcols rows that its dx planes need, so blocks write
    disjoint planes and run on all threads, each dcols block in the thread's scratch and read
    back while it is still in cache. (Until 2026-12-06: one GEMM split over the threads into a
    fresh dcols, then a col2im by prange: 6.7-7.7 ms against 3.2-3.3 for the stride-2 bench
    conv's dx on two threads, docs/conv.md.)
    """
    (n, o, ho, wo), c = g.shape, w.shape[1]
    taps = geom.kh * geom.kw
    w2t = np.ascontiguousarray(w.reshape(o, -1).T)           # (C*taps, O), small: copied once
    g3 = g.reshape(n, o, ho * wo)
    dx = np.empty((n, c, *x_hw), dtype=g.dtype)

    def block_col2im(_, blk, dot):
        n0, n1, c0, c1 = blk
        g_block = _grad_block(g3, (n0, n1, 0, ho), wo)  # whole images
        dcols = scratch(((c1 - c0) * taps, g_block.shape[1]), g.dtype)
        dot(w2t[c0 * taps: c1 * taps], g_block, out=dcols)
        _col2im_planes_kernel(dcols, n0, n1, c0, c1, *geom, ho, wo, dx)
    each_block(*col2im_blocks(n, c, ho * wo, taps, o, g.itemsize), block_col2im)
    return dx


def _weight_grad_cpu(g, x, geom):
    n, o, ho, wo = g.shape
    c, ck = x.shape[1], x.shape[1] * geom.kh * geom.kw
    g3 = g.reshape(n, o, ho * wo)
    if geom.is_pointwise():
        dw_t = np.zeros((c, o), dtype=g.dtype)
        for k in range(n):
            dw_t += split_dot(x[k].reshape(c, -1), g3[k].T)
        return np.ascontiguousarray(dw_t.T).reshape(o, c, 1, 1)
    block_list, work = im2col_blocks(n, ho, wo, ck, o, x.itemsize)
    partial = np.zeros((min(GROUPS, len(block_list)), ck, o), dtype=g.dtype)

    def block_product(grp, blk, dot):
        # dw^T += cols @ g^T: the same product as g @ cols^T, but OpenBLAS ran this orientation
        # (long rows of cols, few output channels) faster in our measurements (docs/conv.md)
        partial[grp] += dot(_cols_cpu(x, blk, geom, wo), _grad_block(g3, blk, wo).T)
    each_block(block_list, work, block_product)
    dw_t = np.zeros((ck, o), dtype=g.dtype)
    for p in partial:  # in group order: the same sum whatever the thread count
        dw_t += p
    return np.ascontiguousarray(dw_t.T).reshape(o, c, geom.kh, geom.kw)


# ---- Numba CUDA -----------------------------------------------------------------------------------
@cuda.jit
def _im2col_cuda_kernel(x, n, kh, kw, sh, sw, ph, pw, dh, dw, wo, cols):
    # one thread per element of cols (C*kh*kw, Ho*Wo) for image n
    t = cuda.grid(1)
    p_total = cols.shape[1]
    if t >= cols.shape[0] * p_total:
        return
    r, p = t // p_total, t % p_total
    c, i, j = r // (kh * kw), (r // kw) % kh, r % kw
    ih = (p // wo) * sh + i * dh - ph
    iw = (p % wo) * sw + j * dw - pw
    if 0 <= ih < x.shape[2] and 0 <= iw < x.shape[3]:
        cols[r, p] = x[n, c, ih, iw]
    else:
        cols[r, p] = 0


@cuda.jit
def _col2im_cuda_kernel(dcols, n, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, dx):
    # one thread per input pixel (c, ih, iw) of image n; it *gathers* the dcols entries of the taps
    # that saw it (oh*sh + i*dh - ph == ih): each output written by one thread, no atomics
    t = cuda.grid(1)
    _, c_in, h, w = dx.shape
    if t >= c_in * h * w:
        return
    c, ih, iw = t // (h * w), (t // w) % h, t % w
    dx[n, c, ih, iw] = 0
    for i in range(kh):
        th = ih + ph - i * dh
        if th < 0 or th % sh != 0 or th // sh >= ho:
            continue
        for j in range(kw):
            tw = iw + pw - j * dw
            if tw < 0 or tw % sw != 0 or tw // sw >= wo:
                continue
            dx[n, c, ih, iw] += dcols[(c * kh + i) * kw + j, (th // sh) * wo + tw // sw]


def _dev_matrix(a, rows):
    """A contiguous device array viewed as (rows, -1) without leaving the device."""
    return a.reshape(rows, a.size // rows if rows else 0)


def _forward_cuda(x, w, geom):
    (n, c, h, wd), o = x.shape, w.shape[0]
    ho, wo = geom.out_size(h, wd)
    w2 = _dev_matrix(w, o)
    y = cuda.device_array((n, o, ho * wo), dtype=x.dtype)
    cols = cuda.device_array((c * geom.kh * geom.kw, ho * wo), dtype=x.dtype)
    for k in range(n):  # per image: cols is reused, memory stays O(one image)
        _im2col_cuda_kernel[blocks_for(cols.size), 256](x, k, *geom, wo, cols)
        gemm_cuda_device(w2, cols, y[k])
    return y.reshape(n, o, ho, wo)


def _input_grad_cuda(g, w, x_hw, geom):
    (n, o, ho, wo), c = g.shape, w.shape[1]
    w2 = _dev_matrix(w, o)
    dx = cuda.device_array((n, c, *x_hw), dtype=g.dtype)
    dcols = cuda.device_array((w2.shape[1], ho * wo), dtype=g.dtype)
    for k in range(n):
        gemm_cuda_device(w2, _dev_matrix(g[k], o), dcols, transpose_a=True)  # W^T @ g[k]
        _col2im_cuda_kernel[blocks_for(c * x_hw[0] * x_hw[1]), 256](dcols, k, *geom, ho, wo, dx)
    return dx


def _weight_grad_cuda(g, x, geom):
    n, o, ho, wo = g.shape
    c = x.shape[1]
    if n == 0:  # an empty sum
        return device_zeros((o, c, geom.kh, geom.kw), g.dtype)
    dw = cuda.device_array((o, c * geom.kh * geom.kw), dtype=g.dtype)
    cols = cuda.device_array((dw.shape[1], ho * wo), dtype=g.dtype)
    for k in range(n):  # images in a fixed order; the first one overwrites, later ones add
        _im2col_cuda_kernel[blocks_for(cols.size), 256](x, k, *geom, wo, cols)
        gemm_cuda_device(_dev_matrix(g[k], o), cols, dw, transpose_b=True, accumulate=k > 0)
    return dw.reshape(o, c, geom.kh, geom.kw)


@cuda.jit
def _add_bias_cuda_kernel(y, b):
    # one thread per element of y (N, O, P), in place
    t = cuda.grid(1)
    n, o, p = y.shape
    if t < n * o * p:
        y[t // (o * p), (t // p) % o, t % p] += b[(t // p) % o]


@cuda.jit
def _bias_grad_cuda_kernel(g, db):
    # one thread per output channel, summing over images and positions in a fixed order
    k = cuda.grid(1)
    n, o, p = g.shape
    if k >= o:
        return
    db[k] = 0
    for m in range(n):
        for q in range(p):
            db[k] += g[m, k, q]


def _flat3(a):
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])


def _add_bias_cuda(y, b):
    if y.size:  # never launch an empty grid
        _add_bias_cuda_kernel[blocks_for(y.size), 256](_flat3(y), b)
    return y


def _bias_grad_cuda(g):
    db = cuda.device_array(g.shape[1], dtype=g.dtype)
    if g.shape[1]:
        _bias_grad_cuda_kernel[blocks_for(g.shape[1]), 256](_flat3(g), db)
    return db


# ---- dispatch ------------------------------------------------------------------------------------
class ConvKernels(NamedTuple):
    """One backend's conv building blocks, on that backend's arrays (NumPy, or CUDA device arrays).

    conv_transpose2d is built from the same blocks: its forward is conv's input_grad.
    """
    forward: Callable      # (x, w, geom) -> y, no bias
    input_grad: Callable   # (g, w, (H, W), geom) -> dx
    weight_grad: Callable  # (g, x, geom) -> dw
    add_bias: Callable     # (y, b) -> y + b[:, None, None]
    bias_grad: Callable    # (g) -> g summed over (N, H, W)
    wrap: Callable         # array -> backend array
    unwrap: Callable       # (result, *inputs) -> NumPy, or device array when an input was one


def _add_bias_host(y, b):
    y += b[:, None, None]
    return y


def _bias_grad_host(g):
    return g.sum(axis=(0, 2, 3))


def _host(a):
    return np.ascontiguousarray(a)


_IMPLS = {
    "numpy": ConvKernels(_forward_numpy, _input_grad_numpy, _weight_grad_numpy,
                         _add_bias_host, _bias_grad_host, _host, lambda r, *_: r),
    "cpu": ConvKernels(_forward_cpu, _input_grad_cpu, _weight_grad_cpu,
                       _add_bias_host, _bias_grad_host, _host, lambda r, *_: r),
    "cuda": ConvKernels(_forward_cuda, _input_grad_cuda, _weight_grad_cuda,
                        _add_bias_cuda, _bias_grad_cuda, to_device, like_input),
}


def conv_kernels(backend=None) -> ConvKernels:
    return _IMPLS[get_backend(backend)]


# ---- public entry points ---------------------------------------------------------------------------
def conv2d_forward(x, w, b=None, stride=1, padding=0, dilation=1, backend=None):
    """y = conv2d(x, w, b): x (N, C, H, W), w (O, C, kh, kw), b (O,) or None -> (N, O, Ho, Wo).

    float32 or float64 (all one dtype); stride >= 1, padding >= 0, dilation >= 1, each an int or
    an (h, w) pair. On "cuda", device-array inputs give a device-array result.
    """
    x, w, b = check_conv_inputs(x, w, b)
    geom = geometry(w.shape[2:], stride, padding, dilation)
    output_size(x.shape, geom, out_channels=w.shape[0])
    k = conv_kernels(backend)
    y = k.forward(k.wrap(x), k.wrap(w), geom)
    if b is not None:
        y = k.add_bias(y, k.wrap(b))
    return k.unwrap(y, x, w, b)


def conv2d_backward(grad_out, x, w, stride=1, padding=0, dilation=1, need=(True, True, True),
                    backend=None):
    """Gradients of conv2d: returns (dx (N, C, H, W), dw (O, C, kh, kw), db (O,)).

    grad_out: (N, O, Ho, Wo), the gradient of the loss w.r.t. y; need: three bools saying which of
    (dx, dw, db) to compute -- the others are returned as None.
    """
    x, w, _ = check_conv_inputs(x, w, None)
    geom = geometry(w.shape[2:], stride, padding, dilation)
    expected = (x.shape[0], w.shape[0], *output_size(x.shape, geom, out_channels=w.shape[0]))
    g = check_grad_out(grad_out, x, expected, "the convolution")
    k = conv_kernels(backend)
    gs = k.wrap(g)
    dx = k.input_grad(gs, k.wrap(w), x.shape[2:], geom) if need[0] else None
    dw = k.weight_grad(gs, k.wrap(x), geom) if need[1] else None
    db = k.bias_grad(gs) if need[2] else None
    return tuple(None if r is None else k.unwrap(r, grad_out, x, w) for r in (dx, dw, db))
