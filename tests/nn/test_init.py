import math

import numpy as np
import pytest

from minirc import Tensor
from minirc.nn import init
from minirc.random import manual_seed


def test_gains():
    assert init.calculate_gain("linear") == 1 and init.calculate_gain("conv2d") == 1
    assert init.calculate_gain("relu") == pytest.approx(math.sqrt(2))
    assert init.calculate_gain("tanh") == pytest.approx(5 / 3)
    assert init.calculate_gain("leaky_relu") == pytest.approx(math.sqrt(2 / (1 + 0.01 ** 2)))
    assert init.calculate_gain("leaky_relu", math.sqrt(5)) == pytest.approx(math.sqrt(1 / 3))


def test_fans():
    assert init.calculate_fan_in_and_fan_out(np.zeros((8, 3, 5, 5), np.float32)) == (75, 200)
    assert init.calculate_fan_in_and_fan_out(np.zeros((10, 4), np.float32)) == (4, 10)
    # ConvTranspose2d weight (in=6, out=2, 2, 2): torch's rule reads dim 1, so fan_in = 2 * 4
    assert init.calculate_fan_in_and_fan_out(np.zeros((6, 2, 2, 2), np.float32)) == (8, 24)


def test_kaiming_uniform_bound_and_fill():
    w = np.zeros((64, 16, 3, 3), np.float32)
    init.kaiming_uniform_(w, a=math.sqrt(5))
    bound = 1 / math.sqrt(16 * 9)  # torch's default layer init: 1/sqrt(fan_in)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    init.kaiming_uniform_(w, a=1)  # the FPN's init: gain 1 -> bound sqrt(3 / fan_in)
    assert np.abs(w).max() <= math.sqrt(3 / 144) and np.abs(w).max() > 0.99 * math.sqrt(3 / 144)


def test_kaiming_normal_std_fan_out_relu():
    w = Tensor(np.zeros((128, 32, 3, 3), np.float32))
    out = init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")  # torchvision's ResNet init
    assert out is w and w.dtype == np.float32
    expected = math.sqrt(2) / math.sqrt(128 * 9)
    assert abs(w.data.std() / expected - 1) < 0.02 and abs(w.data.mean()) < 0.02 * expected


def test_normal_constant_zeros_ones_in_place():
    t = Tensor(np.ones((100, 100), np.float32))
    init.normal_(t, std=0.01)
    assert abs(t.data.std() - 0.01) < 0.0005 and t.dtype == np.float32
    init.constant_(t, 0.5)
    assert np.all(t.data == 0.5)
    init.zeros_(t)
    assert not t.data.any()
    init.ones_(t)
    assert np.all(t.data == 1)


def test_same_seed_same_numbers():
    a, b = np.zeros((3, 4), np.float32), np.zeros((3, 4), np.float32)
    manual_seed(5)
    init.kaiming_uniform_(a)
    manual_seed(5)
    init.kaiming_uniform_(b)
    np.testing.assert_array_equal(a, b)
    init.kaiming_uniform_(b)
    assert not np.array_equal(a, b)


def test_default_init_draws_weight_then_bias():
    w, b = np.zeros((4, 5), np.float32), np.zeros(4, np.float32)
    manual_seed(1)
    init.default_init_(w, b)
    manual_seed(1)
    w2 = np.zeros((4, 5), np.float32)
    init.kaiming_uniform_(w2, a=math.sqrt(5))
    b2 = np.zeros(4, np.float32)
    init.uniform_(b2, -1 / math.sqrt(5), 1 / math.sqrt(5))
    np.testing.assert_array_equal(w, w2)
    np.testing.assert_array_equal(b, b2)


def test_errors():
    w = np.zeros((2, 2), np.float32)
    with pytest.raises(ValueError, match="mode: expected 'fan_in' or 'fan_out'"):
        init.kaiming_normal_(w, mode="fan_avg")
    with pytest.raises(ValueError, match="nonlinearity: expected one of"):
        init.kaiming_uniform_(w, nonlinearity="gelu")
    with pytest.raises(ValueError, match="tensor: fan in and fan out need at least 2 dimensions"):
        init.kaiming_uniform_(np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="tensor: expected a float array"):
        init.normal_(np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="std: expected >= 0"):
        init.normal_(w, std=-1.0)
