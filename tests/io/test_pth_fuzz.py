"""Truncated and corrupted .pth files raise PthError (a ValueError): never another error, a crash or a hang."""
from collections import OrderedDict

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minirc.io import PthError, read_pth, save_pth
from pth_streams import FakeStorage, FakeTensor, legacy_bytes, tensor, zip_bytes


def _state():
    shared = FakeStorage(np.arange(12, dtype=np.float32))
    state = OrderedDict([("w", FakeTensor(shared, 0, (3, 4), (4, 1))), ("wt", FakeTensor(shared, 1, (4, 2), (1, 4))),
                         ("n", tensor(np.array(3, np.int64))), ("m", tensor(np.array([True, False])))])
    state._metadata = OrderedDict([("", {"version": 1})])
    return state


def _ours(tmp_path_factory):
    path = tmp_path_factory.mktemp("ours") / "ours.pth"
    save_pth({"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, np.int64)}, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return {"zip": zip_bytes(_state()), "legacy": legacy_bytes(_state()), "ours": _ours(tmp_path_factory)}


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "f.pth"


def _load(path, data):
    path.write_bytes(data)
    try:
        return read_pth(path, max_bytes=1 << 20)
    except PthError as e:
        assert str(e).startswith(str(path))  # every message names the file
        raise


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("fmt", ["zip", "legacy", "ours"])
@FUZZ
@given(cut=st.floats(0, 1, exclude_max=True))
def test_truncated_files_raise(files, scratch, fmt, cut):
    data = files[fmt]
    with pytest.raises(PthError):
        _load(scratch, data[:int(cut * len(data))])


@pytest.mark.parametrize("fmt", ["zip", "legacy", "ours"])
@FUZZ
@given(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4))
def test_corrupted_files_load_or_raise(files, scratch, fmt, flips):
    data = bytearray(files[fmt])
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    try:
        _load(scratch, bytes(data))  # a flip inside a legacy storage's bytes is just another value
    except PthError:
        pass


@FUZZ
@given(data=st.binary(max_size=300), head=st.sampled_from([b"", b"PK\x03\x04", b"\x80\x02", b"\x80\x04"]))
def test_random_bytes_raise(scratch, data, head):
    try:
        _load(scratch, head + data)
    except PthError:
        pass
