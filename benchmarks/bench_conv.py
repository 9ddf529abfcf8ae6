"""Conv2d forward + backward on the "cpu" backend vs the NumPy reference vs torch, and vs the GEMM rate.

Run (torch lives in the benchmark venv; without torch its column is skipped):

    /work/venv-bench/bin/python benchmarks/bench_conv.py                 # wall time, 2 threads
    /work/venv-bench/bin/python benchmarks/bench_conv.py --cpu-time      # CPU time, 1 thread
    /work/venv-bench/bin/python benchmarks/bench_conv.py --quick --no-numpy

Every implementation runs the same work -- y = conv2d(x, w), then dx and dw from a fixed grad_out --
on ResNet-like shapes (64-256 channels, 3x3 and 1x1, 32-128 px). Implementations take turns inside
each repeat (a busy neighbour slows all of them alike), after a warm-up that compiles the Numba
kernels; the median of the repeats is reported.

Two clocks:

* default: wall time with ``--threads`` (2) threads for Numba and torch; NumPy's BLAS uses its own
  pool (one thread per core). On a machine shared with other jobs this is noisy;
* ``--cpu-time``: the CPU time of the whole process with one thread for Numba, OpenBLAS and torch,
  which stays stable on a busy machine: work is compared, not scheduling. (Until 2026-11-22 this
  mode read the calling thread's clock, which misses Numba's ``prange`` kernels -- they run on a
  worker thread even when only one is allowed -- and so under-counted minirc's im2col/col2im.)

GFLOP/s counts 3 x 2*N*O*Ho*Wo*C*kh*kw (the forward, dx and dw are each one such product) and is
compared with the float32 rate of np.dot on 2048 x 2048 matrices, measured with the same clock.
"""
from __future__ import annotations

import os
import sys

if "--cpu-time" in sys.argv:  # must precede the import of numpy: BLAS sizes its pool at load time
    os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

from minirc.ops.conv2d import conv2d_backward, conv2d_forward  # noqa: E402

THREADS = 2

# (label, N, C, O, H=W, k, stride, padding)
SHAPES = [
    ("3x3  64->64   64px", 2, 64, 64, 64, 3, 1, 1),
    ("3x3 128->128  32px", 4, 128, 128, 32, 3, 1, 1),
    ("3x3 256->256  32px", 2, 256, 256, 32, 3, 1, 1),
    ("3x3 128->128 s2 64px", 2, 128, 128, 64, 3, 2, 1),
    ("3x3  64->64  128px", 1, 64, 64, 128, 3, 1, 1),
    ("1x1 256->64   64px", 2, 256, 64, 64, 1, 1, 0),
    ("1x1  64->256  64px", 2, 64, 256, 64, 1, 1, 0),
    ("1x1 256->256  32px", 4, 256, 256, 32, 1, 1, 0),
    ("1x1 256->512 s2 64px", 2, 256, 512, 64, 1, 2, 0),
]
QUICK = [0, 2, 5]


def timed(fn, clock):
    t = clock()
    fn()
    return clock() - t


def gemm_rate(clock, n=2048, repeats=5):
    """float32 GFLOP/s of np.dot on two n x n matrices (median of repeats)."""
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)
    np.dot(a, a, out=out)
    return 2 * n ** 3 / np.median([timed(lambda: np.dot(a, a, out=out), clock) for _ in range(repeats)]) / 1e9


def minirc_step(backend):
    def step(x, w, g, stride, padding):
        # as minirc.nn.functional.conv2d trains: the forward's im2col matrices serve the weight grad
        cols = []
        conv2d_forward(x, w, None, stride, padding, 1, backend=backend, keep_cols=cols)
        conv2d_backward(g, x, w, stride, padding, 1, need=(True, True, False), backend=backend, cols=cols)
    return step


def torch_step(threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)

    def step(x, w, g, stride, padding):
        tx = torch.from_numpy(x).requires_grad_()
        tw = torch.from_numpy(w).requires_grad_()
        torch.nn.functional.conv2d(tx, tw, None, stride, padding).backward(torch.from_numpy(g))
    return step


def bench(shape, impls, repeats, clock):
    _, n, c, o, hw, k, s, p = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    ho = (hw + 2 * p - k) // s + 1
    g = rng.standard_normal((n, o, ho, ho)).astype(np.float32)
    times = {name: [] for name in impls}
    for fn in impls.values():  # warm-up: JIT compile, BLAS buffers, allocator
        fn(x, w, g, s, p)
    for _ in range(repeats):
        for name, fn in impls.items():
            times[name].append(timed(lambda: fn(x, w, g, s, p), clock))
    flops = 3 * 2 * n * o * ho * ho * c * k * k
    return {name: float(np.median(v)) for name, v in times.items()}, flops


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three shapes, three repeats")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=THREADS, help="Numba and torch threads (wall-time mode)")
    parser.add_argument("--cpu-time", action="store_true", help="one thread each, CPU time of the process")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference")
    args = parser.parse_args()
    threads = 1 if args.cpu_time else args.threads
    clock = time.process_time if args.cpu_time else time.perf_counter
    numba.set_num_threads(threads)
    shapes = [SHAPES[i] for i in QUICK] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats

    impls = {"cpu": minirc_step("cpu")}
    if not args.no_numpy:
        impls["numpy"] = minirc_step("numpy")
    torch_fn = torch_step(threads)
    if torch_fn is not None:
        impls["torch"] = torch_fn
    else:
        print("torch not importable: its column is skipped")
    peak = gemm_rate(clock)
    print(f"clock: {'CPU time of the process' if args.cpu_time else 'wall time'}; Numba and torch threads: "
          f"{threads}; float32 GEMM rate (np.dot, 2048^3): {peak:.1f} GFLOP/s")
    header = f"{'shape (fwd+bwd)':22s} {'cpu ms':>8s}"
    header += f" {'numpy ms':>9s} {'numpy/cpu':>9s}" if "numpy" in impls else ""
    header += f" {'torch ms':>9s} {'cpu/torch':>9s}" if "torch" in impls else ""
    print(header + f" {'cpu GF/s':>9s} {'of GEMM':>8s}")
    for shape in shapes:
        t, flops = bench(shape, impls, repeats, clock)
        line = f"{shape[0]:22s} {t['cpu'] * 1e3:8.1f}"
        if "numpy" in t:
            line += f" {t['numpy'] * 1e3:9.1f} {t['numpy'] / t['cpu']:9.2f}"
        if "torch" in t:
            line += f" {t['torch'] * 1e3:9.1f} {t['cpu'] / t['torch']:9.2f}"
        rate = flops / t["cpu"] / 1e9
        print(line + f" {rate:9.1f} {rate / peak:8.0%}", flush=True)


if __name__ == "__main__":
    main()
