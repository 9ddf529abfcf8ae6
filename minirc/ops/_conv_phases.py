"""The input gradient of an undilated strided convolution, one stride-1 correlation per output phase.

Worked example, 3x3 kernel, stride 2, padding 1, along one axis: dx[2a] receives tap 1 from g[a];
dx[2a + 1] receives taps 2 and 0 from g[a] and g[a + 1]. So the even pixels of dx are a 1-tap
correlation of g, the odd ones a 2-tap correlation, and in 2-D the four phases have 1x1, 1x2, 2x1
and 2x2 sub-kernels: the 9 taps split among them, no tap computed twice and no scatter of
overlapping contributions (col2im's read-modify-write).

The cpu backend of :mod:`minirc.ops.conv2d` uses it where the kernel equals the stride (every pixel
of dx gets exactly one tap per axis, as in the mask head's 2x2 stride-2 transposed conv, whose
forward is this gradient): there each phase is one plain product and col2im's scatter is pure cost.
For overlapping taps (3x3 stride 2) or gaps (1x1 stride 2) col2im measured faster
(benchmarks/bench_conv_paths.py), so conv2d keeps col2im there; this function still computes those
cases correctly, and the tests check it on them through ``phase_taps``.
"""
from __future__ import annotations

import numpy as np

from minirc.ops._conv_args import Geometry


def phase_taps(size, k, stride, padding, r):
    """One axis of the output phase r of dx (the pixels r, r + stride, ...): (taps, e, length).

    dx[s*a + r] = sum_{oh, i: oh*s - p + i = s*a + r} g[oh] w[i]. Only taps i = i0, i0 + s, ...
    with i0 = (r + p) mod s reach this phase, at oh = a + (r + p - i)/s. Read as a correlation,
    ``dx_r[a] = sum_m g[a + e + m] w[taps[m]]`` for m = 0..len(taps)-1, with the taps listed from
    the last one down (``taps``) and ``e`` the offset of the first one; ``length`` outputs.
    """
    i0 = (r + padding) % stride
    taps = list(range(i0, k, stride))[::-1]
    e = (r + padding - i0) // stride - len(taps) + 1
    return taps, e, -(-(size - r) // stride) if r < size else 0


def input_grad_by_phases(g, w, x_hw, geom, correlate):
    """dx of an undilated conv as stride^2 stride-1 correlations of g, one per output phase.

    The pixels (r + sh*a, q + sw*b) of dx -- phase (r, q) -- receive only the taps (i, j) with
    i = r + ph mod sh, j = q + pw mod sw, each from one position of g: so each phase is a plain
    stride-1 correlation of g with a sub-kernel (channels swapped, taps reversed), computed like
    any forward conv and written straight into its strided slice of dx (docs/conv.md).

    g: (N, O, Ho, Wo); w: (O, C, kh, kw); x_hw: dx's (H, W); geom: the conv's Geometry, undilated.
    correlate: the backend's forward conv, ``correlate(x, w, geom, out=view)`` writing into ``out``.
    """
    (n, o, ho, wo), c = g.shape, w.shape[1]
    phases = [(r, q, phase_taps(x_hw[0], geom.kh, geom.sh, geom.ph, r),
               phase_taps(x_hw[1], geom.kw, geom.sw, geom.pw, q))
              for r in range(geom.sh) for q in range(geom.sw)]
    # g padded once with zeros, enough for every phase's window (offset e, e + length + taps - 1)
    lo_h = max([0] + [-e for _, _, (_, e, _), _ in phases])
    lo_w = max([0] + [-e for _, _, _, (_, e, _) in phases])
    hi_h = max([0] + [e + a + len(t) - 1 - ho for _, _, (t, e, a), _ in phases])
    hi_w = max([0] + [e + b + len(t) - 1 - wo for _, _, _, (t, e, b) in phases])
    gp = np.zeros((n, o, lo_h + ho + hi_h, lo_w + wo + hi_w), dtype=g.dtype)
    gp[:, :, lo_h: lo_h + ho, lo_w: lo_w + wo] = g
    dx = np.empty((n, c, *x_hw), dtype=g.dtype)
    for r, q, (taps_h, e_h, a), (taps_w, e_w, b) in phases:
        if a == 0 or b == 0:
            continue
        if not taps_h or not taps_w:  # no tap reaches these pixels (stride > kernel)
            dx[:, :, r::geom.sh, q::geom.sw] = 0
            continue
        window = gp[:, :, lo_h + e_h: lo_h + e_h + a + len(taps_h) - 1,
                    lo_w + e_w: lo_w + e_w + b + len(taps_w) - 1]
        sub = np.ascontiguousarray(w[:, :, taps_h][:, :, :, taps_w].transpose(1, 0, 2, 3))
        # the window is read in place and the phase written in place, block by block, on every thread
        correlate(window, sub, Geometry(len(taps_h), len(taps_w), 1, 1, 0, 0, 1, 1),
                     out=dx[:, :, r::geom.sh, q::geom.sw])
    return dx
