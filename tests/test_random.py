import numpy as np
import pytest

import minirc.random as mrandom
from minirc.nn.layers import Linear


def test_same_seed_same_numbers():
    mrandom.manual_seed(42)
    a = mrandom.generator().random(5)
    mrandom.manual_seed(42)
    b = mrandom.generator().random(5)
    np.testing.assert_array_equal(a, b)
    mrandom.manual_seed(43)
    assert not np.array_equal(mrandom.generator().random(5), a)
    assert mrandom.initial_seed() == 43


def test_manual_seed_returns_the_new_global_generator():
    g = mrandom.manual_seed(0)
    assert g is mrandom.generator() and isinstance(g, np.random.Generator)


def test_layers_draw_from_it():
    mrandom.manual_seed(7)
    a = Linear(3, 2)
    mrandom.manual_seed(7)
    b = Linear(3, 2)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)


def test_state_round_trip_resumes_the_stream():
    mrandom.manual_seed(1)
    mrandom.generator().random(3)
    state = mrandom.get_state()
    expected = mrandom.generator().random(4)
    mrandom.manual_seed(99)
    mrandom.set_state(state)
    np.testing.assert_array_equal(mrandom.generator().random(4), expected)


def test_errors():
    with pytest.raises(TypeError, match=r"manual_seed\(seed\): expected an int"):
        mrandom.manual_seed(1.5)
    with pytest.raises(ValueError, match=r"manual_seed\(seed\): expected an int >= 0"):
        mrandom.manual_seed(-1)
    with pytest.raises(ValueError, match=r"set_state\(state\): expected a PCG64 state"):
        mrandom.set_state({"bit_generator": "MT19937"})
