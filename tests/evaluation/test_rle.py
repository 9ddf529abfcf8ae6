"""RLE: hand-built masks, the compressed string, area, bbox, and agreement with pycocotools."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minirc.evaluation import rle


def test_counts_are_column_major_and_start_with_zeros():
    mask = np.array([[0, 1, 0],
                     [0, 1, 1],
                     [1, 0, 0]], dtype=np.uint8)
    # columns read top to bottom: (0, 0, 1) (1, 1, 0) (0, 1, 0) -> 0 0 1 1 1 0 0 1 0
    assert rle.encode_counts(mask).tolist() == [2, 3, 2, 1, 1]
    assert rle.encode_counts(np.ones((2, 2))).tolist() == [0, 4]       # starts with a 0-run of zeros
    assert rle.encode_counts(np.zeros((2, 3), bool)).tolist() == [6]
    assert rle.encode_counts(np.zeros((0, 3))).tolist() == [0]
    np.testing.assert_array_equal(rle.decode_counts([2, 3, 2, 1, 1], 3, 3), mask)


@pytest.mark.parametrize("counts, string", [
    ([1, 3], "13"),              # small counts are one character: chr(48 + count)
    ([40], "X1"),                # 40 = 8 + 1 * 32: low group 8 with the "more" bit (+32), then 1
    ([1, 2, 3, 5], "1233"),      # from the 4th count on, the delta to counts[i - 2]: 5 - 2 = 3
    ([0, 5, 10, 2], "05:M"),     # delta 2 - 5 = -3: one group 29 (sign bit 16 set) -> chr(77)
])
def test_compressed_string_by_hand(counts, string):
    assert rle.counts_to_string(counts) == string
    assert rle.counts_to_string_numpy(counts) == string
    assert rle.string_to_counts(string).tolist() == counts
    assert rle.string_to_counts_numpy(string).tolist() == counts


def test_mask_to_rle_round_trip_area_and_bbox():
    mask = np.zeros((5, 7), dtype=np.uint8)
    mask[1:3, 2:6] = 1
    r = rle.mask_to_rle(mask)
    assert r["size"] == [5, 7] and isinstance(r["counts"], str)
    np.testing.assert_array_equal(rle.rle_to_mask(r), mask)
    assert rle.rle_area(r) == 8
    assert rle.rle_to_bbox(r) == [2.0, 1.0, 4.0, 2.0]
    assert rle.rle_to_bbox(rle.mask_to_rle(np.zeros((3, 3)))) == [0.0, 0.0, 0.0, 0.0]
    # a run through the bottom of one column into the top of the next spans all rows
    diag = np.zeros((4, 3), np.uint8)
    diag[3, 0] = diag[0, 1] = 1
    assert rle.rle_to_bbox(rle.mask_to_rle(diag)) == [0.0, 0.0, 2.0, 4.0]
    assert len(rle.mask_to_rle(np.stack([mask, mask]))) == 2


def test_uncompressed_rle_and_merge():
    unc = {"size": [2, 3], "counts": [1, 2, 3]}
    # flat 0 1 1 0 0 0, column by column: (0, 1) (1, 0) (0, 0)
    np.testing.assert_array_equal(rle.rle_to_mask(unc), [[0, 1, 0], [1, 0, 0]])
    a = rle.mask_to_rle(np.array([[1, 0], [0, 0]]))
    b = rle.mask_to_rle(np.array([[0, 0], [0, 1]]))
    assert rle.rle_area(rle.merge_rles([a, b])) == 2
    assert rle.rle_area(rle.merge_rles([a, b], intersect=True)) == 0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(0, 2 ** 32 - 1), st.floats(0, 1))
def test_numba_kernels_equal_numpy_reference(h, w, seed, p):
    mask = np.random.default_rng(seed).random((h, w)) < p
    counts = rle.encode_counts(mask)
    np.testing.assert_array_equal(counts, rle.encode_counts_numpy(mask))
    s = rle.counts_to_string(counts)
    assert s == rle.counts_to_string_numpy(counts)
    np.testing.assert_array_equal(rle.string_to_counts(s), counts)
    np.testing.assert_array_equal(rle.decode_counts(counts, h, w), mask)
    assert rle.counts_area(counts) == mask.sum()


def test_large_counts_round_trip():
    counts = np.array([0, 2 ** 31, 5, 2 ** 32 - 1 - 2 ** 31 - 5], dtype=np.uint32)
    np.testing.assert_array_equal(rle.string_to_counts(rle.counts_to_string(counts)), counts)


def test_clear_errors():
    with pytest.raises(ValueError, match="counts"):
        rle.rle_to_mask({"size": [2, 2], "counts": [1, 2]})          # 3 pixels for a 2x2 mask
    with pytest.raises(ValueError, match="counts"):
        rle.string_to_counts("1\x7f")
    with pytest.raises(ValueError, match="counts"):
        rle.string_to_counts("X")                                     # promises another group
    with pytest.raises(ValueError, match="size"):
        rle.rle_counts({"size": [2], "counts": "4"})
    with pytest.raises(TypeError, match="rle"):
        rle.rle_counts([1, 2, 3])
    with pytest.raises(ValueError, match="mask"):
        rle.encode_counts(np.zeros(4))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_matches_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = rng.integers(1, 40, 2)
        m = (rng.random((h, w)) < rng.random() ** 2).astype(np.uint8)
        ref = mask_api.encode(np.asfortranarray(m))
        mine = rle.mask_to_rle(m)
        assert mine["counts"] == ref["counts"].decode()
        assert rle.rle_area(mine) == int(mask_api.area(ref))
        assert rle.rle_to_bbox(mine) == mask_api.toBbox(ref).tolist()
        np.testing.assert_array_equal(rle.rle_to_mask(mine), mask_api.decode(ref))
