"""Benchmark: box_iou and nms, minirc "cpu" (Numba) vs the NumPy reference vs torchvision.ops (CPU).

Run (torch lives in the benchmark venv; minirc is installed there editable):

    python benchmarks/bench_boxes.py            # (a Python with torch installed) 1000, 2000, 5000 boxes
    python benchmarks/bench_boxes.py --sizes 1000 --repeats 5

Without torch/torchvision the torchvision columns are skipped. Inputs are RPN-like: boxes clustered
around a few dozen "objects" (jittered position and scale, several aspect ratios) with scores that
fall off with the distance to the object, float32, in an 800x1216 image; NMS threshold 0.7 (the RPN's).
box_iou is timed as the full (N, N) matrix. Both libraries run on 2 threads (torch.set_num_threads,
numba.set_num_threads); torchvision's nms is single-threaded either way. Times are medians of
--repeats runs after a warm-up (Numba compiles on the first call).
"""
from __future__ import annotations

import argparse
import statistics

import numba
import numpy as np

from minirc.ops.box_iou import box_iou, iou_of_two
from minirc.ops.nms import nms, score_order
from minirc.testing import call_times

try:
    import torch
    import torchvision

    torch.set_num_threads(2)
except ImportError:  # the plain project venv: compare minirc's backends only
    torch = torchvision = None

THREADS = 2


@numba.njit(cache=True, error_model="numpy")
def nms_range_loop(boxes, order, iou_threshold):
    """minirc's CPU NMS kernel with one change: the inner loop is ``for j in range(i + 1, n)`` over
    the full columns instead of ``range(len(view))`` over the views ``x1[i + 1:]``. Numba then keeps
    its negative-index wraparound check and LLVM does not vectorise the loop (docs/nms.md)."""
    n = order.shape[0]
    ranked = boxes[order]
    x1, y1 = ranked[:, 0].copy(), ranked[:, 1].copy()
    x2, y2 = ranked[:, 2].copy(), ranked[:, 3].copy()
    suppressed = np.zeros(n, np.bool_)
    keep = np.empty(n, np.int64)
    n_keep = 0
    for i in range(n):
        if suppressed[i]:
            continue
        keep[n_keep] = order[i]
        n_keep += 1
        for j in range(i + 1, n):
            suppressed[j] |= iou_of_two(x1[i], y1[i], x2[i], y2[i], x1[j], y1[j], x2[j], y2[j]) > iou_threshold
    return keep[:n_keep]


def rpn_like_boxes(n: int, seed: int = 0, height: float = 800, width: float = 1216):
    """``n`` float32 boxes clustered around ~n/100 objects, and scores peaking at each object."""
    rng = np.random.default_rng(seed)
    n_obj = max(5, n // 100)
    centre = rng.uniform([0, 0], [width, height], size=(n_obj, 2))
    size = np.exp(rng.uniform(np.log(24), np.log(400), size=n_obj))
    obj = rng.integers(0, n_obj, size=n)
    aspect = rng.choice([0.5, 1.0, 2.0], size=n)
    scale = size[obj] * np.exp(rng.normal(0, 0.25, size=n))
    w, h = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    shift = rng.normal(0, 0.15, size=(n, 2)) * np.stack([w, h], 1)
    c = centre[obj] + shift
    boxes = np.stack([c[:, 0] - w / 2, c[:, 1] - h / 2, c[:, 0] + w / 2, c[:, 1] + h / 2], 1)
    boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
    dist = np.linalg.norm(shift / np.stack([w, h], 1), axis=1)
    scores = (np.exp(-4 * dist) * rng.uniform(0.5, 1.0, size=n)).astype(np.float32)
    return boxes, scores


def median_time(fn, repeats: int) -> float:
    return statistics.median(call_times(fn, repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iou-threshold", type=float, default=0.7)
    args = parser.parse_args()
    numba.set_num_threads(min(THREADS, numba.config.NUMBA_NUM_THREADS))
    print(f"numba {numba.__version__} ({numba.get_num_threads()} threads), numpy {np.__version__}, "
          + (f"torch {torch.__version__} ({torch.get_num_threads()} threads), torchvision "
             f"{torchvision.__version__}" if torch else "torch not importable: torchvision columns skipped"))
    header = f"{'op':8} {'N':>5} {'kept':>5} {'numpy ms':>9} {'cpu ms':>8} {'tv ms':>8} {'cpu/numpy':>9} {'cpu/tv':>7}"
    print(header)
    print("-" * len(header))
    for n in args.sizes:
        boxes, scores = rpn_like_boxes(n)
        kept = nms(boxes, scores, args.iou_threshold, backend="cpu")
        if torch is not None:
            tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
            tv_kept = torchvision.ops.nms(tb, ts, args.iou_threshold).numpy()
            assert np.array_equal(kept, tv_kept), "nms: minirc and torchvision disagree"
            assert np.array_equal(box_iou(boxes[:200], boxes), torchvision.ops.box_iou(tb[:200], tb).numpy(),
                                  equal_nan=True), "box_iou: minirc and torchvision disagree"
        cases = {
            "box_iou": (lambda b: box_iou(boxes, boxes, backend=b),
                        (lambda: torchvision.ops.box_iou(tb, tb)) if torch else None),
            "nms": (lambda b: nms(boxes, scores, args.iou_threshold, backend=b),
                    (lambda: torchvision.ops.nms(tb, ts, args.iou_threshold)) if torch else None),
        }
        for op, (ours, theirs) in cases.items():
            t_np = median_time(lambda: ours("numpy"), max(1, args.repeats // 2))
            t_cpu = median_time(lambda: ours("cpu"), args.repeats)
            t_tv = median_time(theirs, args.repeats) if theirs else float("nan")
            print(f"{op:8} {n:5d} {len(kept) if op == 'nms' else '':>5} {1e3 * t_np:9.2f} {1e3 * t_cpu:8.2f} "
                  f"{1e3 * t_tv:8.2f} {t_cpu / t_np:9.3f} {t_cpu / t_tv:7.3f}")
    print("cpu/tv <= 1.0 means minirc's Numba kernel is at least as fast as torchvision on the CPU.")
    print("\nnms inner loop: views x1[i+1:] (minirc) vs `for j in range(i + 1, n)` (not vectorised)")
    for n in args.sizes:
        boxes, scores = rpn_like_boxes(n)
        order, thr = score_order(scores), np.float64(args.iou_threshold)
        assert np.array_equal(nms_range_loop(boxes, order, thr), nms(boxes, scores, args.iou_threshold))
        t_range = median_time(lambda: nms_range_loop(boxes, order, thr), args.repeats)
        t_cpu = median_time(lambda: nms(boxes, scores, args.iou_threshold, backend="cpu"), args.repeats)
        print(f"N={n:5d}  views {1e3 * t_cpu:8.2f} ms   range loop {1e3 * t_range:8.2f} ms   "
              f"speed-up {t_range / t_cpu:5.1f}x")


if __name__ == "__main__":
    main()
