"""Where a training step of the ``shapes_demo`` preset spends its CPU time (cpu backend).

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \\
        python benchmarks/profile_step.py                  # CPU seconds per step, weights digest
    ... python benchmarks/profile_step.py --profile 25     # + the 25 biggest cProfile entries (tottime)

Builds the demo model and its data as ``minirc demo`` does (seed 0, the preset's run length and lr
schedule), runs ``--warmup`` untimed steps (they compile the kernels), then ``--steps``
steps timed with ``time.process_time`` (CPU time of the process, all threads: on a shared machine
it moves far less with the load than the wall clock, which is printed too). The digest (SHA-256 of every weight after the last step)
is the same on every run of the same code: a change that claims to keep the results bit for bit
must keep it too.
"""
from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import time

import numpy as np


def build_trainer():
    from minirc.train.demo import build, demo_config
    from minirc.train.trainer import Trainer

    cfg = demo_config("shapes_demo")
    model, train_set, _ = build(cfg, 0)
    return model, Trainer(model, train_set, cfg.train, out_dir=None, progress=False)


def digest(model) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(p)).tobytes())
    return h.hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--profile", type=int, default=0, metavar="TOP",
                    help="profile the timed steps with cProfile and print the TOP entries by tottime")
    args = ap.parse_args()
    model, trainer = build_trainer()
    for _ in range(args.warmup):
        trainer.step(*trainer.loader.next_batch())
    profiler = cProfile.Profile(time.process_time) if args.profile else None  # CPU time, as the total
    start, wall = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    for _ in range(args.steps):
        trainer.step(*trainer.loader.next_batch())
    if profiler:
        profiler.disable()
    per_step = (time.process_time() - start) / args.steps
    wall = (time.perf_counter() - wall) / args.steps
    print(f"cpu_seconds_per_step {per_step:.4f}  wall_seconds_per_step {wall:.4f}  steps {args.steps}  "
          f"weights {digest(model)}")
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats("tottime").print_stats(args.profile)


if __name__ == "__main__":
    main()
