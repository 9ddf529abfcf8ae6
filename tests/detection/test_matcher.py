import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minirc.detection import Matcher

# docs/semantics.md case T7 (detectron2 tests/modeling/test_matcher.py, translated; [verified] with torchvision)
T7 = np.array([[0.15, 0.45, 0.2, 0.6], [0.3, 0.65, 0.05, 0.1], [0.05, 0.4, 0.25, 0.4]], np.float32)


def test_t7_golden_matches():
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(T7).tolist() == [-2, 1, -1, 0]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=False)(T7).tolist() == [-2, -2, -1, -2]
    assert Matcher(0.5, 0.5)(T7).tolist() == [-1, 1, -1, 0]  # low == high: nothing is ignored
    assert Matcher(0.7, 0.3)(T7).dtype == np.int64


def test_thresholds_are_inclusive_from_below():
    q = np.array([[0.7, 0.3, 0.2999, 0.6999]])
    assert Matcher(0.7, 0.3)(q).tolist() == [0, -2, -1, -2]


def test_argmax_tie_goes_to_the_lowest_gt_index():
    assert Matcher(0.5, 0.3)(np.array([[0.8], [0.8]])).tolist() == [0]


def test_best_anchor_rule_gives_back_the_anchors_own_best_gt():
    # gt 0's best anchor is anchor 0 (IoU 0.2, below low), but anchor 0 prefers gt 1 (0.25):
    # torchvision rescues anchor 0 and matches it to gt 1, not to the gt that rescued it
    q = np.array([[0.2, 0.1], [0.25, 0.9]])
    assert Matcher(0.7, 0.3)(q).tolist() == [-1, 1]
    assert Matcher(0.7, 0.3, True)(q).tolist() == [1, 1]


def test_best_anchor_rule_includes_ties():
    q = np.array([[0.4, 0.1, 0.4, 0.39]])
    assert Matcher(0.7, 0.3, True)(q).tolist() == [0, -1, 0, -2]


def test_gt_with_zero_best_iou_rescues_every_zero_anchor():
    # edge case (docs/semantics.md section 7): a gt overlapping nothing ties with every anchor at IoU 0
    q = np.array([[0.0, 0.0, 0.0], [0.8, 0.0, 0.0]])
    assert Matcher(0.7, 0.3)(q).tolist() == [1, -1, -1]
    assert Matcher(0.7, 0.3, True)(q).tolist() == [1, 0, 0]


def test_ties_are_exact_in_the_matrix_dtype():
    # two IoUs that differ in float64 but are equal once rounded to float32
    a, b = 0.4, 0.4 + 1e-9
    q64 = np.array([[a, b, 0.0]])
    assert Matcher(0.7, 0.3, True)(q64).tolist() == [-2, 0, -1]
    assert Matcher(0.7, 0.3, True)(q64.astype(np.float32)).tolist() == [0, 0, -1]


def test_clear_errors():
    with pytest.raises(ValueError, match="low_threshold"):
        Matcher(0.3, 0.7)
    with pytest.raises(ValueError, match="ground-truth"):
        Matcher(0.7, 0.3)(np.zeros((0, 5)))
    with pytest.raises(ValueError, match="prediction"):
        Matcher(0.7, 0.3)(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="match_quality_matrix"):
        Matcher(0.7, 0.3)(np.zeros(5))
    with pytest.raises(TypeError, match="high_threshold"):
        Matcher("0.7", 0.3)


quality = hnp.arrays(np.float32, st.tuples(st.integers(1, 5), st.integers(1, 12)),
                     elements=st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]))


@settings(max_examples=80, deadline=None)
@given(q=quality, low_quality=st.booleans())
def test_property_match_codes_follow_the_best_iou(q, low_quality):
    matches = Matcher(0.7, 0.3, low_quality)(q)
    best = q.max(axis=0)
    rescued = np.zeros(q.shape[1], bool)
    if low_quality:
        rescued[np.nonzero(q == q.max(axis=1, keepdims=True))[1]] = True
    for n in range(q.shape[1]):
        if rescued[n] or best[n] >= 0.7:
            assert matches[n] == np.argmax(q[:, n]) and q[matches[n], n] == best[n]
        else:
            assert matches[n] == (-2 if best[n] >= 0.3 else -1)
    if low_quality:  # every gt's best anchors (ties included) end up positive
        _, preds = np.nonzero(q == q.max(axis=1, keepdims=True))
        assert np.all(matches[preds] >= 0)

def test_matches_torchvision_when_available(rng):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import Matcher as TVMatcher

    q = rng.choice(np.array([0.0, 0.2, 0.3, 0.5, 0.7, 0.8], np.float32), size=(6, 40))
    for args in [(0.7, 0.3, True), (0.7, 0.3, False), (0.5, 0.5, False)]:
        np.testing.assert_array_equal(Matcher(*args)(q), TVMatcher(*args)(torch.from_numpy(q)).numpy())
