"""Greedy matching of one image and category, and the 101-point interpolation."""
import numpy as np

from minirc.evaluation.accumulate import interpolate, precision_recall
from minirc.evaluation.matching import evaluate_image, greedy_match, greedy_match_numpy
from minirc.evaluation.summarize import COCOParams

THR = COCOParams().iou_thresholds
ALL = (0.0, 1e10)


def test_best_iou_wins_and_each_gt_matches_once():
    ious = np.array([[0.6, 0.8],     # det 0 (best score) takes gt 1, its best
                     [0.7, 0.9]])    # det 1 then gets gt 0 (gt 1 is taken) at t <= 0.7 only
    r = evaluate_image(ious, [100, 100], [False, False], [100, 100], ALL, THR)
    assert r["match"][0].tolist() == [1, 0]                       # t = 0.50
    assert r["match"][THR.tolist().index(0.75)].tolist() == [1, -1]
    assert r["match"][-1].tolist() == [-1, -1]                    # t = 0.95
    assert not r["det_ignore"].any() and not r["gt_ignore"].any()


def test_regular_match_beats_crowd_and_crowds_match_many():
    ious = np.array([[1.0, 0.6],     # gt 0 is a crowd: det 0 prefers the regular gt 1 (0.6 >= 0.5)
                     [1.0, 0.0],     # det 1, 2 land in the crowd: matched and ignored, both
                     [1.0, 0.0]])
    r = evaluate_image(ious, [100, 100], [True, False], [100, 100, 100], ALL, THR)
    assert r["match"][0].tolist() == [1, 0, 0]
    assert r["det_ignore"][0].tolist() == [False, True, True]
    assert r["gt_ignore"].tolist() == [True, False]
    assert r["match"][-1].tolist() == [0, 0, 0]                    # at 0.95 det 0 falls back on the crowd


def test_area_range_ignores_gt_and_unmatched_dets():
    ious = np.array([[0.9, 0.0], [0.0, 0.0]])
    # "medium": gt 0 (area 10) is ignored -> det 0 matched to it is ignored; det 1 unmatched and small
    r = evaluate_image(ious, [10, 5000], [False, False], [10, 10], (32 ** 2, 96 ** 2), THR)
    assert r["gt_ignore"].tolist() == [True, False]
    assert r["det_ignore"][0].tolist() == [True, True]
    r = evaluate_image(ious, [10, 5000], [False, False], [10, 5000], (32 ** 2, 96 ** 2), THR)
    assert r["det_ignore"][0].tolist() == [True, False]          # an in-range false positive counts


def test_threshold_one_accepts_iou_one_and_ties_pick_the_later_gt():
    r = evaluate_image(np.array([[1.0, 1.0]]), [1, 1], [False, False], [1], ALL, np.array([1.0]))
    assert r["match"].tolist() == [[1]]


def test_numba_equals_python(rng):
    for _ in range(30):
        d, g = (int(v) for v in rng.integers(0, 7, 2))
        ious = np.round(rng.random((d, g)), 1)
        ign = np.sort(rng.random(g) < 0.3)
        crowd = ign & (rng.random(g) < 0.5)
        a = greedy_match(ious, ign, crowd, THR)
        b = greedy_match_numpy(ious, ign, crowd, THR)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_precision_recall_and_101_point_interpolation_by_hand():
    # 2 gt; detections by score: TP, FP, TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    matched = np.array([True, False, True])
    rc, pr = precision_recall(matched, np.zeros(3, bool), 2)
    np.testing.assert_allclose(rc, [0.5, 0.5, 1.0])
    np.testing.assert_allclose(pr, [1, 0.5, 2 / 3])
    q, s = interpolate(rc, pr, np.array([0.9, 0.8, 0.7]), COCOParams().recall_thresholds)
    # recall points 0.00..0.50 (51 of them) read det 0 (precision 1); 0.51..1.00 read det 2 (2/3:
    # the envelope lifts det 1's 1/2 to 2/3 but no recall point lands on det 1)
    np.testing.assert_allclose(q[:51], 1.0)
    np.testing.assert_allclose(q[51:], 2 / 3)
    np.testing.assert_allclose(s[51:], 0.7)
    assert abs(q.mean() - (51 + 50 * 2 / 3) / 101) < 1e-12
    q, _ = interpolate(rc[:1], pr[:1], np.array([0.9]), COCOParams().recall_thresholds)
    assert q[51:].tolist() == [0.0] * 50                           # recall never reached: 0
