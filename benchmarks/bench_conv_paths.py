"""Which cpu conv path wins where: Winograd F(2x2, 3x3) vs im2col, and the strided input gradient.

    python benchmarks/bench_conv_paths.py            # two threads (minirc's default on 2 cores)
    MINIRC_GEMM_THREADS=1 python benchmarks/bench_conv_paths.py

Prints, side by side in one run (best of ``--repeats`` wall-clock times, ms):

* the forward of 3x3 stride-1 convs through im2col and through Winograd (both forced by setting
  the thresholds of ``minirc.ops._winograd``), with the ratio im2col / Winograd and whether the
  default thresholds (MIN_WORK, MIN_CHANNELS) pick Winograd: the shapes are the demo model's maps
  (4 images, 4-32 px), its mask head (14x14 RoIs) and a bench_conv shape;
* the phase-wise input gradient of strided convs against the col2im route: the mask head's 2x2
  stride-2 transposed conv (whose forward it is), a 3x3 stride-2 conv, a 1x1 stride-2 conv.
  conv2d takes the phases where taps never overlap (kernel <= stride), col2im elsewhere.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import minirc  # noqa: F401  (thread settings)
from minirc.ops import _winograd as winograd
from minirc.ops import conv2d as conv_mod
from minirc.ops._conv_args import Geometry
from minirc.ops._conv_phases import input_grad_by_phases

WINOGRAD_SHAPES = [  # (N, C, O, H=W)
    (4, 16, 16, 32), (4, 32, 32, 16), (4, 64, 64, 8), (4, 128, 128, 4),
    (4, 64, 64, 16), (4, 32, 32, 32), (4, 64, 64, 32), (25, 64, 32, 14), (100, 32, 32, 14),
    (2, 64, 64, 64),
]


def best_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * min(times)


def col2im_input_grad(g, w, x_hw, geom):
    """The route the phases replaced: W^T @ g, then col2im (kept in conv2d for dilated convs)."""
    n, o, ho, wo = g.shape
    dx = np.zeros((n, w.shape[1], *x_hw), dtype=g.dtype)
    w2t = np.ascontiguousarray(w.reshape(o, -1).T)
    g3 = g.reshape(n, o, ho * wo)
    for blk in conv_mod.blocks(n, ho, wo, conv_mod._COL2IM_BLOCK_COLUMNS):
        dcols = conv_mod.split_dot(w2t, conv_mod._grad_block(g3, blk, wo))
        conv_mod._col2im_cpu_kernel(dcols, *blk, *geom, wo, dx)
    return dx


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
    print("\nstrided input gradient                 col2im ms  phases ms  ratio")
    cases = [("mask head convT 2x2 s2, 100x32x14x14", (100, 32, 28, 28), (32, 32, 2, 2), 2, 0, (14, 14)),
             ("3x3 s2 128->128, 64 px, N=2", (2, 128, 64, 64), (128, 128, 3, 3), 2, 1, (32, 32)),
             ("1x1 s2 256->512, 64 px, N=2", (2, 256, 64, 64), (512, 256, 1, 1), 2, 0, (32, 32))]
    for label, x_shape, w_shape, s, p, g_hw in cases:
        # dx of a conv of x_shape by w_shape = the transposed conv's forward of g
        w = rng.standard_normal(w_shape).astype(np.float32)
        g = rng.standard_normal((x_shape[0], w_shape[0], *g_hw)).astype(np.float32)
        gm = Geometry(w_shape[2], w_shape[3], s, s, p, p, 1, 1)
        t_col2im = best_ms(lambda: col2im_input_grad(g, w, x_shape[2:], gm), args.repeats)
        t_phase = best_ms(lambda: input_grad_by_phases(g, w, x_shape[2:], gm, conv_mod._forward_cpu),
                          args.repeats)
        print(f"{label:38s} {t_col2im:9.2f} {t_phase:10.2f} {t_col2im / t_phase:6.2f}")


if __name__ == "__main__":
    main()
