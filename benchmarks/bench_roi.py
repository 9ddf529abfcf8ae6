"""Benchmark: roi_align and roi_pool, forward and forward+backward, minirc "cpu" (Numba) vs the NumPy
reference vs torchvision's C++ CPU kernels.

Run (torch lives in the benchmark venv; minirc is installed there editable):

    python benchmarks/bench_roi.py              # (a Python with torch installed) box head and mask head shapes
    python benchmarks/bench_roi.py --repeats 3 --no-numpy
    python benchmarks/bench_roi.py --threads 1    # per-core work, both sides

Without torch/torchvision the torchvision columns are skipped. Inputs are FPN-like: a float32
(2, 256, H, W) feature map (P3 of an 800 x 1088 batch, stride 8), and RPN-like RoIs (log-uniform
sides 16-400 px, 256 or 64 per image) pooled to 7x7 (box head) or 14x14 (mask head) with
sampling_ratio 2, as torchvision's Mask R-CNN does; plus adaptive sampling (-1) for roi_align.
Both libraries run on --threads threads (default 2; torch.set_num_threads, numba.set_num_threads);
torchvision's CPU roi kernels are single-threaded loops either way. Implementations are timed in
turn inside each repeat (a busy neighbour slows all alike), after a warm-up that compiles the Numba
kernels; medians are reported. The NumPy reference is timed once (it is the readable spec, not a
fast path).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from minirc.ops.roi_align import roi_align, roi_align_backward
from minirc.ops.roi_pool import roi_pool, roi_pool_backward

try:
    import torch
    import torchvision

    torch.set_num_threads(2)
except ImportError:  # the plain project venv: compare minirc's backends only
    torch = torchvision = None

THREADS = 2
CASES = [  # (name, rois per image, output size, sampling ratio)
    ("box head 7x7, sr 2", 256, 7, 2),
    ("box head 7x7, sr -1", 256, 7, -1),
    ("mask head 14x14, sr 2", 64, 14, 2),
]


def fpn_like_inputs(rois_per_image: int, seed: int = 0, n: int = 2, c: int = 256, stride: int = 8):
    rng = np.random.default_rng(seed)
    h, w = 800 // stride, 1088 // stride
    feat = rng.standard_normal((n, c, h, w)).astype(np.float32)
    k = n * rois_per_image
    side = np.exp(rng.uniform(np.log(16), np.log(400), (k, 1))) * rng.uniform(0.5, 2.0, (k, 2)) ** [0.5, -0.5]
    xy = rng.uniform(0, 1088, (k, 2)) * [1, 800 / 1088]
    boxes = np.clip(np.concatenate([xy - side / 2, xy + side / 2], 1), 0, [1088, 800, 1088, 800])
    rois = np.concatenate([np.repeat(np.arange(n), rois_per_image)[:, None], boxes], 1).astype(np.float32)
    return feat, rois, 1.0 / stride


def timed(fn, repeats_store, key):
    t0 = time.perf_counter()
    fn()
    repeats_store.setdefault(key, []).append(time.perf_counter() - t0)


def minirc_runs(feat, rois, size, scale, sr, grad):
    def align_fwd():
        roi_align(feat, rois, size, scale, sr, False, backend="cpu")

    def align_fb():
        roi_align(feat, rois, size, scale, sr, False, backend="cpu")
        roi_align_backward(grad, rois, feat.shape, scale, sr, False, backend="cpu")

    def pool_fwd():
        roi_pool(feat, rois, size, scale, backend="cpu")

    def pool_fb():
        _, arg = roi_pool(feat, rois, size, scale, return_argmax=True, backend="cpu")
        roi_pool_backward(grad, arg, rois, feat.shape, backend="cpu")

    return {"roi_align fwd": align_fwd, "roi_align fwd+bwd": align_fb, "roi_pool fwd": pool_fwd,
            "roi_pool fwd+bwd": pool_fb}


def torch_runs(feat, rois, size, scale, sr, grad):
    if torch is None:
        return {}
    f, r, g = torch.from_numpy(feat), torch.from_numpy(rois), torch.from_numpy(grad)
    ops = torchvision.ops

    def fb(op):
        t = f.clone().requires_grad_(True)
        op(t).backward(g)

    return {"roi_align fwd": lambda: ops.roi_align(f, r, size, scale, sr, False),
            "roi_align fwd+bwd": lambda: fb(lambda t: ops.roi_align(t, r, size, scale, sr, False)),
            "roi_pool fwd": lambda: ops.roi_pool(f, r, size, scale),
            "roi_pool fwd+bwd": lambda: fb(lambda t: ops.roi_pool(t, r, size, scale))}


def numpy_once(feat, rois, size, scale, sr, grad):
    out = {}
    t0 = time.perf_counter()
    roi_align(feat, rois, size, scale, sr, False, backend="numpy")
    out["roi_align fwd"] = time.perf_counter() - t0
    roi_align_backward(grad, rois, feat.shape, scale, sr, False, backend="numpy")
    out["roi_align fwd+bwd"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, arg = roi_pool(feat, rois, size, scale, return_argmax=True, backend="numpy")
    out["roi_pool fwd"] = time.perf_counter() - t0
    roi_pool_backward(grad, arg, rois, feat.shape, backend="numpy")
    out["roi_pool fwd+bwd"] = time.perf_counter() - t0
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference")
    parser.add_argument("--threads", type=int, default=THREADS)
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    if torch is not None:
        torch.set_num_threads(args.threads)
    print(f"numba threads {numba.get_num_threads()}, torch threads "
          f"{torch.get_num_threads() if torch else '-'}, torchvision {torchvision.__version__ if torch else 'absent'}")
    header = (f"{'case':24s} {'op':18s} {'minirc cpu':>11s} {'torchvision':>11s} {'cpu/tv':>7s} "
              f"{'numpy':>9s} {'numpy/cpu':>9s}")
    print(header + "\n" + "-" * len(header))
    for name, per_image, size, sr in CASES:
        feat, rois, scale = fpn_like_inputs(per_image)
        grad = np.random.default_rng(1).standard_normal((len(rois), feat.shape[1], size, size)).astype(np.float32)
        mine, theirs = minirc_runs(feat, rois, size, scale, sr, grad), torch_runs(feat, rois, size, scale, sr, grad)
        for fn in list(mine.values()) + list(theirs.values()):
            fn()  # warm-up: Numba compiles (or loads its cache), torch allocates
        times = {}
        for _ in range(args.repeats):
            for op in mine:
                timed(mine[op], times, ("cpu", op))
                if op in theirs:
                    timed(theirs[op], times, ("tv", op))
        ref = {} if args.no_numpy else numpy_once(feat, rois, size, scale, sr, grad)
        for op in mine:
            cpu = statistics.median(times[("cpu", op)])
            tv = statistics.median(times[("tv", op)]) if ("tv", op) in times else None
            if op.startswith("roi_pool") and sr != 2:
                continue  # roi_pool has no sampling ratio: timed once, with the sr-2 cases
            npy = ref.get(op)
            print(f"{name:24s} {op:18s} {cpu * 1e3:9.1f}ms "
                  f"{(f'{tv * 1e3:9.1f}ms') if tv else '          -'} {(f'{cpu / tv:7.2f}') if tv else '      -'} "
                  f"{(f'{npy:8.2f}s') if npy else '        -'} {(f'{npy / cpu:9.0f}') if npy else '        -'}")


if __name__ == "__main__":
    main()
