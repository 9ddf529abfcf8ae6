"""Conv2d forward + backward on the "cpu" backend vs the NumPy reference vs torch, and vs the GEMM rate.

Run (torch lives in the benchmark venv; without torch its column is skipped):

    python benchmarks/bench_conv.py                 # (a Python with torch installed) wall time, 2 threads
    python benchmarks/bench_conv.py --cpu-time      # CPU time, 1 thread
    python benchmarks/bench_conv.py --quick --no-numpy

Every implementation runs the same work -- y = conv2d(x, w), then dx and dw from a fixed grad_out --
on ResNet-like shapes (64-256 channels, 3x3 and 1x1, 32-128 px), after a warm-up that compiles the
Numba kernels. minirc (and the NumPy reference) run in this process, torch in a child process that
never imports minirc: in one process, each library's thread pool spins while the other works, and
on the 2-core machine torch's two-thread convs ran 2-5x slower next to minirc's pools than alone
(docs/conv.md). The arrays are the same in both processes (drawn from one seed).

The implementations **take turns**: in each repeat, each side runs one untimed step (it refills the
caches the other side evicted, and lets the other side's idle threads stop spinning) and then one
timed step -- minirc here, torch in the child, timed there. The cpu/torch column is the median of
the per-repeat ratios, so a load that comes and goes on a shared machine hits both sides of a
ratio alike. (Until 2026-12-06 torch ran all its shapes after minirc had run all of its, and a
change of load between the two halves moved the ratios by up to 1.5x; a first version of the
turns, one timed step right after the other side's, with no untimed step, ran both sides 1.4x
slower on the 1x1 shapes: cold caches.) The ms columns are medians of the repeats. The child's
OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): spinning, they took a core
from minirc's turns.

Two clocks:

* default: wall time with ``--threads`` (2) threads for Numba and torch, and minirc's GEMMs split
  over the same number of threads (``MINIRC_GEMM_THREADS``); OpenBLAS itself runs one thread per
  call, as minirc sets it. On a machine shared with other jobs this is noisy;
* ``--cpu-time``: the CPU time of the whole process with one thread for Numba, OpenBLAS, minirc's
  GEMMs and torch, which stays stable on a busy machine: work is compared, not scheduling. (Until
  2026-11-22 this mode read the calling thread's clock, which misses Numba's ``prange`` kernels --
  they run on a worker thread even when only one is allowed -- and so under-counted minirc.)

GFLOP/s counts 3 x 2*N*O*Ho*Wo*C*kh*kw (the forward, dx and dw are each one such product) and is
compared with the float32 rate of 2048 x 2048 products with the same threads and clock (minirc's
split GEMM, i.e. the machine's rate with the threads allowed).
"""
from __future__ import annotations

import argparse
import os
import sys

THREADS = 2
NO_TORCH = 3  # exit status of the torch child when torch is not importable


def _thread_settings():
    """Thread counts into the environment before numpy loads (BLAS sizes its pool at load time)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--cpu-time", action="store_true")
    pre.add_argument("--threads", type=int, default=THREADS)
    known, _ = pre.parse_known_args()
    if known.cpu_time:
        os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MINIRC_GEMM_THREADS"] = "1" if known.cpu_time else str(known.threads)


_thread_settings()

import subprocess  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

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
    """float32 GFLOP/s of an n x n x n product (median of repeats), over the GEMM threads minirc may use."""
    from minirc.ops.split_gemm import split_dot
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    out = np.empty_like(a)
    split_dot(a, a, out=out)
    return 2 * n ** 3 / np.median([timed(lambda: split_dot(a, a, out=out), clock) for _ in range(repeats)]) / 1e9


def minirc_step(backend):
    from minirc.ops.conv2d import conv2d_backward, conv2d_forward

    def step(x, w, g, stride, padding):
        conv2d_forward(x, w, None, stride, padding, 1, backend=backend)
        conv2d_backward(g, x, w, stride, padding, 1, need=(True, True, False), backend=backend)
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


def out_side(shape):
    _, _, _, _, hw, k, s, p = shape
    return (hw + 2 * p - k) // s + 1


def arrays(shape):
    """x, w, grad_out of a shape, the same in every process (one seed)."""
    _, n, c, o, hw, k, _, _ = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
    w = (rng.standard_normal((o, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    g = rng.standard_normal((n, o, out_side(shape), out_side(shape))).astype(np.float32)
    return x, w, g


def flop_count(shape):
    _, n, c, o, _, k, _, _ = shape
    return 3 * 2 * n * o * out_side(shape) ** 2 * c * k * k


class TorchChild:
    """torch in its own process, one turn per request: ``step(i)`` runs SHAPES[i] twice there and
    returns the seconds of the second run, measured by the child (its clock; the pipe not counted)."""

    def __init__(self, threads, cpu_time):
        cmd = [sys.executable, __file__, "--torch-child", "--threads", str(threads)] + (["--cpu-time"] if cpu_time else [])
        # torch's OpenMP threads (GNU libgomp) spin after each step by default, long enough to take
        # a core from minirc's next turn (minirc's 1x1 convs ran 1.2-1.9x slower next to them);
        # waiting passively they leave it. Alone, torch ran as fast either way (3 runs, 2026-12-06)
        env = dict(os.environ)
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.ready = self.proc.stdout.readline().strip() == "ready"
        if not self.ready and self.proc.wait() != NO_TORCH:
            print(f"torch child failed (exit status {self.proc.returncode})")

    def step(self, index):
        self.proc.stdin.write(f"{index}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        if self.ready:
            self.proc.stdin.close()
            self.proc.wait()


def bench(shape, impls, repeats, clock, torch=None):
    """Median seconds of each implementation on a shape, and the median of the per-repeat
    ratios cpu / torch; the implementations (and torch) take turns in each repeat."""
    *_, s, p = shape
    x, w, g = arrays(shape)
    times = {name: [] for name in impls}
    runs = {name: (lambda fn=fn: fn(x, w, g, s, p)) for name, fn in impls.items()}
    if torch is not None:
        runs["torch"] = lambda: torch.step(SHAPES.index(shape))
        times["torch"] = []
    for name, run in runs.items():  # warm-up: JIT compile, BLAS buffers, allocator
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            if name == "torch":
                times[name].append(run())  # the child runs its untimed step itself
            else:
                run()  # untimed: refills the caches the other side evicted
                times[name].append(timed(run, clock))
    result = {name: float(np.median(v)) for name, v in times.items()}
    if torch is not None:
        result["ratio"] = float(np.median(np.array(times["cpu"]) / np.array(times["torch"])))
    return result


def torch_child(args, clock):
    """The --torch-child mode: torch alone in its process, one step per shape index read from
    stdin, each answered with the seconds it took."""
    fn = torch_step(args.threads)
    if fn is None:
        sys.exit(NO_TORCH)
    print("ready", flush=True)
    cache = {}
    for line in sys.stdin:
        shape = SHAPES[int(line)]
        if shape not in cache:
            cache.clear()
            cache[shape] = arrays(shape)
        x, w, g = cache[shape]
        fn(x, w, g, *shape[-2:])  # untimed: caches refilled after the parent's turn
        print(timed(lambda: fn(x, w, g, *shape[-2:]), clock), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three shapes, three repeats")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="Numba, minirc GEMM and torch threads (wall-time mode)")
    parser.add_argument("--cpu-time", action="store_true", help="one thread each, CPU time of the process")
    parser.add_argument("--no-numpy", action="store_true", help="skip the (slow) NumPy reference")
    parser.add_argument("--torch-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_time:
        args.threads = 1
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.torch_child:
        return torch_child(args, clock)

    import numba
    numba.set_num_threads(args.threads)
    shapes = [SHAPES[i] for i in QUICK] if args.quick else SHAPES
    repeats = 3 if args.quick else args.repeats
    impls = {"cpu": minirc_step("cpu")}
    if not args.no_numpy:
        impls["numpy"] = minirc_step("numpy")
    peak = gemm_rate(clock)
    print(f"clock: {'CPU time of the process' if args.cpu_time else 'wall time'}; threads: {args.threads}; "
          f"float32 GEMM rate (2048^3, same threads): {peak:.1f} GFLOP/s")
    torch = TorchChild(args.threads, args.cpu_time)
    if not torch.ready:
        print("no torch column (torch is not importable here)")
    rows = [bench(shape, impls, repeats, clock, torch if torch.ready else None) for shape in shapes]
    torch.close()
    torch_t = [t["torch"] for t in rows] if torch.ready else None
    header = f"{'shape (fwd+bwd)':22s} {'cpu ms':>8s}"
    header += f" {'numpy ms':>9s} {'numpy/cpu':>9s}" if "numpy" in impls else ""
    header += f" {'torch ms':>9s} {'cpu/torch':>9s}" if torch_t else ""
    print(header + f" {'cpu GF/s':>9s} {'of GEMM':>8s}")
    for i, (shape, t) in enumerate(zip(shapes, rows)):
        line = f"{shape[0]:22s} {t['cpu'] * 1e3:8.1f}"
        if "numpy" in t:
            line += f" {t['numpy'] * 1e3:9.1f} {t['numpy'] / t['cpu']:9.2f}"
        if torch_t:
            line += f" {torch_t[i] * 1e3:9.1f} {t['ratio']:9.2f}"
        rate = flop_count(shape) / t["cpu"] / 1e9
        print(line + f" {rate:9.1f} {rate / peak:8.0%}", flush=True)


if __name__ == "__main__":
    main()
