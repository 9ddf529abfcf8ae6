"""Which cpu conv path wins where: Winograd F(2x2, 3x3) vs im2col for 3x3 stride-1 convs.

    python benchmarks/bench_conv_paths.py            # two threads (minirc's default on 2 cores)
    MINIRC_GEMM_THREADS=1 python benchmarks/bench_conv_paths.py

Prints, side by side in one run (best of ``--repeats`` wall-clock times, ms), the forward of 3x3
stride-1 convs through im2col and through Winograd (both forced by setting the thresholds of
``minirc.ops._winograd``), with the ratio im2col / Winograd and whether the default thresholds
(MIN_WORK, MIN_CHANNELS) pick Winograd: the shapes are the demo model's maps (4 images, 4-32 px),
its mask head (14x14 RoIs) and a bench_conv shape.

(Until 2026-12-06 it also timed a phase-wise input gradient of strided convs against col2im; the
channel-blocked col2im of that evening beat the phases on every shape, 1.3-2.1x faster on two
threads and 1.3-1.5x on one, and the phases were removed: docs/conv.md.)
"""
from __future__ import annotations

import argparse

import numpy as np

import minirc  # noqa: F401  (thread settings)
from minirc.ops import _winograd as winograd
from minirc.ops import conv2d as conv_mod
from minirc.ops._conv_args import Geometry
from minirc.testing import call_times

WINOGRAD_SHAPES = [  # (N, C, O, H=W)
    (4, 16, 16, 32), (4, 32, 32, 16), (4, 64, 64, 8), (4, 128, 128, 4),
    (4, 64, 64, 16), (4, 32, 32, 32), (4, 64, 64, 32), (25, 64, 32, 14), (100, 32, 32, 14),
    (2, 64, 64, 64),
]


def best_ms(fn, repeats):
    return 1e3 * min(call_times(fn, repeats))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    geom = Geometry(3, 3, 1, 1, 1, 1, 1, 1)
    defaults = winograd.MIN_WORK, winograd.MIN_CHANNELS
    print("3x3 stride-1 forward (N, C, O, H)   multiply-adds  im2col ms  winograd ms  ratio  default picks")
    for n, c, o, h in WINOGRAD_SHAPES:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        picks = winograd.applies(geom, c, o, n * h * h)
        winograd.MIN_WORK, winograd.MIN_CHANNELS = 1 << 62, 1 << 30
        t_im2col = best_ms(lambda: conv_mod._forward_cpu(x, w, geom), args.repeats)
        winograd.MIN_WORK, winograd.MIN_CHANNELS = 0, 0
        t_wino = best_ms(lambda: conv_mod._forward_cpu(x, w, geom), args.repeats)
        winograd.MIN_WORK, winograd.MIN_CHANNELS = defaults
        print(f"{str((n, c, o, h)):34s} {n * h * h * c * 9 * o / 1e6:9.1f}M {t_im2col:10.3f} {t_wino:12.3f}"
              f" {t_im2col / t_wino:6.2f}  {'winograd' if picks else 'im2col'}")


if __name__ == "__main__":
    main()
