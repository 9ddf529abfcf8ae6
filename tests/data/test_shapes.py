import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minirc.data import ShapesDataset, masks_to_boxes
from minirc.data.shapes import rasterize_circle, rasterize_polygon, rasterize_shape, SHAPES


def _assert_item_equal(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    for key in ("boxes", "labels", "masks", "area", "iscrowd"):
        np.testing.assert_array_equal(a[1][key], b[1][key])
    assert a[1]["image_id"] == b[1]["image_id"]


def test_circle_by_hand():
    # centre (2, 2), r = 1: only the four pixel centres (1.5|2.5, 1.5|2.5) lie within distance 1
    expected = np.zeros((4, 4), dtype=bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(rasterize_circle(2.0, 2.0, 1.0, 4, 4), expected)


def test_polygon_by_hand():
    # square [1, 3) x [1, 3) covers pixels 1..2; a right triangle below the diagonal x = y
    square = np.array([[1, 1], [3, 1], [3, 3], [1, 3]], dtype=float)
    expected = np.zeros((4, 5), dtype=bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(rasterize_polygon(square, 4, 5), expected)
    tri = np.array([[0, -0.25], [4, -0.25], [4, 3.75]], dtype=float)  # inside: y < x - 0.25
    np.testing.assert_array_equal(rasterize_polygon(tri, 4, 4), np.triu(np.ones((4, 4), bool), k=1))


def test_star_is_not_convex():
    star = rasterize_shape("star", 20, 20, 15, 0.0, 40, 40)
    # the centre is inside, a point between two arms at the outer radius is not
    assert star[20, 20] and not star[int(20 + 14 * np.sin(np.pi / 5 * 2)), 20 - 6]


def test_masks_to_boxes_by_hand():
    m = np.zeros((2, 6, 8), dtype=np.uint8)
    m[0, 2:4, 3:6] = 1  # rows 2..3, columns 3..5 -> [3, 2, 6, 4]
    np.testing.assert_array_equal(masks_to_boxes(m), [[3, 2, 6, 4], [0, 0, 0, 0]])
    assert masks_to_boxes(np.zeros((0, 6, 8), np.uint8)).shape == (0, 4)


def test_item_format():
    ds = ShapesDataset(8, image_size=(40, 48), seed=3, empty_fraction=0.0)
    assert ds.num_classes == 4 and ds.class_names[0] == "__background__" and len(ds) == 8
    image, t = ds[1]
    m = len(t["labels"])
    assert image.shape == (3, 40, 48) and image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert t["boxes"].shape == (m, 4) and t["boxes"].dtype == np.float32
    assert t["labels"].dtype == np.int64 and t["masks"].dtype == np.uint8 and t["masks"].shape == (m, 40, 48)
    assert t["area"].dtype == np.float32 and t["iscrowd"].dtype == np.uint8 and t["image_id"] == 1


def test_deterministic_and_independent_per_item():
    a = ShapesDataset(10, seed=5, image_size=48)
    b = ShapesDataset(10, seed=5, image_size=48)
    late = b[7]  # built first, without items 0..6
    _assert_item_equal(a[7], late)
    _assert_item_equal(a[-3], late)
    other = ShapesDataset(10, seed=6, image_size=48)[7]
    assert not np.array_equal(other[0], late[0])


def test_empty_images():
    ds = ShapesDataset(3, image_size=32, empty_fraction=1.0)
    image, t = ds[0]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 32, 32) and t["labels"].shape == (0,)
    assert t["area"].shape == (0,) and t["iscrowd"].shape == (0,)


def test_occlusion_later_shape_wins():
    ds = ShapesDataset(1, image_size=20, min_visible=0.5, min_pixels=1)
    first = np.zeros((20, 20), bool)
    first[2:10, 2:10] = True  # 64 pixels
    second = np.zeros((20, 20), bool)
    second[5:10, 2:10] = True  # covers 40 of them: 24/64 < 0.5 visible -> dropped
    masks, keep = ds._visible_masks([first, second], 20, 20)
    assert keep == [1] and masks[0].sum() == 40
    third = np.zeros((20, 20), bool)
    third[8:10, 2:10] = True  # covers 16 of 64: 48/64 visible -> kept, minus the covered rows
    masks, keep = ds._visible_masks([first, third], 20, 20)
    assert keep == [0, 1] and masks[0].sum() == 48 and not (masks[0] & masks[1]).any()


def test_image_size_range():
    ds = ShapesDataset(12, image_size=((32, 40), (50, 64)), seed=1)
    sizes = {ds[i][0].shape[1:] for i in range(12)}
    assert len(sizes) > 1
    assert all(32 <= h <= 40 and 50 <= w <= 64 for h, w in sizes)


def test_all_shape_kinds():
    ds = ShapesDataset(20, image_size=64, classes=SHAPES, seed=2, empty_fraction=0.0)
    labels = np.concatenate([ds[i][1]["labels"] for i in range(20)])
    assert set(labels) == set(range(1, len(SHAPES) + 1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), index=st.integers(0, 99))
def test_targets_match_masks(seed, index):
    ds = ShapesDataset(100, image_size=40, seed=seed, max_objects=5, classes=SHAPES)
    _, t = ds[index]
    masks = t["masks"]
    assert masks.sum(axis=0).max(initial=0) <= 1                       # occlusion: disjoint instances
    np.testing.assert_array_equal(t["boxes"], masks_to_boxes(masks))  # tight boxes of visible pixels
    np.testing.assert_array_equal(t["area"], masks.sum(axis=(1, 2)))
    assert ((t["labels"] >= 1) & (t["labels"] < ds.num_classes)).all()
    assert (t["area"] >= ds.min_pixels).all()
    b = t["boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 40).all() and (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


def test_clear_errors():
    with pytest.raises(ValueError, match="classes"):
        ShapesDataset(2, classes=("circle", "blob"))
    with pytest.raises(ValueError, match="image_size"):
        ShapesDataset(2, image_size=(8, 8))
    with pytest.raises(TypeError, match="image_size"):
        ShapesDataset(2, image_size="big")
    with pytest.raises(ValueError, match="empty_fraction"):
        ShapesDataset(2, empty_fraction=1.5)
    with pytest.raises(IndexError, match="index"):
        ShapesDataset(2)[2]
    with pytest.raises(TypeError, match="index"):
        ShapesDataset(2)[0.5]
