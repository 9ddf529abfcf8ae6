"""load_pth on byte streams written here with Python's pickler, as torch.save writes them (no torch)."""
import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from minirc.io import PthError, load_pth, read_pth
from pth_streams import (FakeParameter, FakeStorage, FakeTensor, bfloat16_bits, fake_torch_modules, legacy_bytes,
                         tensor, zip_bytes)

FORMATS = {"zip": zip_bytes, "legacy": legacy_bytes}


def _write(tmp_path, data: bytes, name="w.pth"):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _every_dtype():
    """(state dict of fake tensors, the arrays load_pth must give)."""
    base = np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5
    shared = FakeStorage(base.reshape(-1))
    bf = np.array([1.0, -2.5, 1.5 * 2.0 ** 127, 2.0 ** -130, 0.0, -0.0], np.float32)  # all exact in bfloat16
    state = OrderedDict([
        ("conv.weight", FakeTensor(shared, 0, (3, 4), (4, 1))),
        ("conv.weight_t", FakeTensor(shared, 0, (4, 3), (1, 4))),  # the transpose: same storage
        ("conv.column", FakeTensor(shared, 1, (3,), (4,))),  # a strided slice, offset 1
        ("f64", tensor(np.array([1e-300, -2.0, np.pi]))),
        ("f16", tensor(np.array([[1.5, -0.25], [65504, 2 ** -24]], np.float16))),
        ("bf16", FakeTensor(FakeStorage(bfloat16_bits(bf), "bfloat16"), 0, (2, 3), (3, 1))),
        ("i64", tensor(np.array([-(2 ** 63), 2 ** 63 - 1], np.int64))),
        ("i32", tensor(np.array([-7, 2 ** 31 - 1], np.int32))),
        ("i16", tensor(np.array([-300, 300], np.int16))),
        ("i8", tensor(np.array([-128, 127], np.int8))),
        ("u8", tensor(np.array([0, 255, 7], np.uint8))),
        ("mask", tensor(np.array([True, False, True]))),
        ("c64", tensor(np.array([1 + 2j, -3j], np.complex64))),
        ("bn.num_batches_tracked", tensor(np.array(17, np.int64))),  # 0-d
        ("empty", FakeTensor(FakeStorage(np.zeros(0, np.float32)), 0, (0, 4), (4, 1))),
        ("bf16_scalar", FakeTensor(FakeStorage(bfloat16_bits(bf), "bfloat16"), 1, (), ())),
        ("bool_scalar", FakeTensor(FakeStorage(np.array([False, True])), 1, (), ())),
    ])
    expected = {
        "conv.weight": base, "conv.weight_t": base.T, "conv.column": base[:, 1],
        "f64": np.array([1e-300, -2.0, np.pi]), "f16": np.array([[1.5, -0.25], [65504, 2 ** -24]], np.float16),
        "bf16": bf.reshape(2, 3), "i64": np.array([-(2 ** 63), 2 ** 63 - 1], np.int64),
        "i32": np.array([-7, 2 ** 31 - 1], np.int32), "i16": np.array([-300, 300], np.int16),
        "i8": np.array([-128, 127], np.int8), "u8": np.array([0, 255, 7], np.uint8),
        "mask": np.array([True, False, True]), "c64": np.array([1 + 2j, -3j], np.complex64),
        "bn.num_batches_tracked": np.array(17, np.int64), "empty": np.zeros((0, 4), np.float32),
        "bf16_scalar": np.array(-2.5, np.float32), "bool_scalar": np.array(True),
    }
    return state, expected


def _assert_same(got: dict, expected: dict):
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
        assert got[key].flags.c_contiguous and got[key].flags.writeable, key


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_bit_for_bit(tmp_path, fmt):
    state, expected = _every_dtype()
    got = load_pth(_write(tmp_path, FORMATS[fmt](state)))
    _assert_same(got, expected)
    assert np.signbit(got["bf16"].reshape(-1)[5])  # -0.0 kept: the bits are moved, not converted
    got["conv.weight"][0, 0] = 99  # copies: writing one tensor leaves its storage-sharing siblings alone
    assert got["conv.weight_t"][0, 0] == -5.5


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("fmt", FORMATS)
def test_any_pickle_protocol(tmp_path, fmt, protocol):
    state, expected = _every_dtype()
    _assert_same(load_pth(_write(tmp_path, FORMATS[fmt](state, protocol=protocol))), expected)


def test_state_dict_metadata_and_other_folder_name(tmp_path):
    state = OrderedDict(w=tensor(np.ones((2, 2), np.float32)))
    state._metadata = OrderedDict([("", {"version": 1}), ("w", {"version": 2})])  # as Module.state_dict()
    path = _write(tmp_path, zip_bytes(state, folder="maskrcnn_resnet50_fpn_coco-bf2d0c1e"))
    obj = read_pth(path)
    assert isinstance(obj, OrderedDict) and obj._metadata["w"] == {"version": 2}
    np.testing.assert_array_equal(load_pth(path)["w"], np.ones((2, 2), np.float32))


def test_big_endian_and_missing_byteorder(tmp_path):
    state = OrderedDict(a=tensor(np.array([1.5, -2.0], np.float32)), b=tensor(np.array([258, -3], np.int64)))
    for kwargs in ({"byteorder": "big"}, {"write_byteorder": False}):
        got = load_pth(_write(tmp_path, zip_bytes(state, **kwargs)))
        np.testing.assert_array_equal(got["a"], [1.5, -2.0])
        np.testing.assert_array_equal(got["b"], [258, -3])
        assert got["a"].dtype == np.float32 and got["a"].dtype.isnative


def test_parameter_v1_and_v3_rebuilds(tmp_path):
    raw = np.array([1, 2, 65535], np.uint16)
    state = OrderedDict([
        ("param", FakeParameter(tensor(np.array([0.5, 1.5], np.float32)))),
        ("v1", FakeTensor(FakeStorage(np.arange(4, dtype=np.float64)), 1, (2,), (2,), rebuild="_rebuild_tensor")),
    ])
    got = load_pth(_write(tmp_path, zip_bytes(state)))
    np.testing.assert_array_equal(got["param"], [0.5, 1.5])
    np.testing.assert_array_equal(got["v1"], [1.0, 3.0])

    class V3(FakeTensor):  # _rebuild_tensor_v3(untyped storage, ..., dtype): uint16 has no typed storage
        def __reduce_ex__(self, protocol):
            import sys
            torch = sys.modules["torch"]
            torch.uint16 = type("uint16", (), {"__module__": "torch"})  # pickled as the global torch.uint16
            return torch._utils._rebuild_tensor_v3, (self.storage, 0, (3,), (1,), False, OrderedDict(), torch.uint16)

    path = _write(tmp_path, zip_bytes({"u16": V3(FakeStorage(raw.view(np.uint8), "untyped"), 0, (3,), (1,))}))
    got = load_pth(path)["u16"]
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, raw)


def test_legacy_storage_views(tmp_path):
    root = FakeStorage(np.arange(10, dtype=np.float32))
    view = FakeStorage(np.arange(10, dtype=np.float32)[3:7])
    state = {"t": FakeTensor(view, 1, (2,), (2,))}  # elements 1 and 3 of the view: root[4], root[6]
    path = _write(tmp_path, legacy_bytes(state, views={id(view): (root, 3)}))
    np.testing.assert_array_equal(load_pth(path)["t"], [4.0, 6.0])


def test_read_pth_returns_nested_objects(tmp_path):
    obj = {"model": OrderedDict(w=tensor(np.eye(2, dtype=np.float32))), "epoch": 3, "name": "r50",
           "lrs": [0.1, 0.01], "blob": b"\x00\xff"}
    for fmt in FORMATS.values():
        path = _write(tmp_path, fmt(obj))
        got = read_pth(path)
        assert got["epoch"] == 3 and got["lrs"] == [0.1, 0.01] and got["blob"] == b"\x00\xff"
        np.testing.assert_array_equal(got["model"]["w"], np.eye(2))
        with pytest.raises(PthError, match=r"w\.pth: entry 'model' holds a OrderedDict, not a tensor.*read_pth"):
            load_pth(path)


# ----- bad files ----------------------------------------------------------------------------------

class _Shell:
    """Pickles as os.system(<command>): what a malicious .pth does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("fmt", FORMATS)
def test_refuses_a_pickle_that_would_run_a_command(tmp_path, fmt):
    marker = tmp_path / "ran"
    state = {"w": tensor(np.ones(2, np.float32)), "x": _Shell(f"touch {marker}")}
    path = _write(tmp_path, FORMATS[fmt](state))
    with pytest.raises(PthError, match=r"w\.pth: refused the global '(posix|os|nt)\.system'"):
        load_pth(path)
    assert not marker.exists()


def test_refuses_other_globals_and_build(tmp_path):
    path = _write(tmp_path, zip_bytes({"f": eval}))
    with pytest.raises(PthError, match=r"refused the global '(__builtin__|builtins)\.eval'"):
        read_pth(path)
    # BUILD sets attributes: on an OrderedDict (a state dict's _metadata) with a dict state only
    ok = b"\x80\x02ccollections\nOrderedDict\n)R}X\x09\x00\x00\x00_metadataK\x01sb."
    assert read_pth(_write(tmp_path, zip_bytes_raw(ok)))._metadata == 1
    for state, target in [(b"(]t", "OrderedDict with a tuple"), (b"}", None)]:
        obj = b"ccollections\nOrderedDict\n)R" if target else b"]"
        with pytest.raises(PthError, match=f"refused BUILD on a {'list with a dict' if not target else target}"):
            read_pth(_write(tmp_path, zip_bytes_raw(b"\x80\x02" + obj + state + b"b.")))


def zip_bytes_raw(data_pkl: bytes, folder="archive", extra=None) -> bytes:
    """A zip archive around a hand-written data.pkl."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(f"{folder}/data.pkl", data_pkl)
        for name, data in (extra or {}).items():
            z.writestr(f"{folder}/{name}", data)
    return out.getvalue()


@pytest.mark.parametrize("data, message", [
    (b"", "an empty file"),
    (b"hello, not a weights file", "neither a zip archive .* nor torch's legacy pickle format"),
    (b"PK\x03\x04" + b"\x00" * 40, "a zip archive that cannot be opened"),
    (b"\x80\x02K\x05.", "a pickle that is not a torch file"),
    (b"x" * 257 + b"ustar\x00" + b"\x00" * 300, "torch's tar format"),
])
def test_not_a_torch_file(tmp_path, data, message):
    with pytest.raises(PthError, match=r"w\.pth: " + message):
        load_pth(_write(tmp_path, data))


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated(tmp_path, fmt):
    data = FORMATS[fmt](_every_dtype()[0])
    for cut in (len(data) - 1, len(data) - 9, len(data) // 2, 10):
        with pytest.raises(PthError, match=r"w\.pth: "):
            load_pth(_write(tmp_path, data[:cut]))


@pytest.mark.parametrize("offset, size, stride, message", [
    (5, (2,), (1,), r"offset 5, size \(2,\), stride \(1,\) reach element 6; storage '0' holds 6"),
    (0, (2, 3), (3, 2), r"offset 0, size \(2, 3\), stride \(3, 2\) reach element 7; storage '0' holds 6"),
    (7, (0,), (1,), r"offset 7, size \(0,\), stride \(1,\) reach element 7"),
    (-1, (1,), (1,), "offset must be an int >= 0"),
    (0, (2,), (1, 1), r"size \(2,\) and stride \(1, 1\) differ in length"),
    (0, (2,), (-1,), "stride must hold ints >= 0"),
    (0, (2.0,), (1,), "size must hold ints >= 0"),
])
@pytest.mark.parametrize("fmt", FORMATS)
def test_bad_views(tmp_path, fmt, offset, size, stride, message):
    state = {"w": FakeTensor(FakeStorage(np.arange(6, dtype=np.float32)), offset, size, stride)}
    if fmt == "legacy":
        message = message.replace("storage '0'", "storage '94000000000000'")
    with pytest.raises(PthError, match=r"w\.pth: tensor 0: bad view: " + message):
        load_pth(_write(tmp_path, FORMATS[fmt](state)))


def test_overlapping_views_are_capped(tmp_path):
    state = {"w": FakeTensor(FakeStorage(np.ones(1, np.float32)), 0, (10 ** 6, 10 ** 6), (0, 0))}  # expand
    path = _write(tmp_path, zip_bytes(state))
    with pytest.raises(PthError, match="would take more than .* bytes .*max_bytes"):
        load_pth(path)
    small = {"w": FakeTensor(FakeStorage(np.ones(1, np.float32)), 0, (3, 2), (0, 0))}
    np.testing.assert_array_equal(load_pth(_write(tmp_path, zip_bytes(small)), max_bytes=24)["w"], np.ones((3, 2)))


def test_zip_records_that_do_not_fit(tmp_path):
    good = zip_bytes({"w": tensor(np.arange(4, dtype=np.float32))})
    names = zipfile.ZipFile(_write(tmp_path, good)).namelist()
    assert names == ["archive/data.pkl", "archive/byteorder", "archive/data/0", "archive/version"]
    z = zipfile.ZipFile(_write(tmp_path, good))
    pkl = z.read("archive/data.pkl")
    # the storage record is shorter than its storage id says
    with pytest.raises(PthError, match=r"archive/data/0 holds 12 bytes, its storage id says 16"):
        load_pth(_write(tmp_path, zip_bytes_raw(pkl, extra={"data/0": b"\x00" * 12})))
    # no record at all
    with pytest.raises(PthError, match=r"refers to storage '0'; the archive has no archive/data/0"):
        load_pth(_write(tmp_path, zip_bytes_raw(pkl)))
    # no data.pkl
    with pytest.raises(PthError, match=r"without x/data\.pkl"):
        load_pth(_write(tmp_path, zip_bytes_raw(b"", folder="x", extra={}).replace(b"x/data.pkl", b"x/code.pkl")))
    # a compressed record
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zz:
        zz.writestr("archive/data.pkl", pkl)
    with pytest.raises(PthError, match=r"archive/data\.pkl is compressed"):
        load_pth(_write(tmp_path, out.getvalue()))
    # a flipped byte in a storage: the CRC catches it
    data = bytearray(good)
    at = data.index(np.arange(4, dtype=np.float32).tobytes())
    data[at + 5] ^= 1
    with pytest.raises(PthError, match="archive/data/0 cannot be read"):
        load_pth(_write(tmp_path, bytes(data)))
    with pytest.raises(PthError, match="byteorder: expected 'little' or 'big'"):
        load_pth(_write(tmp_path, zip_bytes_raw(pkl, extra={"byteorder": b"middle", "data/0": b"\x00" * 16})))


def test_bad_persistent_ids(tmp_path):
    with fake_torch_modules() as torch:
        pkl = pickle.dumps(torch.FloatStorage, protocol=2)[2:-1]  # 'ctorch\nFloatStorage\n' + BINPUT
    for pid, message in [
        (b"(X\x07\x00\x00\x00storage" + pkl + b"X\x01\x00\x00\x000K\x04t", "expected a persistent id"),
        (b"(X\x07\x00\x00\x00storage" + pkl + b"K\x00X\x03\x00\x00\x00cpuK\x04t", "bad storage id"),
        (b"X\x01\x00\x00\x000", "expected a persistent id"),
    ]:
        data = b"\x80\x02" + pid + b"Q."
        with pytest.raises(PthError, match=message):
            load_pth(_write(tmp_path, zip_bytes_raw(data, extra={"data/0": b"\x00" * 16})))


def test_legacy_storages_that_do_not_fit(tmp_path):
    data = legacy_bytes({"w": tensor(np.arange(4, dtype=np.float32))})
    tail = struct.pack("<q", 4) + np.arange(4, dtype=np.float32).tobytes()
    assert data.endswith(tail)
    head = data[:-len(tail)]
    with pytest.raises(PthError, match="the file holds 5 elements, its storage id says 4"):
        load_pth(_write(tmp_path, head + struct.pack("<q", 5) + tail[8:]))
    with pytest.raises(PthError, match=r"truncated: storage '94000000000000' needs bytes"):
        load_pth(_write(tmp_path, data[:-1]))
    with pytest.raises(PthError, match=r"truncated: storage '94000000000000' should start"):
        load_pth(_write(tmp_path, head))


def test_load_pth_wants_a_mapping(tmp_path):
    path = _write(tmp_path, zip_bytes([tensor(np.ones(2, np.float32))]))
    with pytest.raises(PthError, match=r"w\.pth: holds a list, not a state dict.*read_pth"):
        load_pth(path)
    assert isinstance(read_pth(path), list)
    with pytest.raises(FileNotFoundError):
        load_pth(tmp_path / "missing.pth")
