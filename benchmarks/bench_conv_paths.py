"""Which cpu conv path wins where: Winograd F(2x2, 3x3) vs im2col for 3x3 stride-1 convs.

    python benchmarks/bench_conv_paths.py            # two threads (minirc's default on 2 cores)
    MINIRC_GEMM_THREADS=1 python benchmarks/bench_conv_paths.py

Prints, side by side in one run (best of ``--repeats`` wall-clock times, ms), the forward of 3x3
stride-1 convs through im2col and through Winograd (both forced by setting the thresholds of
``minirc.ops._winograd``), with the ratio im2col / Winograd and whether the default thresholds
(MIN_WORK, MIN_CHANNELS) pick Winograd: the shapes are the demo model's maps (4 images, 4-32 px),
its mask head (14x14 RoIs) and a bench_conv shape. Then Winograd's forward with and without its
L2-sized bands of tiles (``MIN_BAND_TILES``, ``L2_TILE_BYTES`` in ``minirc/ops/_winograd.py``).
Last, the forward, input gradient and weight gradient of bench_conv's 3x3 shapes apart, for
comparing commits (``PYTHONPATH=<other checkout> python benchmarks/bench_conv_paths.py``).

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


BAND_SHAPES = [(2, 64, 64, 64), (1, 64, 64, 128), (4, 64, 64, 32), (4, 128, 128, 32), (2, 256, 256, 32),
               (25, 64, 32, 14)]  # the last: 49 tiles a RoI, grouped whole either way


PART_SHAPES = [(2, 128, 128, 64, 2), (2, 64, 64, 64, 1), (1, 64, 64, 128, 1)]  # (N, C, O, H, stride), 3x3


def parts(rng, repeats):
    """Forward, input gradient and weight gradient of bench_conv's 3x3 shapes, apart (median ms).

    Run it with PYTHONPATH pointing at another checkout to compare commits part by part."""
    print("\n3x3 conv parts (N, C, O, H, stride)   forward ms  dx ms  dw ms (median)")
    for n, c, o, h, s in PART_SHAPES:
        geom = Geometry(3, 3, s, s, 1, 1, 1, 1)
        ho, wo = geom.out_size(h, h)
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        g = rng.standard_normal((n, o, ho, wo)).astype(np.float32)
        times = [1e3 * float(np.median(call_times(fn, repeats))) for fn in (
            lambda: conv_mod._forward_cpu(x, w, geom),
            lambda: conv_mod._input_grad_cpu(g, w, (h, h), geom),
            lambda: conv_mod._weight_grad_cpu(g, x, geom))]
        print(f"{str((n, c, o, h, s)):38s} {times[0]:10.2f} {times[1]:6.2f} {times[2]:6.2f}")


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
    band_comparison(rng, geom, args.repeats)
    parts(rng, args.repeats)


def band_comparison(rng, geom, repeats):
    """Winograd's forward with its L2-sized bands of tiles (the default) and without them (blocks
    of BLOCK_BYTES of V, as before 2026-12-06 night), on big maps and on the mask head's RoIs."""
    print("\nWinograd forward (N, C, O, H)       tiles/image  4 MiB blocks ms  L2 bands ms  ratio")
    default = winograd.MIN_BAND_TILES
    for n, c, o, h in BAND_SHAPES:
        x = rng.standard_normal((n, c, h, h)).astype(np.float32)
        w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        winograd.MIN_BAND_TILES = 1 << 62  # no map is big enough to be banded
        t_blocks = best_ms(lambda: winograd.conv2d_winograd(x, w, geom), repeats)
        winograd.MIN_BAND_TILES = default
        t_bands = best_ms(lambda: winograd.conv2d_winograd(x, w, geom), repeats)
        print(f"{str((n, c, o, h)):34s} {((h + 1) // 2) ** 2:11d} {t_blocks:16.3f} {t_bands:12.3f}"
              f" {t_blocks / t_bands:6.2f}")


if __name__ == "__main__":
    main()
