"""Pairwise intersection-over-union of two sets of boxes (torchvision ``box_iou``).

Shape shorthand: ``boxes1: (N, 4)``, ``boxes2: (M, 4)``, x1y1x2y2 in continuous pixels; the result
is ``(N, M)`` in the box dtype.

    inter = max(0, min(ax2, bx2) - max(ax1, bx1)) * max(0, min(ay2, by2) - max(ay1, by1))
    iou   = inter / (area_a + area_b - inter)

No ``+1`` in widths (torchvision; the ``+1`` of old Caffe/Detectron code is a pitfall, docs/nms.md)
and no epsilon: two zero-area boxes that do not overlap give ``0 / 0 = NaN``, as in torchvision.

Backends: the CPU kernel ``prange``-s over rows of the output (each thread owns whole rows); the
CUDA kernel runs one thread per output element. Both call :func:`iou_of_two`, the one scalar
IoU formula of minirc, which :mod:`minirc.ops.nms` uses too.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, njit, prange

from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, like_input, to_device
from minirc.ops.boxes import as_boxes

__all__ = ["box_iou", "iou_of_two"]


# ---- the scalar formula, shared by the CPU and CUDA kernels -------------------------------------------
@njit(cache=True, error_model="numpy")
def iou_of_two(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2):
    """IoU of box a and box b, computed in their dtype (float32 stays float32).

    The operations and their order match torchvision's ``box_iou`` and its CPU NMS kernel
    (``area_a + area_b - inter``), so float32 results agree bit for bit. ``error_model="numpy"``
    makes ``0 / 0`` a NaN instead of an exception.
    """
    zero = ax1 - ax1  # a 0 of the box dtype: the literal 0.0 is float64 and would promote the math
    w = max(min(ax2, bx2) - max(ax1, bx1), zero)
    h = max(min(ay2, by2) - max(ay1, by1), zero)
    inter = w * h
    area_a = (ax2 - ax1) * (ay2 - ay1)
    area_b = (bx2 - bx1) * (by2 - by1)
    return inter / (area_a + area_b - inter)


# ---- NumPy reference -----------------------------------------------------------------------------------
def box_iou_numpy(boxes1, boxes2):
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    lt = np.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2) top-left of the overlap
    rb = np.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2) bottom-right
    wh = np.maximum(rb - lt, 0)  # empty overlap -> 0 (NEP 50: the Python 0 keeps the dtype)
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 -> NaN, like torchvision
        return inter / (area1[:, None] + area2[None, :] - inter)


# ---- Numba CPU: prange over rows of the output ---------------------------------------------------------
@njit(cache=True, parallel=True, error_model="numpy")
def _box_iou_cpu_kernel(boxes1, cols2, out):
    # cols2 is boxes2 transposed to (4, M): the inner loop then reads four contiguous streams,
    # which LLVM can vectorise
    for i in prange(boxes1.shape[0]):
        ax1, ay1, ax2, ay2 = boxes1[i, 0], boxes1[i, 1], boxes1[i, 2], boxes1[i, 3]
        for j in range(cols2.shape[1]):
            out[i, j] = iou_of_two(ax1, ay1, ax2, ay2, cols2[0, j], cols2[1, j], cols2[2, j], cols2[3, j])


def box_iou_cpu(boxes1, boxes2):
    out = np.empty((boxes1.shape[0], boxes2.shape[0]), dtype=boxes1.dtype)
    if out.size:
        _box_iou_cpu_kernel(np.ascontiguousarray(boxes1), np.ascontiguousarray(boxes2.T), out)
    return out


# ---- Numba CUDA: one thread per output element ---------------------------------------------------------
@cuda.jit
def _box_iou_cuda_kernel(boxes1, boxes2, out):
    t = cuda.grid(1)
    m = boxes2.shape[0]
    if t < boxes1.shape[0] * m:
        i = t // m
        j = t - i * m  # consecutive threads take consecutive j: coalesced writes of a row
        out[i, j] = iou_of_two(boxes1[i, 0], boxes1[i, 1], boxes1[i, 2], boxes1[i, 3],
                               boxes2[j, 0], boxes2[j, 1], boxes2[j, 2], boxes2[j, 3])


def box_iou_cuda(boxes1, boxes2):
    n, m = boxes1.shape[0], boxes2.shape[0]
    if n * m == 0:  # never launch an empty grid
        return like_input(to_device(np.empty((n, m), boxes1.dtype)), boxes1, boxes2)
    out = cuda.device_array((n, m), dtype=boxes1.dtype)
    _box_iou_cuda_kernel[blocks_for(n * m), 256](to_device(boxes1), to_device(boxes2), out)
    return like_input(out, boxes1, boxes2)


# ---- public entry point --------------------------------------------------------------------------------
_IMPLS = {"numpy": box_iou_numpy, "cpu": box_iou_cpu, "cuda": box_iou_cuda}


def box_iou(boxes1, boxes2, backend=None):
    """Pairwise IoU, ``(N, 4), (M, 4) -> (N, M)`` (torchvision ``box_iou``).

    boxes1: (N, 4), boxes2: (M, 4), x1y1x2y2 in continuous pixels (float32/float64; ints and
    float16 become float32; float32 with float64 gives float64). Either may be empty.
    Unlike torchvision, malformed boxes raise ValueError naming the argument and the first bad row:
    NaN/inf coordinates, or ``x2 < x1`` / ``y2 < y1``. Zero-area boxes are allowed; two of them that
    do not overlap have IoU ``0/0 = NaN``, as in torchvision.
    """
    boxes1 = as_boxes(boxes1, "boxes1", ordered=True)
    boxes2 = as_boxes(boxes2, "boxes2", ordered=True)
    if boxes1.dtype != boxes2.dtype:
        if is_device_array(boxes1) or is_device_array(boxes2):
            raise TypeError(f"boxes2: expected the dtype of boxes1 ({boxes1.dtype}), got {boxes2.dtype}")
        dtype = np.result_type(boxes1.dtype, boxes2.dtype)  # torch's promotion: float32 + float64 -> float64
        boxes1, boxes2 = boxes1.astype(dtype), boxes2.astype(dtype)
    return _IMPLS[get_backend(backend)](boxes1, boxes2)
