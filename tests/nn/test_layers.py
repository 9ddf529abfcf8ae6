import importlib.util
import math

import numpy as np
import pytest

from minirc import Tensor, use_backend
from minirc.nn.layers import ConvTranspose2d, Conv2d, FrozenBatchNorm2d, Linear, MaxPool2d, ReLU
from minirc.random import manual_seed


def _needs(module):
    """Skip a forward test only while another part's functional file is missing."""
    if importlib.util.find_spec(f"minirc.nn.functional.{module}") is None:
        pytest.skip(f"minirc/nn/functional/{module}.py is not there yet")


def test_parameter_shapes_and_keys():
    conv = Conv2d(3, 8, 3, stride=2, padding=1)
    assert conv.weight.shape == (8, 3, 3, 3) and conv.bias.shape == (8,)
    assert list(conv.state_dict()) == ["weight", "bias"]
    assert Conv2d(3, 8, (1, 3), bias=False).weight.shape == (8, 3, 1, 3)
    assert list(Conv2d(3, 8, 1, bias=False).state_dict()) == ["weight"]
    tconv = ConvTranspose2d(6, 4, 2, stride=2)
    assert tconv.weight.shape == (6, 4, 2, 2) and tconv.bias.shape == (4,)  # (in, out, kh, kw)
    lin = Linear(12, 5)
    assert lin.weight.shape == (5, 12) and lin.bias.shape == (5,)
    bn = FrozenBatchNorm2d(7)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var"]
    assert list(bn.parameters()) == []  # buffers, never trained
    assert all(p.dtype == np.float32 for m in (conv, tconv, lin) for p in m.parameters())


@pytest.mark.parametrize("make, fan_in", [(lambda: Conv2d(4, 16, 3), 36), (lambda: Linear(50, 40), 50),
                                          (lambda: ConvTranspose2d(16, 8, 2), 8 * 4)])
def test_default_init_bounds(make, fan_in):
    layer = make()
    bound = 1 / math.sqrt(fan_in)  # torch: kaiming_uniform_(a=sqrt(5)) and U(+-1/sqrt(fan_in)) for the bias
    w, b = layer.weight.data, layer.bias.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
    assert np.abs(b).max() <= bound
    assert abs(w.std() - bound / math.sqrt(3)) < 0.15 * bound / math.sqrt(3)  # U(-b, b) has std b/sqrt(3)


def test_same_seed_same_layers():
    manual_seed(3)
    a = Conv2d(2, 4, 3)
    manual_seed(3)
    b = Conv2d(2, 4, 3)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert not np.array_equal(Conv2d(2, 4, 3).weight.data, a.weight.data)


def test_relu_maxpool_frozen_bn_forward(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(ReLU(inplace=True)(x).numpy(), np.maximum(x, 0))
    y = MaxPool2d(3, 2, 1)(x)
    assert y.shape == (2, 3, 3, 3)
    bn = FrozenBatchNorm2d(3, eps=0.0)
    bn.load_state_dict({"weight": np.full(3, 2.0), "bias": np.ones(3), "running_mean": np.zeros(3),
                        "running_var": np.full(3, 4.0), "num_batches_tracked": np.array(10)})
    np.testing.assert_allclose(bn(x).numpy(), x + 1, rtol=1e-6)


def test_linear_forward(rng):
    _needs("linear")
    lin = Linear(4, 3)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = lin(Tensor(x))
    np.testing.assert_allclose(y.numpy(), x @ lin.weight.data.T + lin.bias.data, rtol=1e-5, atol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(lin.bias.grad, np.full(3, 5.0), rtol=1e-6)
    assert lin.weight.grad.shape == (3, 4)


def test_conv_forward_1x1_is_a_matmul(rng):
    _needs("conv")
    conv = Conv2d(3, 2, 1)
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    expected = np.einsum("oc,nchw->nohw", conv.weight.data[:, :, 0, 0], x) + conv.bias.data[None, :, None, None]
    with use_backend("numpy"):
        np.testing.assert_allclose(conv(x).numpy(), expected, rtol=1e-5, atol=1e-6)
    assert Conv2d(3, 2, 3, stride=2, padding=1)(x).shape == (1, 2, 2, 3)


def test_conv_transpose_forward_shape(rng):
    _needs("conv")
    x = rng.standard_normal((1, 4, 3, 3)).astype(np.float32)
    with use_backend("numpy"):
        assert ConvTranspose2d(4, 2, 2, stride=2)(x).shape == (1, 2, 6, 6)  # the mask head's 14 -> 28


def test_errors():
    with pytest.raises(ValueError, match="in_channels: expected an int >= 1"):
        Conv2d(0, 3, 3)
    with pytest.raises(TypeError, match="kernel_size: expected an int or a pair"):
        Conv2d(1, 3, 2.5)
    with pytest.raises(ValueError, match="groups: only groups=1"):
        Conv2d(4, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding: expected at most half"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="eps: expected a number"):
        FrozenBatchNorm2d(3, eps=-1.0)
    with pytest.raises(TypeError):
        ConvTranspose2d(4, 4, 2, 2, 0, 0)  # torch's output_padding slot: refused, not misread


def test_shapes_match_torch():
    torch = pytest.importorskip("torch")
    pairs = [(Conv2d(3, 8, 3, 2, 1), torch.nn.Conv2d(3, 8, 3, 2, 1)),
             (ConvTranspose2d(6, 4, 2, 2), torch.nn.ConvTranspose2d(6, 4, 2, 2)),
             (Linear(12, 5, bias=False), torch.nn.Linear(12, 5, bias=False))]
    for ours, ref in pairs:
        assert {k: v.shape for k, v in ours.state_dict().items()} == {
            k: tuple(v.shape) for k, v in ref.state_dict().items()}
