"""BatchNorm2d: torch's state_dict layout, train vs eval statistics, running buffers, torch parity."""
import numpy as np
import pytest

from minirc import Tensor
from minirc.nn import BatchNorm2d, Sequential


def _x(rng, shape=(2, 3, 4, 4), shift=2.0):
    return (rng.standard_normal(shape) * 1.5 + shift).astype(np.float32)


def test_state_dict_keys_order_and_dtypes_like_torch():
    bn = BatchNorm2d(3)
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    np.testing.assert_array_equal(sd["weight"], 1.0)
    np.testing.assert_array_equal(sd["bias"], 0.0)
    np.testing.assert_array_equal(sd["running_mean"], 0.0)
    np.testing.assert_array_equal(sd["running_var"], 1.0)
    assert sd["num_batches_tracked"].shape == () and sd["num_batches_tracked"].dtype == np.int64
    assert sd["weight"].dtype == np.float32 and bn.weight.requires_grad
    assert repr(bn) == "BatchNorm2d(3, eps=1e-05, momentum=0.1, affine=True, bias=True, track_running_stats=True)"


def test_training_normalises_the_batch_and_updates_buffers(rng):
    bn = BatchNorm2d(3)
    x = _x(rng)
    y = bn(Tensor(x)).numpy()
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), 1.0, rtol=1e-3)  # eps = 1e-5 makes it a hair below 1
    assert int(bn.num_batches_tracked) == 1
    mean = x.mean(axis=(0, 2, 3))
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-5)


def test_eval_uses_running_stats_and_changes_nothing(rng):
    bn = BatchNorm2d(3)
    bn(Tensor(_x(rng)))
    bn.eval()
    buffers = {k: v.copy() for k, v in bn.state_dict().items()}
    x = _x(rng, shift=-1.0)
    y = bn(Tensor(x)).numpy()
    expected = (x - bn.running_mean[None, :, None, None]) / np.sqrt(bn.running_var[None, :, None, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, buffers[k], err_msg=k)
    # each image alone gives the same output as the batch: eval statistics do not depend on the batch
    np.testing.assert_allclose(bn(Tensor(x[:1])).numpy(), y[:1], rtol=1e-6)
    bn.train()
    assert not np.allclose(bn(Tensor(x[:1])).numpy(), y[:1], atol=1e-2)  # training: they do


def test_train_eval_switch_recurses_through_containers(rng):
    model = Sequential(BatchNorm2d(3), Sequential(BatchNorm2d(3)))
    model.eval()
    assert not any(m.training for m in model.modules())
    model(Tensor(_x(rng)))
    assert all(int(m.num_batches_tracked) == 0 for m in model.modules() if isinstance(m, BatchNorm2d))
    model.train()
    model(Tensor(_x(rng)))
    assert all(int(m.num_batches_tracked) == 1 for m in model.modules() if isinstance(m, BatchNorm2d))


def test_momentum_none_is_a_cumulative_average(rng):
    bn = BatchNorm2d(2, momentum=None)
    xs = [_x(rng, (2, 2, 3, 3), shift=s) for s in (1.0, 5.0)]
    for x in xs:
        bn(Tensor(x))
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(axis=(0, 2, 3)) for x in xs], axis=0), rtol=1e-5)
    assert int(bn.num_batches_tracked) == 2


def test_gradients_reach_weight_and_bias(rng):
    bn = BatchNorm2d(3)
    x = Tensor(_x(rng), requires_grad=True)
    out = bn(x)
    (out * out * Tensor(np.arange(3, dtype=np.float32)[None, :, None, None])).sum().backward()
    assert bn.weight.grad.shape == (3,) and bn.bias.grad.shape == (3,) and x.grad.shape == x.shape


def test_load_state_dict_round_trip_and_missing_counter(rng):
    a, b = BatchNorm2d(3), BatchNorm2d(3)
    for _ in range(3):
        a(Tensor(_x(rng)))
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v, err_msg=k)
    assert b.num_batches_tracked.dtype == np.int64 and int(b.num_batches_tracked) == 3
    frozen_style = {k: v for k, v in a.state_dict().items() if k != "num_batches_tracked"}
    c = BatchNorm2d(3)
    c.load_state_dict(frozen_style)  # torch's BatchNorm accepts it and keeps its own counter
    assert int(c.num_batches_tracked) == 0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_features": 0}, ValueError, "num_features"),
    ({"eps": -1e-5}, ValueError, "eps"),
    ({"momentum": 2.0}, ValueError, "momentum"),
])
def test_constructor_errors(kwargs, error, match):
    args = {"num_features": 3, **kwargs}
    with pytest.raises(error, match=match):
        BatchNorm2d(**args)


def test_one_value_per_channel_fails_in_training_only(rng):
    bn = BatchNorm2d(2)
    x = Tensor(np.ones((1, 2, 1, 1), np.float32))
    with pytest.raises(ValueError, match="input: expected more than 1 value per channel"):
        bn(x)
    assert int(bn.num_batches_tracked) == 0  # nothing counted for a failed call
    bn.eval()
    assert bn(x).shape == (1, 2, 1, 1)


def test_torch_parity_train_steps_then_eval(rng):
    torch = pytest.importorskip("torch")
    ours, ref = BatchNorm2d(3, momentum=0.2), torch.nn.BatchNorm2d(3, momentum=0.2)
    with torch.no_grad():
        ref.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        ref.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    ours.load_state_dict({k: v.numpy() for k, v in ref.state_dict().items()})
    for step in range(3):
        x = _x(rng, (2, 3, 5, 4), shift=step)
        g = rng.standard_normal(x.shape).astype(np.float32)
        xo, xr = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        yo, yr = ours(xo), ref(xr)
        ours.zero_grad()
        ref.zero_grad()
        yo.backward(g)
        yr.backward(torch.tensor(g))
        np.testing.assert_allclose(yo.numpy(), yr.detach().numpy(), rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(xo.grad, xr.grad.numpy(), rtol=1e-5, atol=2e-6)
        np.testing.assert_allclose(ours.weight.grad, ref.weight.grad.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(ours.bias.grad, ref.bias.grad.numpy(), rtol=1e-5, atol=1e-5)
    for k, v in ref.state_dict().items():  # running stats: the same double-precision update as torch
        np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-6, err_msg=k)
    ours.eval()
    ref.eval()
    x = _x(rng, (1, 3, 3, 3))
    with torch.no_grad():
        np.testing.assert_allclose(ours(Tensor(x)).numpy(), ref(torch.tensor(x)).numpy(), rtol=1e-5, atol=2e-6)


def test_reset_running_stats(rng):
    bn = BatchNorm2d(3)
    bn(Tensor(_x(rng)))
    bn.reset_running_stats()
    np.testing.assert_array_equal(bn.running_mean, 0.0)
    np.testing.assert_array_equal(bn.running_var, 1.0)
    assert int(bn.num_batches_tracked) == 0


def test_on_the_device_buffers_update_in_place(rng):
    from minirc import use_backend
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    x = _x(rng, (2, 2, 2, 2))
    ref = BatchNorm2d(2)
    expected = ref(Tensor(x)).numpy()
    bn = BatchNorm2d(2)
    bn.to_device()  # float buffers move to the GPU, the int64 counter stays on the host
    assert is_device_array(bn.running_mean) and not is_device_array(bn.num_batches_tracked)
    with use_backend("cuda"):
        xt = Tensor(to_device(x), requires_grad=True)
        y = bn(xt)
        y.backward(to_device(np.ones(x.shape, np.float32)))
    assert is_device_array(y.data) and is_device_array(bn.weight.grad)
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_mean.copy_to_host(), ref.running_mean, rtol=1e-6)
    assert int(bn.num_batches_tracked) == 1
    sd = bn.state_dict()
    np.testing.assert_allclose(sd["running_var"], ref.running_var, rtol=1e-6)
