"""Box and mask IoU in COCO's conventions, crowd rule included."""
import numpy as np
import pytest

from minirc.evaluation.iou import (_intersections_kernel, _pack, box_iou_xywh, counts_iou,
                                   rle_intersection_numpy, rle_iou)
from minirc.evaluation.rle import encode_counts, mask_to_rle


def test_box_iou_by_hand():
    gt = [[0, 0, 10, 10], [100, 100, 50, 50]]
    dt = [[0, 0, 10, 5],       # half of gt 0: IoU 50 / 100
          [5, 5, 10, 10],      # 5x5 overlap: 25 / (100 + 100 - 25)
          [10, 0, 5, 5],       # touches gt 0 at x = 10 only: 0
          [110, 110, 10, 10]]  # inside gt 1: 100 / 2500, or 100 / 100 when gt 1 is a crowd
    iou = box_iou_xywh(dt, gt)
    np.testing.assert_allclose(iou, [[0.5, 0], [25 / 175, 0], [0, 0], [0, 0.04]])
    crowd = box_iou_xywh(dt, gt, iscrowd=[0, 1])
    assert crowd[3, 1] == 1.0 and crowd[0, 0] == 0.5        # crowd: intersection / area(detection)
    assert box_iou_xywh(np.zeros((0, 4)), gt).shape == (0, 2)
    assert box_iou_xywh(dt, np.zeros((0, 4))).shape == (4, 0)


def test_mask_iou_by_hand():
    a = np.zeros((4, 4), np.uint8)
    a[:2, :2] = 1                      # 4 pixels
    b = np.zeros((4, 4), np.uint8)
    b[1:3, 1:4] = 1                    # 6 pixels, 1 shared with a
    iou = rle_iou([mask_to_rle(a)], [mask_to_rle(b), mask_to_rle(a)])
    np.testing.assert_allclose(iou, [[1 / 9, 1.0]])
    crowd = rle_iou([mask_to_rle(a)], [mask_to_rle(b)], iscrowd=[1])
    np.testing.assert_allclose(crowd, [[1 / 4]])             # shared / area(a)
    empty = mask_to_rle(np.zeros((4, 4)))
    assert rle_iou([empty], [empty]).tolist() == [[0.0]]
    with pytest.raises(ValueError, match="one size"):
        rle_iou([mask_to_rle(a)], [mask_to_rle(np.zeros((3, 4)))])
    with pytest.raises(ValueError, match="iscrowd"):
        rle_iou([mask_to_rle(a)], [mask_to_rle(b)], iscrowd=[0, 1])


def test_intersection_kernel_equals_reference(rng):
    masks = [rng.random((9, 7)) < p for p in (0.0, 0.1, 0.5, 0.9, 1.0)]
    counts = [encode_counts(m) for m in masks]
    counts.append(np.array([0, 0, 3, 0, 60], dtype=np.uint32))   # zero-length runs (legal, uncompressed)
    got = _intersections_kernel(*_pack(counts), *_pack(counts))
    for i, a in enumerate(counts):
        for j, b in enumerate(counts):
            assert got[i, j] == rle_intersection_numpy(a, b)
    assert got[0].tolist() == [0] * 6


def test_matches_pycocotools(rng):
    mask_api = pytest.importorskip("pycocotools.mask")
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        d, g = (int(v) for v in rng.integers(0, 5, 2))
        dm = [rng.random((h, w)) < rng.random() ** 3 for _ in range(d)]
        gm = [rng.random((h, w)) < rng.random() for _ in range(g)]
        crowd = rng.random(g) < 0.4
        as_bytes = lambda r: dict(r, counts=r["counts"].encode())   # noqa: E731
        ref = mask_api.iou([as_bytes(mask_to_rle(m)) for m in dm], [as_bytes(mask_to_rle(m)) for m in gm],
                           crowd.astype(np.uint8).tolist())
        mine = counts_iou([encode_counts(m) for m in dm], [encode_counts(m) for m in gm], crowd)
        np.testing.assert_array_equal(mine, np.asarray(ref).reshape(d, g))
        db, gb = rng.uniform(-5, 40, (d, 4)), rng.uniform(-5, 40, (g, 4))
        ref = np.asarray(mask_api.iou(db, gb, crowd.astype(np.uint8).tolist())).reshape(d, g)
        np.testing.assert_array_equal(box_iou_xywh(db, gb, crowd), ref)   # bit for bit
