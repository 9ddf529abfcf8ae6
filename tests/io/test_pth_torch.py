"""Against torch itself (skipped without torch): torch.save files load equal, torch.load reads save_pth's."""
from collections import OrderedDict

import numpy as np
import pytest

from minirc.io import PthError, load_pth, read_pth, save_pth

torch = pytest.importorskip("torch")


def _torch_state():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    conv = torch.nn.Conv2d(3, 4, 3)
    bn = torch.nn.BatchNorm2d(4)
    bn.running_var.uniform_(0.5, 2.0, generator=g)
    bn.num_batches_tracked += 5
    state = OrderedDict(conv.state_dict(prefix="conv."))
    state.update(bn.state_dict(prefix="bn."))
    state.update({
        "f64": torch.randn(3, generator=g, dtype=torch.float64), "f16": torch.randn(2, 3, generator=g).half(),
        "bf16": torch.randn(5, generator=g).bfloat16(), "i64": torch.tensor([-(2 ** 63), 2 ** 63 - 1]),
        "i32": torch.tensor([-5, 7], dtype=torch.int32), "i16": torch.tensor([-300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8), "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False]), "c64": torch.tensor([1 + 2j], dtype=torch.complex64),
        "u16": torch.tensor([1, 65535], dtype=torch.uint16), "u64": torch.tensor([2 ** 64 - 1], dtype=torch.uint64),
        "base": base, "t": base.t(), "col": base[:, 2], "step": base[1::2, ::3], "expand": base[0, :1].expand(3, 2),
        "param": torch.nn.Parameter(torch.ones(2)), "scalar": torch.tensor(2.5), "empty": torch.zeros(0, 3),
    })
    return state


def _numpy(t):
    t = t.detach()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy()


@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_files_load_equal(tmp_path, zip_format):
    state = _torch_state()
    path = tmp_path / "t.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    got = load_pth(path)
    assert list(got) == list(state)
    for key, value in state.items():
        want = _numpy(value)
        assert got[key].dtype == want.dtype and got[key].shape == want.shape, key
        assert got[key].tobytes() == np.ascontiguousarray(want).tobytes(), key


def test_module_state_dict_metadata(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 1), torch.nn.BatchNorm2d(2))
    torch.save(model.state_dict(), tmp_path / "m.pth")
    obj = read_pth(tmp_path / "m.pth")
    assert obj._metadata["1"]["version"] == model.state_dict()._metadata["1"]["version"]


@pytest.mark.parametrize("mmap", [False, True])
def test_torch_loads_save_pth_output(tmp_path, mmap):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((4, 6)).astype(np.float32)
    state = {"base": base, "t": base.T, "col": base[:, 2], "f16": np.ones(3, np.float16), "i64": np.arange(3),
             "i32": np.array([-1], np.int32), "i16": np.array([2], np.int16), "i8": np.array([-3], np.int8),
             "u8": np.array([255], np.uint8), "mask": np.array([True, False]), "f64": np.array(np.pi),
             "c128": np.array([1j]), "empty": np.zeros((0, 2), np.float32), "bn.num_batches_tracked": np.array(7)}
    path = tmp_path / "ours.pth"
    save_pth(state, path)
    got = torch.load(path, weights_only=True, mmap=mmap)  # mmap needs the 64-byte aligned storages
    assert isinstance(got, OrderedDict) and list(got) == list(state)
    for key, value in state.items():
        assert got[key].numpy().dtype == value.dtype, key
        np.testing.assert_array_equal(got[key].numpy(), value, err_msg=key)
    assert got["t"].untyped_storage().data_ptr() == got["base"].untyped_storage().data_ptr()  # shared
    assert got["t"].stride() == (1, 6) and got["col"].storage_offset() == 2


def test_torch_refuses_nothing_we_write_and_we_refuse_what_torch_would_run(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": torch.ones(1), "evil": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(PthError, match=r"refused the global '(__builtin__|builtins)\.print'"):
        load_pth(tmp_path / "evil.pth")
    with pytest.raises(Exception):
        torch.load(tmp_path / "evil.pth", weights_only=True)  # torch's own weights_only refuses it too
