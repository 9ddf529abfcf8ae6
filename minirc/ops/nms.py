"""Greedy non-maximum suppression: ``nms`` and ``batched_nms`` (torchvision semantics).

Shape shorthand: ``boxes: (N, 4)`` x1y1x2y2 in continuous pixels, ``scores: (N,)``,
``idxs: (N,)`` integer class ids. Results are int64 indices into the inputs.

The rules (torchvision ``csrc/ops/cpu/nms_kernel.cpp``; docs/nms.md explains each):

* order = **stable** descending sort of the scores: equal scores keep the lower index first;
* walk that order; keep a box unless an already kept box overlaps it with ``IoU > iou_threshold``
  (**strict**: IoU equal to the threshold is kept);
* IoU is computed in the box dtype (:func:`minirc.ops.box_iou.iou_of_two`) and compared with the
  threshold as a float64, like torchvision's CPU kernel; a NaN IoU never suppresses;
* the kept indices come back in decreasing score order.

Backends:

* ``"numpy"``: the greedy loop, each kept box vectorised against all later ones;
* ``"cpu"``: the same greedy loop in ``@njit``; sequential over kept boxes by nature (box ``i``'s fate
  depends on all earlier decisions), so no ``prange``: the boxes are gathered in score order into
  contiguous columns and the inner loop over later boxes is branch-free, which LLVM vectorises;
* ``"cuda"``: the bitmask algorithm (torchvision's and Faster R-CNN's ``nms_kernel.cu``): a 2-D grid
  of 64x64 tiles computes, for every box ``i``, a 64-bit word per tile whose bit ``k`` says "box ``i``
  suppresses box ``64 * tile + k``"; a short sequential sweep over those words on the host then
  replays the greedy loop with bitwise ORs. See docs/nms.md for the picture.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, float64, njit, uint64

from minirc import _checks
from minirc._checks import as_array, number
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, to_device, to_host
from minirc.ops.box_iou import box_iou_numpy, iou_of_two
from minirc.ops.boxes import as_boxes, as_scores

__all__ = ["nms", "batched_nms", "batched_nms_coordinate_trick", "batched_nms_vanilla"]


def score_order(scores):
    """Indices sorting ``scores`` in decreasing order; ties keep ascending index (stable sort)."""
    s = scores if scores.dtype.kind == "f" else scores.astype(np.float64)  # -uint would wrap
    return np.argsort(-s, kind="stable")


def _empty_indices():
    return np.empty(0, dtype=np.int64)


# ---- NumPy reference ---------------------------------------------------------------------------------
def nms_numpy(boxes, scores, iou_threshold):
    order = score_order(scores)
    ranked = boxes[order]
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        iou = box_iou_numpy(ranked[i:i + 1], ranked[i + 1:])[0]  # in the box dtype
        # compare as float64, like torchvision's CPU kernel (NumPy 2 would otherwise round a Python
        # float threshold to float32); NaN > t is False, so a NaN IoU never suppresses
        suppressed[i + 1:] |= iou.astype(np.float64) > np.float64(iou_threshold)
    return order[np.array(keep, dtype=np.int64)]


# ---- Numba CPU: the greedy loop ------------------------------------------------------------------------
@njit(cache=True, error_model="numpy")
def _nms_cpu_kernel(boxes, order, iou_threshold):
    n = order.shape[0]
    # gather in score order, one contiguous column per coordinate: the inner loop reads linearly
    x1 = np.empty(n, boxes.dtype)
    y1 = np.empty(n, boxes.dtype)
    x2 = np.empty(n, boxes.dtype)
    y2 = np.empty(n, boxes.dtype)
    for k in range(n):
        r = order[k]
        x1[k], y1[k], x2[k], y2[k] = boxes[r, 0], boxes[r, 1], boxes[r, 2], boxes[r, 3]
    suppressed = np.zeros(n, np.bool_)
    keep = np.empty(n, np.int64)
    n_keep = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[n_keep] = order[i]
        n_keep += 1
        # the boxes ranked after i, as views: a loop starting at 0 lets LLVM drop Numba's negative-index
        # wraparound and vectorise (benchmarks/bench_boxes.py times the `range(i + 1, n)` version)
        bx1, by1, bx2, by2, later = x1[i + 1:], y1[i + 1:], x2[i + 1:], y2[i + 1:], suppressed[i + 1:]
        for j in range(later.shape[0]):
            # no "if suppressed: skip": suppressing twice is harmless, and a branch-free body vectorises.
            # IoU in the box dtype > float64 threshold: compared in float64, as torchvision's CPU kernel
            iou = iou_of_two(x1[i], y1[i], x2[i], y2[i], bx1[j], by1[j], bx2[j], by2[j])
            later[j] |= iou > iou_threshold
    return keep[:n_keep]


def nms_cpu(boxes, scores, iou_threshold):
    if boxes.shape[0] == 0:
        return _empty_indices()
    return _nms_cpu_kernel(np.ascontiguousarray(boxes), score_order(scores), np.float64(iou_threshold))


# ---- Numba CUDA: the bitmask algorithm -----------------------------------------------------------------
TILE = 64  # boxes per tile = bits per mask word


def _make_mask_kernel(dtype):
    """The mask kernel for one box dtype (the shared-memory tile needs its dtype at compile time)."""
    @cuda.jit
    def kernel(ranked, n, iou_threshold, mask):
        # ranked: (n, 4) boxes sorted by score; mask: (n, ceil(n / 64)) uint64.
        # Block (col, row) compares the 64 boxes of row tile `row` (one per thread) with the 64 boxes
        # of column tile `col`, and writes one word: bit k of mask[i, col] <=> IoU(i, 64*col + k) > t.
        col = cuda.blockIdx.x
        row = cuda.blockIdx.y
        if col < row:  # box j ranked before box i never gets suppressed by i: skip the lower triangle
            return     # (the whole block returns, so no thread misses the syncthreads below)
        t = cuda.threadIdx.x
        row_size = min(n - row * TILE, TILE)
        col_size = min(n - col * TILE, TILE)
        tile = cuda.shared.array((TILE, 4), dtype=dtype)
        if t < col_size:  # each thread loads one box of the column tile into shared memory
            for k in range(4):
                tile[t, k] = ranked[col * TILE + t, k]
        cuda.syncthreads()
        if t < row_size:
            i = row * TILE + t
            bits = uint64(0)
            start = t + 1 if row == col else 0  # on the diagonal, only later boxes
            for k in range(start, col_size):
                iou = iou_of_two(ranked[i, 0], ranked[i, 1], ranked[i, 2], ranked[i, 3],
                                 tile[k, 0], tile[k, 1], tile[k, 2], tile[k, 3])
                if iou > iou_threshold:  # float64 comparison, as on the CPU
                    bits |= uint64(1) << uint64(k)
            mask[i, col] = bits
    return kernel


_MASK_KERNELS = {np.dtype(np.float32): _make_mask_kernel(float32),
                 np.dtype(np.float64): _make_mask_kernel(float64)}


@cuda.jit
def _gather_rows_kernel(boxes, order, out):
    t = cuda.grid(1)
    if t < order.shape[0] * 4:
        out[t // 4, t % 4] = boxes[order[t // 4], t % 4]


@njit(cache=True)
def _sweep_mask(mask, n):
    """Replay the greedy loop on the bit masks: ``removed`` holds one bit per box, OR-ed in as boxes
    are kept. Box i is kept iff its bit is still 0 when the sweep reaches it."""
    removed = np.zeros(mask.shape[1], np.uint64)
    keep = np.empty(n, np.int64)
    n_keep = 0
    for i in range(n):
        word = i // TILE
        if (removed[word] >> np.uint64(i % TILE)) & np.uint64(1):
            continue
        keep[n_keep] = i
        n_keep += 1
        for w in range(word, mask.shape[1]):  # words left of the diagonal were never written
            removed[w] |= mask[i, w]
    return keep[:n_keep]


def nms_cuda(boxes, scores, iou_threshold):
    n = boxes.shape[0]
    on_device = is_device_array(boxes) or is_device_array(scores)
    if n == 0:
        return to_device(_empty_indices()) if on_device else _empty_indices()
    order = score_order(to_host(scores))  # sorted on the host: Numba has no device sort
    d_order = to_device(order)
    ranked = cuda.device_array((n, 4), dtype=boxes.dtype)
    _gather_rows_kernel[blocks_for(4 * n), 256](to_device(boxes), d_order, ranked)
    tiles = (n + TILE - 1) // TILE
    _checks.elements((n, tiles), "boxes", "cuda NMS's bit mask (N, ceil(N / 64)) of uint64 words")
    mask = cuda.device_array((n, tiles), dtype=np.uint64)  # lower-triangle words stay unwritten
    _MASK_KERNELS[np.dtype(boxes.dtype)][(tiles, tiles), TILE](ranked, n, np.float64(iou_threshold), mask)
    keep = order[_sweep_mask(mask.copy_to_host(), n)]
    return to_device(keep) if on_device else keep


# ---- public entry points -------------------------------------------------------------------------------
_IMPLS = {"numpy": nms_numpy, "cpu": nms_cpu, "cuda": nms_cuda}


def _check_nms_args(boxes, scores, iou_threshold):
    boxes = as_boxes(boxes, "boxes", ordered=True)
    scores = as_scores(scores, boxes.shape[0])
    return boxes, scores, number(iou_threshold, "iou_threshold")


def nms(boxes, scores, iou_threshold, backend=None):
    """Indices (int64) of the boxes kept by greedy NMS, in decreasing score order.

    boxes: (N, 4) x1y1x2y2, float32/float64 (ints become float32), finite, ``x1 <= x2``,
    ``y1 <= y2`` (ValueError naming the first bad row otherwise); scores: (N,) finite numbers;
    iou_threshold: a box is discarded when its IoU with a higher-scored kept box is
    ``> iou_threshold`` (strict). Equal scores: the lower index ranks first. N = 0 gives an empty
    result. See docs/nms.md.
    """
    boxes, scores, iou_threshold = _check_nms_args(boxes, scores, iou_threshold)
    return _IMPLS[get_backend(backend)](boxes, scores, iou_threshold)


def _check_batched_args(boxes, scores, idxs, iou_threshold):
    # bookkeeping happens on the host: device inputs are copied back once
    boxes, scores, iou_threshold = _check_nms_args(to_host(boxes), to_host(scores), iou_threshold)
    idxs = as_array(to_host(idxs), "idxs", ndim=1)
    if idxs.shape[0] != boxes.shape[0]:
        raise ValueError(f"idxs: expected shape ({boxes.shape[0]},) to match boxes, got {tuple(idxs.shape)}")
    if idxs.dtype.kind not in "iub":
        raise TypeError(f"idxs: expected integer class ids, got dtype {idxs.dtype}")
    return boxes, scores, idxs.astype(np.int64), iou_threshold


def batched_nms_coordinate_trick(boxes, scores, idxs, iou_threshold, backend=None):
    """One NMS over all classes, after shifting each class's boxes by ``idx * (max coordinate + 1)``
    so that boxes of different classes cannot overlap (torchvision's ``_batched_nms_coordinate_trick``).

    Assumes coordinates >= 0 (as torchvision does): with negative coordinates two classes can still
    overlap after the shift. The shift is computed in the box dtype, so in float32 it can change the
    rounding of IoUs near the threshold (docs/nms.md).
    """
    boxes, scores, idxs, iou_threshold = _check_batched_args(boxes, scores, idxs, iou_threshold)
    return _coordinate_trick(boxes, scores, idxs, iou_threshold, get_backend(backend))


def _coordinate_trick(boxes, scores, idxs, iou_threshold, backend):
    if boxes.shape[0] == 0:
        return _empty_indices()
    one = boxes.dtype.type(1)
    offsets = idxs.astype(boxes.dtype) * (boxes.max() + one)  # all in the box dtype, like torch
    return to_host(_IMPLS[backend](boxes + offsets[:, None], scores, iou_threshold))


def batched_nms_vanilla(boxes, scores, idxs, iou_threshold, backend=None):
    """NMS run separately on each class, kept indices merged and sorted by score (stable)
    (torchvision's ``_batched_nms_vanilla``, itself from detectron2). Exact for any coordinates."""
    boxes, scores, idxs, iou_threshold = _check_batched_args(boxes, scores, idxs, iou_threshold)
    return _vanilla(boxes, scores, idxs, iou_threshold, get_backend(backend))


def _vanilla(boxes, scores, idxs, iou_threshold, backend):
    keep_mask = np.zeros(boxes.shape[0], dtype=bool)
    for c in np.unique(idxs):
        members = np.flatnonzero(idxs == c)
        kept = to_host(_IMPLS[backend](boxes[members], scores[members], iou_threshold))
        keep_mask[members[kept]] = True
    keep = np.flatnonzero(keep_mask)
    # torchvision sorts here with an unstable sort; the stable one makes ties deterministic and
    # gives the same order as the coordinate trick
    return keep[score_order(scores[keep])].astype(np.int64)


# torchvision's CPU rule: the per-class loop wins above 1000 boxes (github.com/pytorch/vision/issues/1311)
VANILLA_ABOVE_NUMEL = 4000


def batched_nms(boxes, scores, idxs, iou_threshold, backend=None):
    """NMS applied independently per class ``idxs``; int64 indices sorted by decreasing score.

    boxes: (N, 4) x1y1x2y2; scores: (N,); idxs: (N,) integer class ids; iou_threshold as in
    :func:`nms`. Like torchvision on the CPU, runs :func:`batched_nms_vanilla` when
    ``boxes.size > 4000`` (more than 1000 boxes) and :func:`batched_nms_coordinate_trick` otherwise,
    on every backend, so results match torchvision CPU bit for bit. Bookkeeping runs on the host;
    device inputs give a device result.
    """
    on_device = any(is_device_array(a) for a in (boxes, scores, idxs))
    boxes, scores, idxs, iou_threshold = _check_batched_args(boxes, scores, idxs, iou_threshold)
    name = get_backend(backend)
    run = _vanilla if boxes.size > VANILLA_ABOVE_NUMEL else _coordinate_trick
    keep = run(boxes, scores, idxs, iou_threshold, name)
    return to_device(keep) if on_device else keep
