"""How the cpu backend's convolution cuts its work into blocks and shares them among threads.

A conv's im2col matrix ``cols`` (C*kh*kw rows, one column per output pixel) is never built whole.
Its columns are cut into *blocks* -- bands of output rows of one image, or several whole small
images -- of about BLOCK_BYTES each. Each block's cols are built in a scratch buffer that belongs to
the thread and multiplied at once; the blocks are shared among minirc's GEMM threads
(:mod:`minirc.ops.split_gemm`), so the im2col copies run on every core, not one, and no fresh memory
is faulted in per call. This replaced building all of cols with one thread and then splitting the
GEMM: stride-1 3x3 convs of ``benchmarks/bench_conv.py`` ran 1.0-2.3x faster with two threads and
1.1-1.5x with one (docs/conv.md, 2026-12-06).

Determinism: the blocks depend on the shapes alone, never on the thread count. A sum over blocks
(the weight gradient) deals block i to accumulator i % GROUPS; each accumulator is run in block
order by one thread and the accumulators are added in order at the end: the same bits whatever the
thread count.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from minirc.ops.split_gemm import MIN_SPLIT_WORK, gemm_executor, gemm_threads, split_dot

# 1 to 16 MiB blocks measured alike within the noise of the shared machine; 4 MiB was kept
BLOCK_BYTES = 4 * 2**20
GROUPS = 4
# below this many multiply-adds a conv runs on the calling thread alone (as split_gemm.MIN_SPLIT_WORK)
MIN_THREADED_WORK = MIN_SPLIT_WORK
# a conv is cut into more blocks than BLOCK_BYTES asks for, to give every thread work, only down to
# this many columns a block: narrower products ran slower than one product split by split_dot (the
# 4x4 maps of the demo model's last stage)
MIN_SHARED_COLUMNS = 256

# scratch slots: 0 and 1 for a block's matrices (cols; Winograd's V and M), SLAB_SLOT for its padded input
SLAB_SLOT = 2

_scratch_space = threading.local()


def scratch(shape, dtype, slot=0):
    """A (shape, dtype) array in this thread's scratch buffer number ``slot``, grown as needed and
    never freed: no fresh pages to fault in at every block. Its contents are gone at the thread's
    next call with the same slot."""
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize  # not np.prod: 40x the cost on a tuple
    buffers = getattr(_scratch_space, "buffers", None)
    if buffers is None:
        buffers = _scratch_space.buffers = {}
    buf = buffers.get(slot)
    if buf is None or buf.size < nbytes:
        buf = buffers[slot] = np.empty(nbytes, dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


def padded_slab(x, n0, n1, top, bottom, ph, pw, width):
    """Rows top..bottom-1 of images n0..n1-1 of x zero-padded by (ph, pw), ``width`` columns wide
    (at least W + 2 pw; any extra columns are zeros too), in this thread's scratch slot SLAB_SLOT.

    Each block pads only the rows it reads, on its own thread: padding the whole input first was
    one serial pass into fresh memory (0.5-0.6 ms of a 3.5-5.4 ms stride-2 forward on two threads).
    """
    _, c, h, w = x.shape
    slab = scratch((n1 - n0, c, bottom - top, width), x.dtype, slot=SLAB_SLOT)
    lo, hi = max(top, ph), max(min(bottom, ph + h), top)  # the padded rows that hold pixels
    slab[:, :, : max(lo - top, 0)] = 0
    slab[:, :, hi - top:] = 0
    slab[:, :, :, :pw] = 0
    slab[:, :, :, pw + w:] = 0
    if hi > lo:
        slab[:, :, lo - top: hi - top, pw: pw + w] = x[n0:n1, :, lo - ph: hi - ph]
    return slab


def blocks(n, ho, wo, columns):
    """(n0, n1, r0, r1) blocks of about ``columns`` output columns each, in a fixed order.

    A big image is cut into bands of output rows of equal height (to within a row); small images
    are grouped, whole, several to a block.
    """
    rows = max(1, columns // max(wo, 1))
    if rows < ho:  # big images: bands of output rows, one image at a time
        parts = -(-ho // rows)
        edges = [ho * i // parts for i in range(parts + 1)]
        return [(k, k + 1, lo, hi) for k in range(n) for lo, hi in zip(edges[:-1], edges[1:])]
    per = max(1, columns // max(ho * wo, 1))  # small images: several whole images per block
    return [(k, min(k + per, n), 0, ho) for k in range(0, n, per)]


def im2col_blocks(n, ho, wo, rows_of_cols, out_channels, itemsize, min_shared=MIN_SHARED_COLUMNS,
                  max_columns=None):
    """The blocks of a conv (N images of Ho x Wo outputs, cols of ``rows_of_cols`` = C*kh*kw rows)
    and its multiply-adds, for :func:`each_block`.

    Blocks of about BLOCK_BYTES of cols; a conv of at least MIN_THREADED_WORK multiply-adds gets at
    least GROUPS blocks where the map allows (down to ``min_shared`` columns), so that every thread
    has one. Winograd's columns are 2x2 tiles and it passes MIN_SHARED_COLUMNS // 4, and a
    ``max_columns`` for its big maps.
    """
    total, work = n * ho * wo, n * ho * wo * rows_of_cols * out_channels
    columns = max(1, BLOCK_BYTES // max(rows_of_cols * itemsize, 1))
    if max_columns is not None:
        columns = min(columns, max_columns)
    if work >= MIN_THREADED_WORK:
        columns = min(columns, max(min_shared, -(-total // GROUPS)))
    return blocks(n, ho, wo, columns), work


def col2im_blocks(n, channels, positions, taps, out_channels, itemsize):
    """(n0, n1, c0, c1) blocks of the input gradient by col2im, and its multiply-adds.

    A block is the images n0..n1-1 and the input channels c0..c1-1: its dcols rows are
    ``taps`` (= kh*kw) per channel, and it writes only those planes of dx -- blocks never
    overlap in dx, so they need no lock and no order. Small images are grouped, whole, to at
    least MIN_SHARED_COLUMNS columns (``positions`` = Ho*Wo per image); the channels are cut so
    that a block's dcols is about BLOCK_BYTES and, for a conv of at least MIN_THREADED_WORK
    multiply-adds, so that there are at least GROUPS blocks where the channels allow.
    """
    per = min(max(n, 1), max(1, -(-MIN_SHARED_COLUMNS // max(positions, 1))))
    image_groups = -(-n // per)
    work = n * positions * channels * taps * out_channels
    width = max(1, BLOCK_BYTES // max(per * positions * taps * itemsize, 1))
    if work >= MIN_THREADED_WORK:
        width = min(width, max(1, -(-channels // -(-GROUPS // max(image_groups, 1)))))
    width = min(width, max(channels, 1))
    return [(k, min(k + per, n), c0, min(c0 + width, channels))
            for k in range(0, n, per) for c0 in range(0, channels, width)], work


def each_block(block_list, multiply_adds, task):
    """Run ``task(group, block, dot)`` for every block, over minirc's GEMM threads.

    Block i belongs to group i % GROUPS; each group's blocks run in order on one thread (so a task
    may add into its group's accumulator without a lock). ``dot`` is the product the task should
    use: one-thread ``np.matmul`` when the blocks are shared among threads, ``split_dot`` (which
    shares the product itself) when they all run on the calling thread -- a single block, or fewer
    than MIN_THREADED_WORK multiply-adds in all.
    """
    groups, pool_size = min(GROUPS, len(block_list)), gemm_threads()
    threads = min(pool_size, groups) if multiply_adds >= MIN_THREADED_WORK else 1
    dot = np.matmul if threads > 1 else split_dot

    def run(first):
        for grp in range(first, groups, threads):
            for blk in block_list[grp::groups]:
                task(grp, blk, dot)
    pending = [gemm_executor(pool_size).submit(run, t) for t in range(1, threads)]
    run(0)  # the calling thread takes the first share
    for p in pending:
        p.result()
