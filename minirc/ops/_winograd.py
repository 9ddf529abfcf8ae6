"""Winograd's minimal filtering F(2x2, 3x3): a 3x3 stride-1 convolution with 2.25x fewer multiplications.

Used by the cpu backend's conv2d (:mod:`minirc.ops.conv2d`) for 3x3, stride-1, undilated convs that
are big enough (:func:`applies`), and so for their input gradient too, which is itself such a conv.
The NumPy reference stays the plain im2col product; tests hold the two equal to float32 rounding.

The method (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016). Cut the output
into 2x2 tiles; tile (ty, tx) needs the 4x4 input patch ``d`` at padded rows/columns 2ty.., 2tx...
For one input and one output channel the tile is ``Y = A^T [(G g G^T) * (B^T d B)] A``, where ``*``
multiplies elementwise, g is the 3x3 kernel and

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

16 multiplications per tile instead of 2*2*9 = 36. Summed over input channels, each of the 16
positions (a, b) of the 4x4 transformed tile is a matrix product over channels:
``M[ab] (O x tiles) = U[ab] (O x C) @ V[ab] (C x tiles)`` with ``U = G g G^T`` (the weights,
transformed once per call) and ``V = B^T d B`` (the input tiles). So the work is: transform the input
tiles (adds only), 16 GEMMs of inner size C, transform back (adds only). In float32 the result
differs from the direct sum by rounding only (relative error ~4e-7 of the output's scale on the
benchmark shapes, against ~5e-7 for the im2col product; both against a float64 reference).

The tiles are processed in blocks of tile rows (minirc.ops._conv_blocks), shared among minirc's GEMM
threads: each thread transforms its block's tiles into a scratch buffer, multiplies, and writes its
own rows of the output.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from minirc.ops._conv_blocks import MIN_SHARED_COLUMNS, each_block, im2col_blocks, padded_slab, scratch

# G (4 x 3): the weight transform; U[a*4 + b] = sum_ij G[a, i] G[b, j] g[i, j] = kron(G, G) @ g.ravel()
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])
_KRON_G = np.kron(G, G)  # (16, 9)
# below this many multiply-adds of the direct conv, or with fewer input channels, Winograd's gain is
# small or lost: the transforms cost about as much as the im2col copy, and narrow GEMMs (inner size
# C) lose their edge. benchmarks/bench_conv_paths.py, im2col time / Winograd time: 0.74-0.85 for
# 4x16x32x32 and 4x128x4x4 (9.4 M multiply-adds) and 1.10-1.52 on the admitted shapes (first
# measured); after im2col's per-block padding, 0.80-0.89 for 4x128x4x4, 0.92-1.55 for 4x16x32x32
# (0.4 ms, noisy) and 1.09-1.63 on the admitted shapes (docs/conv.md)
MIN_WORK = 2 ** 24
MIN_CHANNELS = 32
# bands of tiles of a big map (see _tile_blocks): V and M of a band within about 1 MiB, so that
# they stay in a core's L2 cache (2 MiB here) between the input transform, the products and the
# output transform; only where that leaves at least MIN_BAND_TILES tiles a band (<= 64 + 64
# channels in float32): narrower products lost more than the cache gained.
# benchmarks/bench_conv_paths.py, time with 4 MiB blocks / with bands, four runs on 1 and 2
# threads: 1.02-1.30 on 64 channels at 32-128 px; with bands of 128 tiles forced on 128 and 256
# channels, 0.87-1.06 and 0.99-1.13, now not banded (docs/conv.md)
L2_TILE_BYTES = 2 ** 20
MIN_BAND_TILES = 128


def applies(geom, in_channels, out_channels, n_outputs):
    """Whether conv2d's cpu backend runs this conv through F(2x2, 3x3).

    geom: the conv's Geometry; n_outputs: N * Ho * Wo.
    """
    shape_ok = (geom.kh, geom.kw, geom.sh, geom.sw, geom.dh, geom.dw) == (3, 3, 1, 1, 1, 1)
    work = n_outputs * in_channels * 9 * out_channels
    return shape_ok and in_channels >= MIN_CHANNELS and work >= MIN_WORK


def weight_transform(w):
    """U = G g G^T for every (output, input) channel pair: (O, C, 3, 3) -> (16, O, C)."""
    o, c = w.shape[:2]
    u = _KRON_G.astype(w.dtype) @ w.reshape(o * c, 9).T  # (16, O*C)
    return np.ascontiguousarray(u.reshape(16, o, c))


@njit(cache=True, nogil=True)
def _input_tiles(xp, n0, n1, r0, r1, tw, v):
    # V = B^T d B for the tiles of images n0..n1-1, tile rows r0..r1-1, into v (16, C, tiles).
    # Per (channel, tile row): first B^T on whole rows (contiguous loads), kept as even and odd
    # columns, then B on the columns: tile tx reads columns 2tx..2tx+3 = even[tx], odd[tx],
    # even[tx+1], odd[tx+1], so every loop below runs over contiguous memory and vectorises.
    nc = xp.shape[1]
    ev = np.empty((4, tw + 1), xp.dtype)
    od = np.empty((4, tw + 1), xp.dtype)
    for c in range(nc):
        col = 0
        for n in range(n0, n1):
            for ty in range(r0, r1):
                p0, p1 = xp[n, c, 2 * ty], xp[n, c, 2 * ty + 1]
                p2, p3 = xp[n, c, 2 * ty + 2], xp[n, c, 2 * ty + 3]
                for j in range(tw + 1):  # rows of B^T d: d0 - d2, d1 + d2, d2 - d1, d1 - d3
                    e, f = 2 * j, 2 * j + 1
                    ev[0, j], od[0, j] = p0[e] - p2[e], p0[f] - p2[f]
                    ev[1, j], od[1, j] = p1[e] + p2[e], p1[f] + p2[f]
                    ev[2, j], od[2, j] = p2[e] - p1[e], p2[f] - p1[f]
                    ev[3, j], od[3, j] = p1[e] - p3[e], p1[f] - p3[f]
                for i in range(4):  # columns, (...) B: the same four combinations
                    e_, o_ = ev[i], od[i]
                    v0, v1 = v[4 * i, c, col: col + tw], v[4 * i + 1, c, col: col + tw]
                    v2, v3 = v[4 * i + 2, c, col: col + tw], v[4 * i + 3, c, col: col + tw]
                    for tx in range(tw):
                        v0[tx] = e_[tx] - e_[tx + 1]
                        v1[tx] = o_[tx] + e_[tx + 1]
                        v2[tx] = e_[tx + 1] - o_[tx]
                        v3[tx] = o_[tx] - o_[tx + 1]
                col += tw


@njit(cache=True, nogil=True)
def _output_tiles(m, n0, n1, r0, r1, tw, y):
    # Y = A^T M A for the block's tiles, M (16, O, tiles) -> the 2x2 outputs in y (N, O, Ho, Wo);
    # a tile that hangs over an odd Ho or Wo writes only the outputs that exist
    no, ho, wo = y.shape[1], y.shape[2], y.shape[3]
    for o in range(no):
        col = 0
        for n in range(n0, n1):
            for ty in range(r0, r1):
                for tx in range(tw):
                    k = col + tx
                    # A^T M: row 0 = M0 + M1 + M2, row 1 = M1 - M2 - M3 (rows of 4 entries each)
                    s0 = m[0, o, k] + m[4, o, k] + m[8, o, k]
                    s1 = m[1, o, k] + m[5, o, k] + m[9, o, k]
                    s2 = m[2, o, k] + m[6, o, k] + m[10, o, k]
                    s3 = m[3, o, k] + m[7, o, k] + m[11, o, k]
                    d0 = m[4, o, k] - m[8, o, k] - m[12, o, k]
                    d1 = m[5, o, k] - m[9, o, k] - m[13, o, k]
                    d2 = m[6, o, k] - m[10, o, k] - m[14, o, k]
                    d3 = m[7, o, k] - m[11, o, k] - m[15, o, k]
                    oy, ox = 2 * ty, 2 * tx
                    y[n, o, oy, ox] = s0 + s1 + s2  # (...) A: the same two combinations
                    if ox + 1 < wo:
                        y[n, o, oy, ox + 1] = s1 - s2 - s3
                    if oy + 1 < ho:
                        y[n, o, oy + 1, ox] = d0 + d1 + d2
                        if ox + 1 < wo:
                            y[n, o, oy + 1, ox + 1] = d1 - d2 - d3
                col += tw


def conv2d_winograd(x, w, geom):
    """y = conv2d(x, w), no bias, for a 3x3 stride-1 undilated geom: (N, C, H, W) -> (N, O, Ho, Wo)."""
    (n, c, h, wd), o = x.shape, w.shape[0]
    ho, wo = geom.out_size(h, wd)
    th, tw = (ho + 1) // 2, (wo + 1) // 2  # tiles per column and row; the last may hang over
    u = weight_transform(w)
    y = np.empty((n, o, ho, wo), dtype=x.dtype)

    def block(_, blk, __):
        n0, n1, r0, r1 = blk
        tiles = (n1 - n0) * (r1 - r0) * tw
        # the padded rows of the block's 4x4 patches, 2*tw + 2 columns wide to hold whole patches
        xp = padded_slab(x, n0, n1, 2 * r0, 2 * r1 + 2, geom.ph, geom.pw, 2 * tw + 2)
        v = scratch((16, c, tiles), x.dtype, slot=0)
        _input_tiles(xp, 0, n1 - n0, 0, r1 - r0, tw, v)
        m = scratch((16, o, tiles), x.dtype, slot=1)
        np.matmul(u, v, out=m)  # the 16 products, one after another on this thread
        _output_tiles(m, n0, n1, r0, r1, tw, y)
    each_block(*_tile_blocks(n, th, tw, c, o, x.itemsize), block)
    return y


def _tile_blocks(n, th, tw, c, o, itemsize):
    """The blocks of tiles of a conv (N images of th x tw tiles) and its multiply-adds.

    A block's V (16*C values a tile) and M (16*O) stay in a core's L2 cache when a big map is cut
    into bands of L2_TILE_BYTES of them, where such a band holds at least MIN_BAND_TILES tiles;
    small maps are grouped whole, as im2col groups them (bands of 128 tiles made the 14x14 RoI
    maps of the mask head 1.0-1.5x slower: per-block costs). A tile is 4 outputs, so the threads
    share blocks down to a quarter of im2col's columns (a single block of a 4x64x16x16 conv ran
    1.4x slower).
    """
    band = L2_TILE_BYTES // (16 * (c + o) * itemsize)
    banded = band >= MIN_BAND_TILES and th * tw > band
    block_list, _ = im2col_blocks(n, th, tw, 16 * c, o, itemsize, min_shared=MIN_SHARED_COLUMNS // 4,
                                  max_columns=band if banded else None)
    return block_list, n * th * tw * 16 * c * o
