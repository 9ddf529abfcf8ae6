"""Winograd F(2x2, 3x3) in the cpu conv2d: hand-computed tiles, agreement with the im2col reference."""
import numpy as np
import pytest

import minirc.ops._conv_blocks as conv_blocks
import minirc.ops._winograd as winograd
from minirc.ops._conv_args import geometry
from minirc.ops.conv2d import conv2d_backward, conv2d_forward


@pytest.fixture
def always_winograd(monkeypatch):
    """Every 3x3 stride-1 conv through F(2x2, 3x3), however small."""
    monkeypatch.setattr(winograd, "MIN_WORK", 0)
    monkeypatch.setattr(winograd, "MIN_CHANNELS", 1)


def test_weight_transform_is_g_g_gt():
    w = np.arange(2 * 3 * 9, dtype=np.float64).reshape(2, 3, 3, 3) - 20
    u = winograd.weight_transform(w)
    assert u.shape == (16, 2, 3)
    for o in range(2):
        for c in range(3):
            want = winograd.G @ w[o, c] @ winograd.G.T
            np.testing.assert_allclose(u[:, o, c].reshape(4, 4), want, rtol=0, atol=1e-12)


def test_one_tile_by_hand(always_winograd):
    # a 4x4 input, no padding: one 2x2 tile. The ones kernel gives the 3x3 window sums of
    # [[0 1 2 3] [4 5 6 7] [8 9 10 11] [12 13 14 15]]: 45, 54 / 81, 90 -- what 16 products must give
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    y = conv2d_forward(x, np.ones((1, 1, 3, 3), np.float32), backend="cpu")
    np.testing.assert_array_equal(y[0, 0], [[45, 54], [81, 90]])


@pytest.mark.parametrize("case", [  # (N, C, O, H, W, padding)
    (1, 1, 1, 1, 1, 1),     # a single output: one tile that hangs over both edges
    (2, 3, 4, 5, 6, 1),     # odd height: the last tile row writes one output row
    (1, 2, 3, 7, 4, 0),
    (3, 4, 2, 6, 9, 2),     # padding 2 (the input gradient's geometry for padding 0)
    (1, 3, 3, 3, 3, 3),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_the_reference(always_winograd, case, dtype, rng):
    n, c, o, h, w, p = case
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((o, c, 3, 3)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    y = conv2d_forward(x, wt, b, 1, p, backend="cpu")
    assert y.dtype == dtype
    np.testing.assert_allclose(y, conv2d_forward(x, wt, b, 1, p, backend="numpy"), rtol=tol, atol=tol)
    g = rng.standard_normal(y.shape).astype(dtype)
    # dx of a stride-1 conv is itself a 3x3 stride-1 conv of g: Winograd again
    for got, want in zip(conv2d_backward(g, x, wt, 1, p, backend="cpu"),
                         conv2d_backward(g, x, wt, 1, p, backend="numpy")):
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("tile_columns, band_tiles", [(1, 128), (3, 128), (50, 128), (50, 3), (50, 5)])
def test_blocks_of_tiles_shared_among_threads(always_winograd, monkeypatch, tile_columns, band_tiles, rng):
    # blocks of 1 or 3 tiles (bands of tile rows) or several images per block, run on 3 threads;
    # band_tiles 3 and 5: the 16-tile maps count as big and are cut into L2-sized bands
    monkeypatch.setattr(conv_blocks, "BLOCK_BYTES", tile_columns * 16 * 4 * 4)
    monkeypatch.setattr(conv_blocks, "MIN_THREADED_WORK", 0)
    monkeypatch.setattr(winograd, "MIN_BAND_TILES", 1)
    monkeypatch.setattr(winograd, "L2_TILE_BYTES", band_tiles * 16 * (4 + 5) * 4)  # C + O = 9, float32
    monkeypatch.setenv("MINIRC_GEMM_THREADS", "3")
    x = rng.standard_normal((3, 4, 7, 8)).astype(np.float32)
    wt = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(conv2d_forward(x, wt, None, 1, 1, backend="cpu"),
                               conv2d_forward(x, wt, None, 1, 1, backend="numpy"), rtol=1e-5, atol=1e-5)


def test_empty_batch(always_winograd):
    y = conv2d_forward(np.zeros((0, 4, 6, 6), np.float32), np.ones((2, 4, 3, 3), np.float32), padding=1,
                       backend="cpu")
    assert y.shape == (0, 2, 6, 6)


def test_applies_only_to_big_enough_3x3_stride_1_undilated_convs():
    big = dict(in_channels=64, out_channels=64, n_outputs=64 * 64)
    assert winograd.applies(geometry((3, 3), 1, 1, 1), **big)
    assert not winograd.applies(geometry((3, 3), 2, 1, 1), **big)   # stride 2
    assert not winograd.applies(geometry((3, 3), 1, 2, 2), **big)   # dilation 2
    assert not winograd.applies(geometry((5, 5), 1, 2, 1), **big)   # 5x5
    assert not winograd.applies(geometry((3, 3), 1, 1, 1), in_channels=16, out_channels=64,
                                n_outputs=64 * 64)                   # too few input channels
    assert not winograd.applies(geometry((3, 3), 1, 1, 1), in_channels=64, out_channels=64,
                                n_outputs=4 * 4)                     # too little work


def test_big_maps_are_cut_into_l2_sized_bands():
    # 2 images of 32x32 tiles, 64 -> 64 channels: V and M of 128 tiles are 1 MiB, bands of 4 tile
    # rows; a 14x14 RoI map (7x7 = 49 tiles) is smaller than a band and grouped whole as before
    big, _ = winograd._tile_blocks(2, 32, 32, 64, 64, 4)
    assert len(big) == 16 and all(r1 - r0 == 4 and n1 - n0 == 1 for n0, n1, r0, r1 in big)
    small, _ = winograd._tile_blocks(100, 7, 7, 32, 32, 4)
    assert all(r0 == 0 and r1 == 7 for _, _, r0, r1 in small) and small[0][1] - small[0][0] > 1
    # 128 -> 128 channels: 1 MiB holds only 64 tiles, under MIN_BAND_TILES: 4 MiB blocks as im2col's
    wide, _ = winograd._tile_blocks(2, 32, 32, 128, 128, 4)
    assert len(wide) == 4 and all(r1 - r0 == 16 for _, _, r0, r1 in wide)
