"""Matrix multiply ``C = op(A) @ op(B)`` for 2-D float arrays, where ``op`` is identity or transpose.

Shapes: ``op(a)`` is (M, K), ``op(b)`` is (K, N), the result (M, N), in the dtype of ``a``.
``transpose_a=True`` means ``a`` is stored as (K, M) and read transposed (BLAS's ``trans`` flag),
so the backward passes of linear and conv never copy a transpose.

Backends:

* ``"numpy"`` -- the definition ``c[i, j] = sum_k a[i, k] b[k, j]``, spelled with ``np.einsum``;
* ``"cpu"``   -- BLAS (``np.dot``, one BLAS thread, large products split over our own threads:
  :mod:`minirc.ops.split_gemm`); no Numba kernel beats it;
* ``"cuda"``  -- a tiled shared-memory GEMM: one thread per output element, one block per
  ``TILE x TILE`` tile of C; the block walks along K one tile at a time, staging a tile of A and a
  tile of B in shared memory so each global element is read once per block instead of once per thread.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array, like_input, to_device
from minirc.ops.split_gemm import split_dot

TILE = 16  # 16 x 16 = 256 threads per block; two 16x16 float32 tiles = 2 KiB of shared memory


def _op_shape(shape, transpose):
    return (shape[1], shape[0]) if transpose else tuple(shape)


# ---- NumPy reference: the definition ------------------------------------------------------------
def matmul_numpy(a, b, transpose_a=False, transpose_b=False):
    a = a.T if transpose_a else a
    b = b.T if transpose_b else b
    return np.einsum("ik,kj->ij", a, b)  # c[i, j] = sum_k a[i, k] * b[k, j]


# ---- CPU: BLAS ------------------------------------------------------------------------------
def matmul_cpu(a, b, transpose_a=False, transpose_b=False, out=None):
    """``out=`` (C-contiguous, right shape and dtype) lets conv write straight into its output."""
    a = a.T if transpose_a else a  # a transposed *view*: BLAS reads it with its trans flag, no copy
    b = b.T if transpose_b else b
    return split_dot(a, b, out=out)


# ---- CUDA: tiled shared-memory GEMM ----------------------------------------------------------
def _make_gemm_kernel(dtype):
    """One kernel per dtype: a shared array's dtype must be a compile-time constant."""

    @cuda.jit
    def gemm(a, b, c, transpose_a, transpose_b, accumulate):
        # c (M, N) [+]= op(a) (M, K) @ op(b) (K, N); thread (ty, tx) owns c[row, col]
        sa = cuda.shared.array((TILE, TILE), dtype)
        sb = cuda.shared.array((TILE, TILE), dtype)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        row = cuda.blockIdx.y * TILE + ty
        col = cuda.blockIdx.x * TILE + tx
        m, n = c.shape
        k_total = a.shape[0] if transpose_a else a.shape[1]
        acc = dtype(0)
        for t in range((k_total + TILE - 1) // TILE):
            # each thread stages one element of the A tile (row, t*TILE+tx) and one of the B tile
            # (t*TILE+ty, col); zeros outside the matrices keep the inner loop free of branches
            ka = t * TILE + tx
            kb = t * TILE + ty
            va = dtype(0)
            if row < m and ka < k_total:
                va = a[ka, row] if transpose_a else a[row, ka]
            vb = dtype(0)
            if kb < k_total and col < n:
                vb = b[col, kb] if transpose_b else b[kb, col]
            sa[ty, tx] = va
            sb[ty, tx] = vb
            # barrier 1: the tiles must be complete before any thread reads its row of sa / column of sb
            cuda.syncthreads()
            for kk in range(TILE):
                acc += sa[ty, kk] * sb[kk, tx]
            # barrier 2: every thread must be done reading before the next iteration overwrites the tiles
            cuda.syncthreads()
        # threads outside C still had to take part in loading tiles and in both barriers; only now
        # may they skip the store
        if row < m and col < n:
            if accumulate:
                c[row, col] += acc
            else:
                c[row, col] = acc

    return gemm


_GEMM_KERNELS = {np.dtype(np.float32): _make_gemm_kernel(np.float32),
                 np.dtype(np.float64): _make_gemm_kernel(np.float64)}


def gemm_cuda_device(a, b, c, transpose_a=False, transpose_b=False, accumulate=False):
    """Launch the tiled GEMM on device arrays: ``c [+]= op(a) @ op(b)`` (used by conv's CUDA path)."""
    m, n = c.shape
    if m == 0 or n == 0:
        return c
    grid = ((n + TILE - 1) // TILE, (m + TILE - 1) // TILE)
    _GEMM_KERNELS[np.dtype(c.dtype)][grid, (TILE, TILE)](a, b, c, transpose_a, transpose_b, accumulate)
    return c


def matmul_cuda(a, b, transpose_a=False, transpose_b=False):
    m, _ = _op_shape(a.shape, transpose_a)
    _, n = _op_shape(b.shape, transpose_b)
    da, db = to_device(a), to_device(b)
    dc = cuda.device_array((m, n), dtype=a.dtype)
    gemm_cuda_device(da, db, dc, transpose_a, transpose_b)
    return like_input(dc, a, b)


# ---- public entry point ----------------------------------------------------------------------
_IMPLS = {"numpy": matmul_numpy, "cpu": matmul_cpu, "cuda": matmul_cuda}


def matmul(a, b, transpose_a=False, transpose_b=False, backend=None):
    """``op(a) @ op(b)`` for 2-D float arrays.

    a: (M, K), or (K, M) with ``transpose_a=True``; b: (K, N), or (N, K) with ``transpose_b=True``;
    float32 or float64, both the same dtype. Returns (M, N) in that dtype.
    """
    a = _checks.as_array(a, "a", ndim=2, float_only=True)
    b = _checks.as_array(b, "b", ndim=2, float_only=True)
    _checks.same_dtype(a, b, "a", "b")
    ka = _op_shape(a.shape, transpose_a)[1]
    kb = _op_shape(b.shape, transpose_b)[0]
    if ka != kb:
        raise ValueError(f"b: expected {ka} rows (the inner dimension of op(a), shape "
                         f"{_op_shape(a.shape, transpose_a)}), got op(b) of shape "
                         f"{_op_shape(b.shape, transpose_b)}")
    name = get_backend(backend)
    if name != "cuda" and (is_device_array(a) or is_device_array(b)):
        raise TypeError(f"a, b: CUDA device arrays need backend='cuda', got backend={name!r}")
    return _IMPLS[name](a, b, bool(transpose_a), bool(transpose_b))
