import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirc.detection import BalancedPositiveNegativeSampler

SPEC_LABELS = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, -1, -1])


@pytest.mark.parametrize("seed", range(5))
def test_torchvision_sampler_case(seed):
    # torchvision test_models_detection_utils.py: sampler(4, 0.25) -> 1 positive in 6..8, 3 negatives in 0..5
    pos, neg = BalancedPositiveNegativeSampler(4, 0.25)([SPEC_LABELS], rng=np.random.default_rng(seed))
    assert pos[0].dtype == bool and pos[0].shape == SPEC_LABELS.shape
    assert pos[0].sum() == 1 and pos[0][6:9].sum() == 1
    assert neg[0].sum() == 3 and neg[0][:6].sum() == 3
    assert not (pos[0] & neg[0]).any()


def test_negatives_fill_missing_positives_and_ignored_are_never_sampled():
    labels = np.array([1.0, -1.0, -1.0] + [0.0] * 10)  # float labels, as the RPN passes them
    pos, neg = BalancedPositiveNegativeSampler(8, 0.5)([labels], rng=np.random.default_rng(0))
    assert pos[0].sum() == 1 and neg[0].sum() == 7
    assert not pos[0][1:3].any() and not neg[0][1:3].any()


def test_all_taken_when_fewer_than_the_batch():
    labels = np.array([2, 0, 5, 0, -2])  # any value >= 1 counts as positive (a gt index + 1 for the RoI heads)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.5)([labels], rng=np.random.default_rng(0))
    assert pos[0].tolist() == [True, False, True, False, False]
    assert neg[0].tolist() == [False, True, False, True, False]


def test_per_image_lists_and_empty_images():
    s = BalancedPositiveNegativeSampler(2, 0.5)
    pos, neg = s([np.zeros(0), np.array([1, 1, 1, 0, 0, 0])], rng=np.random.default_rng(0))
    assert len(pos) == len(neg) == 2 and pos[0].shape == (0,)
    assert pos[1].sum() == 1 and neg[1].sum() == 1
    assert s([], rng=np.random.default_rng(0)) == ([], [])


def test_same_seed_same_samples():
    labels = np.r_[np.ones(50), np.zeros(500)]
    s = BalancedPositiveNegativeSampler(64, 0.25)
    a = s([labels], rng=np.random.default_rng(7))
    b = s([labels], rng=np.random.default_rng(7))
    c = s([labels], rng=np.random.default_rng(8))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert not np.array_equal(a[0][0], c[0][0])


def test_default_generator_is_minircs_seeded_one():
    from minirc import random
    labels = np.r_[np.ones(50), np.zeros(500)]
    s = BalancedPositiveNegativeSampler(64, 0.25)
    random.manual_seed(3)
    a = s([labels])
    random.manual_seed(3)
    b = s([labels])
    assert np.array_equal(a[0][0], b[0][0]) and np.array_equal(a[1][0], b[1][0])


def test_clear_errors():
    with pytest.raises(ValueError, match="positive_fraction"):
        BalancedPositiveNegativeSampler(4, 1.5)
    with pytest.raises(TypeError, match="batch_size_per_image"):
        BalancedPositiveNegativeSampler(4.0, 0.5)
    s = BalancedPositiveNegativeSampler(4, 0.5)
    with pytest.raises(TypeError, match="matched_labels_list"):
        s(np.zeros(3))
    with pytest.raises(ValueError, match=r"matched_labels_list\[0\]"):
        s([np.zeros((3, 2))])
    with pytest.raises(TypeError, match="rng"):
        s([np.zeros(3)], rng=3)


@settings(max_examples=60, deadline=None)
@given(n_pos=st.integers(0, 40), n_neg=st.integers(0, 40), n_ign=st.integers(0, 10),
       batch=st.integers(0, 64), frac=st.sampled_from([0.0, 0.25, 0.5, 1.0]), seed=st.integers(0, 2**16))
def test_property_counting_rule(n_pos, n_neg, n_ign, batch, frac, seed):
    labels = np.random.default_rng(seed).permutation(np.r_[np.ones(n_pos), np.zeros(n_neg), -np.ones(n_ign)])
    pos, neg = BalancedPositiveNegativeSampler(batch, frac)([labels], rng=np.random.default_rng(seed))
    expect_pos = min(n_pos, int(batch * frac))
    assert pos[0].sum() == expect_pos
    assert neg[0].sum() == min(n_neg, batch - expect_pos)
    assert np.all(labels[pos[0]] == 1) and np.all(labels[neg[0]] == 0)
