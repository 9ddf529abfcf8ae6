"""Polygon rasterisation: hand-derived masks and pixel-exact agreement with pycocotools."""
import numpy as np
import pytest

from minirc.evaluation.polygon import box_to_counts, polygon_to_counts, polygons_to_mask
from minirc.evaluation.rle import counts_to_string, decode_counts
from minirc.evaluation.segmentation import segmentation_to_counts, segmentation_to_mask


def test_axis_aligned_square_by_hand():
    # Corners at 0 and 4. Columns: pixel column c is sampled at the 5x-grid line u = 5c + 2 (x = c + 0.4),
    # inside for c = 0..3. Rows: the top edge (y = 0, v = 0) starts at row ceil(0.5 / 5 - 0.5) = 0, the
    # bottom edge (v = 20) ends before row ceil(20.5 / 5 - 0.5) = 4. So pixels [0:4, 0:4].
    mask = decode_counts(polygon_to_counts([0, 0, 4, 0, 4, 4, 0, 4], 6, 6), 6, 6)
    expected = np.zeros((6, 6), np.uint8)
    expected[:4, :4] = 1
    np.testing.assert_array_equal(mask, expected)
    # the vertex order (clockwise or not, starting point) does not matter
    np.testing.assert_array_equal(decode_counts(polygon_to_counts([4, 4, 4, 0, 0, 0, 0, 4], 6, 6), 6, 6), expected)


def test_clipping_and_degenerate_polygons():
    mask = decode_counts(polygon_to_counts([-10, -10, 3, -10, 3, 2, -10, 2], 5, 5), 5, 5)
    assert mask[:2, :3].all() and mask.sum() == 6                 # the part inside the image
    assert decode_counts(polygon_to_counts([], 3, 3), 3, 3).sum() == 0
    assert decode_counts(polygon_to_counts([1, 1, 1, 1, 1, 1], 3, 3), 3, 3).sum() == 0   # one point
    outside = polygon_to_counts([10, 10, 20, 10, 20, 20], 4, 4)
    assert outside.tolist() == [16]


def test_box_and_multipart_union():
    np.testing.assert_array_equal(box_to_counts([1, 1, 2, 3], 5, 5),
                                  polygon_to_counts([1, 1, 1, 4, 3, 4, 3, 1], 5, 5))
    parts = [[0, 0, 2, 0, 2, 2, 0, 2], [1, 1, 3, 1, 3, 3, 1, 3]]  # two overlapping 2x2 squares
    assert polygons_to_mask(parts, 4, 4).sum() == 7
    assert segmentation_to_mask(parts, 4, 4).sum() == 7


def test_segmentation_formats_and_errors():
    m = np.zeros((3, 4), np.uint8)
    m[1, 1:3] = 1
    unc = {"size": [3, 4], "counts": [4, 1, 2, 1, 4]}
    np.testing.assert_array_equal(segmentation_to_mask(unc, 3, 4), m)
    comp = {"size": [3, 4], "counts": counts_to_string([4, 1, 2, 1, 4])}
    np.testing.assert_array_equal(segmentation_to_mask(comp, 3, 4), m)
    with pytest.raises(ValueError, match="ann 5.*differs from the image"):
        segmentation_to_counts(unc, 4, 4, where="ann 5")
    with pytest.raises(ValueError, match="ann 5: polygon 0"):
        segmentation_to_counts([[1, 2, 3]], 4, 4, where="ann 5")
    with pytest.raises(TypeError, match="ann 5"):
        segmentation_to_counts("polygon", 4, 4, where="ann 5")
    with pytest.raises(ValueError, match="polygon"):
        polygon_to_counts([0, 0, np.nan, 1, 2, 2], 3, 3)


def test_pixel_exact_against_pycocotools():
    mask_api = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(0)
    checked = 0
    for it in range(600):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        k = int(rng.integers(3, 9))
        kind = it % 3   # random floats incl. negative, one-decimal coordinates (ties), integer vertices
        xy = (rng.uniform(-5, max(h, w) + 5, 2 * k) if kind == 0 else
              np.round(rng.uniform(-3, max(h, w) + 3, 2 * k), 1) if kind == 1 else
              rng.integers(-2, max(h, w) + 2, 2 * k).astype(float))
        ref = mask_api.frPyObjects([xy.tolist()], h, w)[0]
        assert counts_to_string(polygon_to_counts(xy, h, w)) == ref["counts"].decode(), (h, w, xy.tolist())
        checked += 1
    assert checked == 600
