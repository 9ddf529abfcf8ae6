"""save_pth: what load_pth reads back bit for bit, and the zip layout torch writes (no torch here)."""
import pickletools
import struct
import zipfile

import numpy as np
import pytest

from minirc.io import load_pth, read_pth, save_pth

DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool", "complex64",
          "complex128"]


def _values(dtype, shape, rng):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("complex"):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype(tmp_path, dtype, rng):
    state = {"a": _values(dtype, (3, 5), rng), "scalar": _values(dtype, (), rng), "empty": _values(dtype, (0, 2), rng)}
    path = tmp_path / "x.pth"
    save_pth(state, path)
    got = load_pth(path)
    assert list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        assert got[k].tobytes() == v.tobytes(), k  # bit for bit (NaN payloads, -0.0 included)


def test_views_share_one_storage(tmp_path, rng):
    base = rng.standard_normal((4, 6)).astype(np.float32)
    state = {"base": base, "t": base.T, "col": base[:, 2], "step": base[1::2, ::3], "row": base[3],
             "bcast": np.broadcast_to(base[0, :1], (3, 2)), "reversed": base[::-1], "other": np.arange(3)}
    path = tmp_path / "v.pth"
    save_pth(state, path)
    got = load_pth(path)
    for k, v in state.items():
        np.testing.assert_array_equal(got[k], v, err_msg=k)
    names = zipfile.ZipFile(path).namelist()
    # base and its views (the broadcast's stride 0 included) in data/0; the reversed view (negative
    # strides: a copy) and the int array apart
    assert [n for n in names if "/data/" in n] == [f"archive/data/{i}" for i in range(3)]
    pkl = zipfile.ZipFile(path).read("archive/data.pkl")
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pkl)]
    assert ops.count(("BINPERSID", None)) == len(state)
    assert ("GLOBAL", "torch._utils _rebuild_tensor_v2") in ops and ("GLOBAL", "torch LongStorage") in ops


def test_layout_as_torch_writes_it(tmp_path):
    path = tmp_path / "l.pth"
    save_pth({"w": np.ones((2, 3), np.float32), "b": np.zeros(5, np.float64)}, path)
    raw = path.read_bytes()
    archive = zipfile.ZipFile(path)
    assert archive.namelist() == ["archive/data.pkl", "archive/.format_version", "archive/.storage_alignment",
                                  "archive/byteorder", "archive/data/0", "archive/data/1", "archive/version"]
    assert archive.read("archive/byteorder") == b"little" and archive.read("archive/version") == b"3\n"
    for info in archive.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
        extra = raw[info.header_offset + 30 + name_len:info.header_offset + 30 + name_len + extra_len]
        assert extra[:2] == b"FB" and struct.unpack("<H", extra[2:4])[0] == extra_len - 4
        assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0, info.filename
    assert archive.read("archive/data/0") == np.ones(6, "<f4").tobytes()
    again = tmp_path / "again.pth"
    save_pth({"w": np.ones((2, 3), np.float32), "b": np.zeros(5, np.float64)}, again)
    assert again.read_bytes() == raw  # deterministic


def test_big_endian_input_is_written_little_endian(tmp_path):
    path = tmp_path / "be.pth"
    save_pth({"x": np.arange(4, dtype=">i4"), "y": np.array([1.5, -2], ">f8")}, path)
    assert zipfile.ZipFile(path).read("archive/data/0") == np.arange(4, dtype="<i4").tobytes()
    got = load_pth(path)
    np.testing.assert_array_equal(got["x"], [0, 1, 2, 3])
    np.testing.assert_array_equal(got["y"], [1.5, -2])


def test_minirc_state_dict_round_trip(tmp_path):
    from minirc.nn import BatchNorm2d, Conv2d, Sequential

    model = Sequential(Conv2d(3, 4, 3), BatchNorm2d(4))
    state = model.state_dict()
    save_pth(state, tmp_path / "m.pth")
    got = read_pth(tmp_path / "m.pth")
    assert list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v), k


def test_bad_state_dicts(tmp_path):
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        save_pth([np.ones(2)], tmp_path / "x.pth")
    with pytest.raises(TypeError, match="keys must be str"):
        save_pth({1: np.ones(2)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match=r"state_dict\['u'\]: dtype uint16 has no torch storage"):
        save_pth({"u": np.ones(2, np.uint16)}, tmp_path / "x.pth")
    with pytest.raises(TypeError, match=r"state_dict\['s'\]: dtype <U1"):
        save_pth({"s": np.array(["a"])}, tmp_path / "x.pth")
