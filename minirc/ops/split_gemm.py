"""``a @ b`` for the cpu backend, its work split over a few sleeping Python threads.

minirc limits OpenBLAS to one thread (:mod:`minirc._threads`): OpenBLAS's own workers spin between
calls and, on a 2-core machine, starve Numba's kernels -- a training step ran 5x slower with them.
But one BLAS thread leaves the other cores idle during the GEMMs, which are most of a step. So a
large product is cut into ``gemm_threads()`` bands of output columns (or rows, when the output is
tall), each band one single-threaded BLAS call; NumPy releases the GIL inside BLAS, so the bands
run at the same time. Our threads wait on a queue between calls: nothing spins.

The cut depends only on the shapes and the thread count, never on timing, so a run is reproducible
on a machine; each output element is one BLAS dot product over the whole K either way.

``MINIRC_GEMM_THREADS`` sets the thread count (default: the cores this process may use, at most
4; ``1`` turns the splitting off). See docs/performance.md for what it buys.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

THREADS_VAR = "MINIRC_GEMM_THREADS"
# below this many multiply-adds (~0.1 ms of BLAS work) a product runs whole, so that the hand-off
# to a thread never costs a noticeable share; a round number, not tuned
MIN_SPLIT_WORK = 2 ** 22
MAX_DEFAULT_THREADS = 4

_pool, _pool_workers = None, 0


def gemm_threads() -> int:
    """The number of bands a large product is cut into (``MINIRC_GEMM_THREADS``, else the cores, <= 4)."""
    value = os.environ.get(THREADS_VAR, "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"{THREADS_VAR}: expected a positive integer, got {value!r}") from None
        if threads < 1:
            raise ValueError(f"{THREADS_VAR}: expected a positive integer, got {value!r}")
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, MAX_DEFAULT_THREADS))


def gemm_executor(threads):
    """The pool of threads - 1 workers (the calling thread takes a share itself); conv2d uses it too."""
    global _pool, _pool_workers
    if _pool is None or _pool_workers != threads - 1:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_workers = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="minirc-gemm"), threads - 1
    return _pool


def _bands(n, parts):
    edges = [n * i // parts for i in range(parts + 1)]
    return [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:]) if hi > lo]


def split_dot(a, b, out=None):
    """``a @ b`` for 2-D arrays (views with a transpose are fine), into ``out`` when given.

    out: (M, N) of the result dtype; a view with a row stride (a band of an output's columns) is
    fine, ``np.matmul`` hands it to BLAS as it is. Small products (fewer than MIN_SPLIT_WORK
    multiply-adds) and ``MINIRC_GEMM_THREADS=1`` are one ``np.matmul``.
    """
    (m, k), n = a.shape, b.shape[1]
    threads = gemm_threads()
    if threads < 2 or m * n * k < MIN_SPLIT_WORK:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    if n >= m:  # wide output: bands of columns, each reading a slice of b and all of (small) a
        jobs = [(np.matmul, a, b[:, lo:hi], out[:, lo:hi]) for lo, hi in _bands(n, threads)]
    else:       # tall output: bands of rows, contiguous in out
        jobs = [(np.matmul, a[lo:hi], b, out[lo:hi]) for lo, hi in _bands(m, threads)]
    pending = [gemm_executor(threads).submit(fn, x, y, out=z) for fn, x, y, z in jobs[1:]]
    jobs[0][0](jobs[0][1], jobs[0][2], out=jobs[0][3])  # the calling thread takes the first band
    for p in pending:
        p.result()
    return out
