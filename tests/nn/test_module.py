from collections import OrderedDict

import numpy as np
import pytest

from minirc import Tensor
from minirc.nn.containers import ModuleList, Sequential
from minirc.nn.layers import Conv2d, FrozenBatchNorm2d, Linear, ReLU
from minirc.nn.module import Module, Parameter, StateDictError


class Block(Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn1 = FrozenBatchNorm2d(4)


class Net(Module):
    def __init__(self):
        super().__init__()
        self.conv1 = Conv2d(3, 4, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(4)
        self.layer1 = Sequential(Block(), Block())
        self.fc = Linear(4, 2)


BN = ["weight", "bias", "running_mean", "running_var"]
NET_KEYS = (["conv1.weight"] + [f"bn1.{k}" for k in BN]
            + [k for i in (0, 1) for k in [f"layer1.{i}.conv1.weight"] + [f"layer1.{i}.bn1.{b}" for b in BN]]
            + ["fc.weight", "fc.bias"])


def test_state_dict_keys_in_torch_order():
    sd = Net().state_dict()
    assert list(sd) == NET_KEYS
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert sd["layer1.1.conv1.weight"].shape == (4, 4, 3, 3)


def test_own_parameters_then_buffers_then_children():
    class M(Module):
        def __init__(self):
            super().__init__()
            self.child = Linear(1, 1)
            self.register_buffer("stat", np.zeros(2))
            self.w = Parameter(np.zeros(3))

    assert list(M().state_dict()) == ["w", "stat", "child.weight", "child.bias"]


def test_named_parameters_skip_buffers_and_none():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    assert names == ["conv1.weight", "layer1.0.conv1.weight", "layer1.1.conv1.weight", "fc.weight", "fc.bias"]
    assert all(isinstance(p, Parameter) and p.requires_grad for p in net.parameters())
    assert net.conv1.bias is None
    assert [n for n, _ in net.named_buffers()][:4] == [f"bn1.{k}" for k in BN]


def test_modules_and_children():
    net = Net()
    assert [n for n, _ in net.named_children()] == ["conv1", "bn1", "layer1", "fc"]
    names = [n for n, _ in net.named_modules()]
    assert names[0] == "" and "layer1.0.bn1" in names and len(names) == 11
    assert net.get_submodule("layer1.1.conv1") is net.layer1[1].conv1


def test_shared_parameter_listed_once():
    a = Linear(2, 2)
    seq = Sequential(a, a)
    assert len(list(seq.parameters())) == 2
    assert list(seq.state_dict()) == ["0.weight", "0.bias"]


def test_load_state_dict_round_trip_in_place():
    src, dst = Net(), Net()
    w_before = dst.fc.weight
    data_before = dst.fc.weight.data
    result = dst.load_state_dict(src.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k], v)
    assert dst.fc.weight is w_before and dst.fc.weight.data is data_before  # copied in place
    # state_dict returns copies: editing them leaves the model alone
    sd = dst.state_dict()
    sd["fc.bias"][:] = 123
    assert not np.any(dst.fc.bias.data == 123)


def test_load_casts_to_the_parameter_dtype_and_accepts_tensors():
    m = Linear(2, 3)
    sd = {"weight": Tensor(np.ones((3, 2), np.float64)), "bias": np.arange(3)}
    m.load_state_dict(sd)
    assert m.weight.dtype == np.float32 and m.bias.data.tolist() == [0, 1, 2]


def test_strict_load_lists_missing_and_unexpected_keys():
    net = Net()
    sd = net.state_dict()
    del sd["fc.bias"], sd["bn1.running_var"]
    sd["fc.extra"] = np.zeros(1)
    with pytest.raises(StateDictError) as err:
        net.load_state_dict(sd)
    msg = str(err.value)
    assert "Missing key(s) in state_dict: 'bn1.running_var', 'fc.bias'" in msg
    assert "Unexpected key(s) in state_dict: 'fc.extra'" in msg
    assert isinstance(err.value, ValueError) and isinstance(err.value, RuntimeError)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["bn1.running_var", "fc.bias"] and result.unexpected_keys == ["fc.extra"]


def test_shape_mismatch_is_an_error_even_when_not_strict_and_nothing_is_copied():
    net = Net()
    before = net.state_dict()
    sd = Net().state_dict()
    sd["fc.weight"] = np.zeros((3, 4), np.float32)
    for strict in (True, False):
        with pytest.raises(ValueError, match=r"size mismatch for fc.weight: copying an array of shape \(3, 4\), "
                                             r"the shape in the current model is \(2, 4\)"):
            net.load_state_dict(sd, strict=strict)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_num_batches_tracked_is_dropped_by_frozen_bn():
    net = Net()
    sd = net.state_dict()
    sd["bn1.num_batches_tracked"] = np.array(7)
    sd["layer1.0.bn1.num_batches_tracked"] = np.array(7)
    assert net.load_state_dict(sd) == ([], [])


def test_load_hook_can_rename_legacy_keys():
    class Head(Module):
        def __init__(self):
            super().__init__()
            self.conv = Sequential(Linear(2, 2))

        def _load_from_state_dict_hook(self, state, prefix):
            for name in ("weight", "bias"):
                if prefix + "conv." + name in state:
                    state[prefix + "conv.0." + name] = state.pop(prefix + "conv." + name)

    outer = Sequential(Head())
    sd = {"0.conv.weight": np.ones((2, 2)), "0.conv.bias": np.ones(2)}
    outer.load_state_dict(sd)
    assert outer[0].conv[0].bias.data.tolist() == [1, 1]


def test_train_eval_recursive():
    net = Net()
    assert net.training and net.layer1[0].bn1.training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_and_requires_grad():
    net = Net()
    for p in net.parameters():
        p.grad = np.ones(p.shape, np.float32)
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.layer1.requires_grad_(False)
    assert [n for n, p in net.named_parameters() if p.requires_grad] == ["conv1.weight", "fc.weight", "fc.bias"]
    assert "layer1.0.conv1.weight" in net.state_dict()  # frozen parameters are still saved


def test_attribute_rules():
    m = Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign Tensor as parameter 'weight'"):
        m.weight = Tensor(np.zeros((2, 2)))
    m.bias = None
    assert "bias" not in m.state_dict()
    f = FrozenBatchNorm2d(2)
    f.running_mean = np.array([1.0, 2.0], np.float32)  # a new value for a registered buffer
    assert f.state_dict()["running_mean"].tolist() == [1, 2]
    m.note = "plain attribute"
    assert m.note == "plain attribute" and "note" not in m.state_dict()
    del m.weight
    assert list(m.state_dict()) == []

    class NoInit(Module):
        def __init__(self):
            self.w = Parameter(np.zeros(1))

    with pytest.raises(AttributeError, match="super"):
        NoInit()
    with pytest.raises(ValueError, match="name: expected a non-empty string without '.'"):
        Module().register_buffer("a.b", np.zeros(1))
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        m.load_state_dict([1, 2])


def test_non_persistent_buffer_not_saved():
    m = Module()
    m.register_buffer("cache", np.zeros(2), persistent=False)
    assert list(m.state_dict()) == [] and len(list(m.buffers())) == 1


def test_sequential_and_module_list():
    seq = Sequential(Linear(2, 3), ReLU(), Linear(3, 1))
    assert len(seq) == 3 and isinstance(seq[-1], Linear) and isinstance(seq[1:], Sequential)
    assert list(seq[1:].state_dict()) == ["2.weight", "2.bias"]  # slices keep their names, as torch
    with pytest.raises(IndexError, match="out of range"):
        seq[3]
    named = Sequential(OrderedDict([("conv", Conv2d(1, 1, 1)), ("relu", ReLU())]))
    assert list(named.state_dict()) == ["conv.weight", "conv.bias"]
    ml = ModuleList([Linear(1, 1)])
    ml.append(Linear(1, 2))
    assert len(ml) == 2 and list(ml.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    ml[0] = Linear(1, 3)
    assert ml[0].out_features == 3


def test_repr_like_torch():
    text = repr(Sequential(Conv2d(3, 4, 3, padding=1, bias=False), FrozenBatchNorm2d(4), ReLU(inplace=True)))
    assert text == ("Sequential(\n"
                    "  (0): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
                    "  (1): FrozenBatchNorm2d(4, eps=1e-05)\n"
                    "  (2): ReLU(inplace=True)\n)")


def test_keys_match_torch():
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    tnn = torch.nn

    class TBlock(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(4, 4, 3, padding=1, bias=False)
            self.bn1 = ops.FrozenBatchNorm2d(4)

    class TNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = tnn.Conv2d(3, 4, 3, bias=False)
            self.bn1 = ops.FrozenBatchNorm2d(4)
            self.layer1 = tnn.Sequential(TBlock(), TBlock())
            self.fc = tnn.Linear(4, 2)

    ref = TNet().state_dict()
    assert list(ref) == NET_KEYS
    net = Net()
    net.load_state_dict(ref)  # torch tensors load directly
    np.testing.assert_array_equal(net.fc.weight.data, ref["fc.weight"].numpy())


class Counted(Module):
    """Parameters, float buffers (FrozenBN) and an integer buffer (a counter that stays on the host)."""

    def __init__(self):
        super().__init__()
        self.conv = Conv2d(2, 3, 1)
        self.bn = FrozenBatchNorm2d(3)
        self.register_buffer("count", np.array(0, np.int64))

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.mark.cuda
def test_to_device_and_to_host_move_everything_in_place(rng):
    from minirc import use_backend
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    net = Counted()
    net.bn.running_var[...] = 2.0
    params = list(net.parameters())
    net.conv.weight.grad = np.ones((3, 2, 1, 1), np.float32)
    before = net.state_dict()
    x = rng.standard_normal((1, 2, 2, 2)).astype(np.float32)
    with use_backend("cuda"):
        host_out = net(x).numpy()
        assert net.to_device() is net and net.to_device() is net  # twice: the second copies nothing
        assert [id(p) for p in net.parameters()] == [id(p) for p in params]  # optimizers keep their references
        assert all(is_device_array(p.data) for p in params) and is_device_array(net.conv.weight.grad)
        assert all(is_device_array(getattr(net.bn, b)) for b in ("weight", "bias", "running_mean", "running_var"))
        assert isinstance(net.count, np.ndarray)  # integer counters stay with the Python code that updates them
        out = net(Tensor(to_device(x)))
        assert is_device_array(out.data)
        np.testing.assert_allclose(out.numpy(), host_out, rtol=1e-6)
    state = net.state_dict()  # host copies
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for key in before:
        np.testing.assert_array_equal(state[key], before[key])
    net.load_state_dict({k: v + 1 for k, v in before.items()})  # written into the device arrays
    assert is_device_array(net.bn.running_mean) and is_device_array(net.conv.bias.data)
    np.testing.assert_array_equal(net.state_dict()["bn.running_mean"], before["bn.running_mean"] + 1)
    net.zero_grad(set_to_none=False)
    assert is_device_array(net.conv.weight.grad)
    np.testing.assert_array_equal(net.conv.weight.grad.copy_to_host(), 0)
    assert net.to_host() is net
    assert all(isinstance(p.data, np.ndarray) for p in params) and isinstance(net.bn.running_var, np.ndarray)
    np.testing.assert_array_equal(net.conv.weight.data, before["conv.weight"] + 1)


def test_calling_a_module_without_forward_names_the_subclass():
    from minirc.nn import Module

    class NoForward(Module):
        pass

    with pytest.raises(TypeError, match="NoForward must define forward"):
        NoForward()(1)
