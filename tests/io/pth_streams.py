"""Write torch-format files in the tests without torch, with Python's own pickler (as torch.save does).

torch.save is ``pickle.Pickler(f, protocol=2)`` with a ``persistent_id`` hook; what it pickles are
globals (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``) plus tuples, ints and strings.
Here stand-in modules named ``torch`` and ``torch._utils`` are put in ``sys.modules`` only while
pickling (and the originals put back), so the pickler writes exactly those global names.
"""
from __future__ import annotations

import contextlib
import io
import pickle
import struct
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np

STORAGE_NAMES = {"float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage",
                 "bfloat16": "BFloat16Storage", "int64": "LongStorage", "int32": "IntStorage",
                 "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage", "bool": "BoolStorage",
                 "complex64": "ComplexFloatStorage", "complex128": "ComplexDoubleStorage"}
MAGIC_NUMBER, PROTOCOL_VERSION = 0x1950A86A20F9469CFC6C, 1001


def _fake_torch():
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")
    tensor_mod = types.ModuleType("torch._tensor")
    storage_mod = types.ModuleType("torch.storage")
    torch._utils, torch._tensor, torch.storage = utils, tensor_mod, storage_mod
    for name in STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    storage_mod.UntypedStorage = type("UntypedStorage", (), {"__module__": "torch.storage"})
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"):
        fn = types.FunctionType((lambda *a: None).__code__, {}, name)
        fn.__module__, fn.__qualname__ = "torch._utils", name
        setattr(utils, name, fn)
    fn = types.FunctionType((lambda *a: None).__code__, {}, "_rebuild_from_type_v2")
    fn.__module__, fn.__qualname__ = "torch._tensor", "_rebuild_from_type_v2"
    tensor_mod._rebuild_from_type_v2 = fn
    torch.Tensor = type("Tensor", (), {"__module__": "torch"})
    return {"torch": torch, "torch._utils": utils, "torch._tensor": tensor_mod, "torch.storage": storage_mod}


@contextlib.contextmanager
def fake_torch_modules():
    """``sys.modules['torch']`` etc. are stand-ins inside the block; the originals come back after."""
    fakes = _fake_torch()
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        yield fakes["torch"]
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class FakeStorage:
    """A flat storage: ``values`` (1-D array; bfloat16 given as its uint16 bit patterns)."""

    def __init__(self, values, dtype: str | None = None, key: str | None = None):
        self.values = np.ascontiguousarray(values)
        self.dtype = dtype or self.values.dtype.name
        self.key = key

    def data(self, byteorder="little") -> bytes:
        order = "<" if byteorder == "little" else ">"
        return self.values.astype(self.values.dtype.newbyteorder(order)).tobytes()


class FakeTensor:
    """Pickles as ``rebuild(storage, offset, size, stride, ...)``; ``rebuild`` names torch's function."""

    def __init__(self, storage, offset, size, stride, rebuild="_rebuild_tensor_v2", extra=()):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)
        self.rebuild, self.extra = rebuild, extra

    def __reduce_ex__(self, protocol):
        torch = sys.modules["torch"]
        fn = getattr(torch._utils, self.rebuild)
        if self.rebuild == "_rebuild_tensor":
            return fn, (self.storage, self.offset, self.size, self.stride)
        return fn, (self.storage, self.offset, self.size, self.stride, False, OrderedDict(), *self.extra)


class FakeParameter:
    def __init__(self, tensor):
        self.tensor = tensor

    def __reduce_ex__(self, protocol):
        return sys.modules["torch"]._utils._rebuild_parameter, (self.tensor, True, OrderedDict())


def tensor(values, dtype=None) -> FakeTensor:
    """A contiguous tensor over its own storage."""
    values = np.asarray(values)
    shape = values.shape
    strides = tuple(int(np.prod(shape[i + 1:])) for i in range(len(shape)))
    return FakeTensor(FakeStorage(values.reshape(-1), dtype), 0, shape, strides)


def _pickle(obj, persistent_id, protocol, file=None):
    buf = file or io.BytesIO()
    with fake_torch_modules():
        pickler = pickle.Pickler(buf, protocol=protocol)
        pickler.persistent_id = persistent_id
        pickler.dump(obj)
    return buf if file else buf.getvalue()


def zip_bytes(obj, folder="archive", byteorder="little", protocol=2, write_byteorder=True, records=None) -> bytes:
    """The bytes of ``torch.save(obj)`` in the zip format (keys '0', '1', ... in order of use)."""
    storages = {}

    def persistent_id(o):
        if not isinstance(o, FakeStorage):
            return None
        if id(o) not in storages:
            storages[id(o)] = (o.key or str(len(storages)), o)
        key = storages[id(o)][0]
        torch = sys.modules["torch"]
        if o.dtype == "untyped":
            return ("storage", torch.storage.UntypedStorage, key, "cpu", len(o.data()))
        return ("storage", getattr(torch, STORAGE_NAMES[o.dtype]), key, "cpu", o.values.size)

    data_pkl = _pickle(obj, persistent_id, protocol)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr(f"{folder}/data.pkl", data_pkl)
        if write_byteorder:
            z.writestr(f"{folder}/byteorder", byteorder)
        for key, storage in storages.values():
            z.writestr(f"{folder}/data/{key}", storage.data(byteorder))
        z.writestr(f"{folder}/version", "3\n")
        for name, data in (records or {}).items():
            z.writestr(f"{folder}/{name}", data)
    return out.getvalue()


def legacy_bytes(obj, protocol=2, views=None) -> bytes:
    """The bytes of ``torch.save(obj, _use_new_zipfile_serialization=False)``.

    Keys are large decimal numbers (torch uses the storage's address). ``views`` maps a FakeStorage
    that is a slice of another to ``(root FakeStorage, offset)`` (torch before 1.0 wrote these).
    """
    views = views or {}
    storages = {}

    def key_of(s):
        return storages.setdefault(id(s), (str(94000000000000 + 64 * len(storages)), s))[0]

    def persistent_id(o):
        if not isinstance(o, FakeStorage):
            return None
        torch = sys.modules["torch"]
        if id(o) in views:
            root, offset = views[id(o)]
            view = (str(95000000000000 + 64 * list(views).index(id(o))), offset, o.values.size)
            return ("storage", getattr(torch, STORAGE_NAMES[root.dtype]), key_of(root), "cpu", root.values.size, view)
        return ("storage", getattr(torch, STORAGE_NAMES[o.dtype]), key_of(o), "cpu", o.values.size, None)

    out = io.BytesIO()
    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, sys_info):
        pickle.dump(header, out, protocol=protocol)
    _pickle(obj, persistent_id, protocol, out)
    keys = sorted(k for k, _ in storages.values())
    pickle.dump(keys, out, protocol=protocol)
    by_key = dict(storages.values())
    for key in keys:
        out.write(struct.pack("<q", by_key[key].values.size) + by_key[key].data())
    return out.getvalue()


def bfloat16_bits(values) -> np.ndarray:
    """The bfloat16 bit patterns of float32 ``values`` that bfloat16 holds exactly."""
    bits = np.asarray(values, np.float32).view(np.uint32)
    assert np.all((bits & 0xFFFF) == 0), "values must be exact in bfloat16"
    return (bits >> 16).astype(np.uint16)
