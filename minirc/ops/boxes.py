"""Elementwise box ops: ``box_area``, ``clip_boxes_to_image``, ``remove_small_boxes``.

Shape shorthand: ``boxes: (..., 4)`` (``(N, 4)`` for ``remove_small_boxes``), each row
``x1y1x2y2`` in continuous input pixels. Width is ``x2 - x1`` and height ``y2 - y1``: **no +1**
(torchvision ``ops/boxes.py``; docs/conventions.md).

Backends: each box is independent, so the CPU kernels ``prange`` over boxes and the CUDA kernels run
one thread per box. ``remove_small_boxes`` computes the keep flags in the kernel and compacts them to
indices on the host (a device-side compaction needs a prefix sum; not worth it for this op).

Input checks shared by every box op live here too (:func:`as_boxes`): boxes must have a last axis of
4 and finite values, and, for the ops that assume it (``box_iou``, ``nms``), ``x1 <= x2`` and
``y1 <= y2``. Integer and float16 boxes are converted to float32; float32 and float64 are computed in
their own dtype. Device arrays are checked for shape and dtype only (checking values would copy
them to the host).
"""
from __future__ import annotations

import numbers

import numpy as np
from numba import cuda, njit, prange

from minirc._checks import as_array, number
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, like_input, to_device

__all__ = ["box_area", "clip_boxes_to_image", "remove_small_boxes", "as_boxes"]


# ---- argument checks shared by box_area, box_iou, nms, ... ------------------------------------------
def as_boxes(boxes, name: str, ordered: bool = False, leading: bool = False):
    """``boxes`` as a float32/float64 array of shape ``(N, 4)`` (or ``(..., 4)`` with ``leading``).

    Raises ValueError naming ``name`` and the first bad row for NaN/inf, and, with ``ordered``, for
    ``x2 < x1`` or ``y2 < y1``.
    """
    if is_device_array(boxes):
        return _device_boxes(boxes, name, leading)
    a = as_array(boxes, name, ndim=None if leading else 2, last_dim=4)
    if a.dtype not in (np.float32, np.float64):
        if not (np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)):
            raise TypeError(f"{name}: expected real-valued boxes, got dtype {a.dtype}")
        a = a.astype(np.float32)  # ints and float16 -> float32, the dtype torchvision's IoU returns
    rows = a.reshape(-1, 4)
    if rows.shape[0] == 0:
        return a
    bad = ~np.isfinite(rows).all(axis=1)
    if bad.any():
        r = int(np.argmax(bad))
        raise ValueError(f"{name}: expected finite coordinates, row {r} is {rows[r].tolist()}")
    if ordered:
        bad = (rows[:, 2] < rows[:, 0]) | (rows[:, 3] < rows[:, 1])
        if bad.any():
            r = int(np.argmax(bad))
            raise ValueError(f"{name}: expected x1 <= x2 and y1 <= y2 (x1y1x2y2 boxes), "
                             f"row {r} is {rows[r].tolist()}")
    return a


def _device_boxes(a, name, leading):
    shape = tuple(a.shape)  # a tuple: the simulator's shape object has no negative indexing
    if (not leading and len(shape) != 2) or not shape or shape[-1] != 4:
        raise ValueError(f"{name}: expected shape {'(..., 4)' if leading else '(N, 4)'}, got a device "
                         f"array of shape {shape}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected a float32 or float64 device array, got dtype {a.dtype}")
    return a


def as_scores(scores, n: int, name: str = "scores"):
    """``scores`` as a finite 1-D array of length ``n`` (host arrays: values checked too)."""
    s = scores if is_device_array(scores) else as_array(scores, name, ndim=1)
    if len(s.shape) != 1 or s.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match boxes, got shape {tuple(s.shape)}")
    if not is_device_array(s):
        if not np.issubdtype(s.dtype, np.number) or np.issubdtype(s.dtype, np.complexfloating):
            raise TypeError(f"{name}: expected real-valued scores, got dtype {s.dtype}")
        bad = ~np.isfinite(s)
        if bad.any():
            r = int(np.argmax(bad))
            raise ValueError(f"{name}: expected finite values, entry {r} is {s[r]}")
    return s


def _rows(a):
    """``(..., 4)`` -> ``(R, 4)`` C-contiguous view or copy (device arrays too)."""
    if is_device_array(a):
        return a.reshape(a.size // 4, 4) if a.size else a
    return np.ascontiguousarray(a).reshape(-1, 4)


# ---- box_area ---------------------------------------------------------------------------------------
def box_area_numpy(boxes):
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


@njit(cache=True, parallel=True)
def _box_area_cpu_kernel(rows, out):
    for r in prange(rows.shape[0]):
        out[r] = (rows[r, 2] - rows[r, 0]) * (rows[r, 3] - rows[r, 1])


def box_area_cpu(boxes):
    rows = _rows(boxes)
    out = np.empty(rows.shape[0], dtype=rows.dtype)
    if rows.shape[0]:
        _box_area_cpu_kernel(rows, out)
    return out.reshape(boxes.shape[:-1])


@cuda.jit
def _box_area_cuda_kernel(rows, out):
    r = cuda.grid(1)
    if r < rows.shape[0]:
        out[r] = (rows[r, 2] - rows[r, 0]) * (rows[r, 3] - rows[r, 1])


def box_area_cuda(boxes):
    rows = _rows(boxes)
    if rows.shape[0] == 0:
        return like_input(to_device(np.empty(boxes.shape[:-1], rows.dtype)), boxes)
    d_rows = to_device(rows)
    out = cuda.device_array(rows.shape[0], dtype=rows.dtype)
    _box_area_cuda_kernel[blocks_for(rows.shape[0]), 256](d_rows, out)
    return like_input(out if len(boxes.shape) == 2 else out.reshape(boxes.shape[:-1]), boxes)


_AREA_IMPLS = {"numpy": box_area_numpy, "cpu": box_area_cpu, "cuda": box_area_cuda}


def box_area(boxes, backend=None):
    """Area ``(x2 - x1) * (y2 - y1)`` of each box, in the box dtype (torchvision ``box_area``).

    boxes: (..., 4) x1y1x2y2. Returns (...). No ordering check: a box with ``x2 < x1`` gets a
    negative area, as in torchvision.
    """
    boxes = as_boxes(boxes, "boxes", leading=True)
    return _AREA_IMPLS[get_backend(backend)](boxes)


# ---- clip_boxes_to_image ----------------------------------------------------------------------------
def clip_boxes_to_image_numpy(boxes, height, width):
    out = np.empty_like(boxes)
    # x coordinates into [0, width], y into [0, height]: the upper bound is W, not W - 1, because
    # a box edge may lie on the image's right border (continuous coordinates)
    out[..., 0::2] = np.minimum(np.maximum(boxes[..., 0::2], 0), width)
    out[..., 1::2] = np.minimum(np.maximum(boxes[..., 1::2], 0), height)
    return out


@njit(cache=True, parallel=True)
def _clip_cpu_kernel(rows, height, width, out):
    zero = height - height  # a 0 of the box dtype (a literal 0.0 would be float64)
    for r in prange(rows.shape[0]):
        for k in range(4):
            hi = width if k % 2 == 0 else height
            out[r, k] = min(max(rows[r, k], zero), hi)


def clip_boxes_to_image_cpu(boxes, height, width):
    rows = _rows(boxes)
    out = np.empty_like(rows)
    if rows.shape[0]:
        t = rows.dtype.type
        _clip_cpu_kernel(rows, t(height), t(width), out)
    return out.reshape(boxes.shape)


@cuda.jit
def _clip_cuda_kernel(rows, height, width, out):
    # one thread per coordinate: 4 per box
    t = cuda.grid(1)
    if t < rows.shape[0] * 4:
        r = t // 4
        k = t % 4
        hi = width if k % 2 == 0 else height
        out[r, k] = min(max(rows[r, k], height - height), hi)


def clip_boxes_to_image_cuda(boxes, height, width):
    rows = _rows(boxes)
    if rows.shape[0] == 0:
        return like_input(to_device(np.empty(boxes.shape, rows.dtype)), boxes)
    d_rows = to_device(rows)
    out = cuda.device_array(rows.shape, dtype=rows.dtype)
    t = rows.dtype.type
    _clip_cuda_kernel[blocks_for(rows.size), 256](d_rows, t(height), t(width), out)
    return like_input(out if len(boxes.shape) == 2 else out.reshape(boxes.shape), boxes)


_CLIP_IMPLS = {"numpy": clip_boxes_to_image_numpy, "cpu": clip_boxes_to_image_cpu,
               "cuda": clip_boxes_to_image_cuda}


def _image_size(size):
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in size)):
        raise TypeError(f"size: expected (height, width), a pair of numbers, got {size!r}")
    h, w = number(size[0], "size[0] (height)", low=0), number(size[1], "size[1] (width)", low=0)
    return h, w


def clip_boxes_to_image(boxes, size, backend=None):
    """Clamp x coordinates to ``[0, width]`` and y to ``[0, height]`` (torchvision semantics).

    boxes: (..., 4) x1y1x2y2; size: ``(height, width)`` of the image. Returns a new array of the same
    shape and dtype. The bounds are W and H (not W - 1): continuous coordinates, see
    docs/conventions.md. Boxes are not required to be ordered.
    """
    boxes = as_boxes(boxes, "boxes", leading=True)
    height, width = _image_size(size)
    return _CLIP_IMPLS[get_backend(backend)](boxes, height, width)


# ---- remove_small_boxes -----------------------------------------------------------------------------
def remove_small_boxes_numpy(boxes, min_size):
    ws = boxes[:, 2] - boxes[:, 0]
    hs = boxes[:, 3] - boxes[:, 1]
    # compared in the box dtype (min_size is rounded to it), as torch compares a float32 tensor
    # with a Python scalar; >= is inclusive, as in torchvision
    m = boxes.dtype.type(min_size)
    return np.flatnonzero((ws >= m) & (hs >= m)).astype(np.int64)


@njit(cache=True, parallel=True)
def _small_cpu_kernel(boxes, min_size, keep):
    for r in prange(boxes.shape[0]):
        keep[r] = (boxes[r, 2] - boxes[r, 0] >= min_size) and (boxes[r, 3] - boxes[r, 1] >= min_size)


def remove_small_boxes_cpu(boxes, min_size):
    keep = np.zeros(boxes.shape[0], dtype=np.bool_)
    if boxes.shape[0]:
        _small_cpu_kernel(np.ascontiguousarray(boxes), boxes.dtype.type(min_size), keep)
    return np.flatnonzero(keep).astype(np.int64)


@cuda.jit
def _small_cuda_kernel(boxes, min_size, keep):
    r = cuda.grid(1)
    if r < boxes.shape[0]:
        keep[r] = (boxes[r, 2] - boxes[r, 0] >= min_size) and (boxes[r, 3] - boxes[r, 1] >= min_size)


def remove_small_boxes_cuda(boxes, min_size):
    n = boxes.shape[0]
    if n == 0:
        return like_input(to_device(np.empty(0, np.int64)), boxes)
    d_boxes = to_device(boxes)
    keep = cuda.device_array(n, dtype=np.uint8)
    _small_cuda_kernel[blocks_for(n), 256](d_boxes, boxes.dtype.type(min_size), keep)
    idx = np.flatnonzero(keep.copy_to_host()).astype(np.int64)  # compaction on the host
    return to_device(idx) if is_device_array(boxes) else idx


_SMALL_IMPLS = {"numpy": remove_small_boxes_numpy, "cpu": remove_small_boxes_cpu,
                "cuda": remove_small_boxes_cuda}


def remove_small_boxes(boxes, min_size, backend=None):
    """Indices (int64, ascending) of the boxes with width and height both ``>= min_size``.

    boxes: (N, 4) x1y1x2y2; min_size: a number (compared in the box dtype, inclusive, as in
    torchvision). Boxes with ``x2 < x1`` have a negative width and are removed.
    """
    boxes = as_boxes(boxes, "boxes")
    min_size = number(min_size, "min_size")
    return _SMALL_IMPLS[get_backend(backend)](boxes, min_size)

