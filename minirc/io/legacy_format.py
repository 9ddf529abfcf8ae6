"""torch's legacy format (``torch.save`` before torch 1.6, or ``_use_new_zipfile_serialization=False``).

Five pickles one after another, then the raw storages::

    MAGIC_NUMBER                     0x1950a86a20f9469cfc6c
    PROTOCOL_VERSION                 1001
    sys_info                         {'protocol_version', 'little_endian', 'type_sizes'}
    the object                       tensors point at storages by persistent id
    the storage keys                 a sorted list of str
    for each key: int64 numel (little-endian), then numel * itemsize raw bytes (little-endian)

A storage's persistent id is ``('storage', torch.FloatStorage, key, location, numel, view)``;
``view`` is None, or ``(view_key, offset, numel)`` for a storage that is a slice of another (written
by torch before 1.0). torch writes sizes and data little-endian whatever the machine
(``THPStorage_writeFileRaw``), so ``little_endian`` is not needed to read them.

The data of a storage comes after the object that uses it, so the object is read twice: the first
pass only collects the storage ids (tensors come out as None), the second builds the arrays.
"""
from __future__ import annotations

import io
import struct

from minirc.io.errors import PthError
from minirc.io.tensors import Storage, StorageType, itemsize
from minirc.io.unpickler import unpickle

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


def read_legacy(buf: bytes, load_pickle):
    """Read the legacy format in ``buf``; ``load_pickle(file, persistent_load)`` reads the object."""
    f = io.BytesIO(buf)
    if unpickle(f) != MAGIC_NUMBER:
        raise PthError("a pickle that is not a torch file (no torch magic number)")
    protocol = unpickle(f)
    if protocol != PROTOCOL_VERSION:
        raise PthError(f"torch legacy protocol version {protocol!r:.40}, expected {PROTOCOL_VERSION}")
    sys_info = unpickle(f)
    if not isinstance(sys_info, dict):
        raise PthError(f"torch legacy header: expected the sys_info dict, got {type(sys_info).__name__}")
    start = f.tell()
    declared = {}
    load_pickle(f, lambda pid: _declare(pid, declared))  # pass 1: which storages, of what size
    keys = unpickle(f)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise PthError(f"torch legacy format: expected the list of storage keys, got {type(keys).__name__}")
    storages = _read_storages(buf, f.tell(), keys, declared)
    views = {}
    f.seek(start)
    return load_pickle(f, lambda pid: _resolve(pid, storages, views))  # pass 2: the arrays


def _parse(pid):
    if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
        raise PthError(f"expected a storage persistent id ('storage', type, key, location, numel, view), got "
                       f"{pid!r:.100}")
    if len(pid) != 6:
        raise PthError(f"bad storage id {pid!r:.100}: expected 6 fields")
    _, storage_type, key, _location, numel, view = pid
    if isinstance(key, bytes):
        key = key.decode("ascii", "replace")
    if not isinstance(storage_type, StorageType) or not isinstance(key, str) or type(numel) is not int \
            or numel < 0:
        raise PthError(f"bad storage id {pid!r:.100}")
    if view is not None:
        if not (isinstance(view, tuple) and len(view) == 3 and isinstance(view[0], (str, bytes))
                and all(type(v) is int and v >= 0 for v in view[1:])):
            raise PthError(f"bad storage view {view!r:.100}: expected (key, offset, numel)")
    return storage_type.dtype, key, numel, view


def _declare(pid, declared: dict):
    dtype, key, numel, _ = _parse(pid)
    if declared.setdefault(key, (dtype, numel)) != (dtype, numel):
        raise PthError(f"storage {key!r} is named as {declared[key][1]} x {declared[key][0]} and as "
                       f"{numel} x {dtype}")
    return Storage(key, dtype, numel)  # no data yet: the tensors built on it come out as None


def _read_storages(buf: bytes, pos: int, keys: list, declared: dict) -> dict:
    missing = sorted(set(declared) - set(keys))
    if missing:
        raise PthError(f"storage {missing[0]!r} is used but not in the file's list of storage keys")
    storages = {}
    view = memoryview(buf)
    for key in keys:
        if key not in declared:
            raise PthError(f"storage key {key!r} is listed but no tensor uses it")
        dtype, numel = declared[key]
        if pos + 8 > len(buf):
            raise PthError(f"truncated: storage {key!r} should start at byte {pos}, the file has {len(buf)}")
        (count,) = struct.unpack_from("<q", buf, pos)
        if count != numel:
            raise PthError(f"storage {key!r}: the file holds {count} elements, its storage id says {numel}")
        nbytes = numel * itemsize(dtype)
        if pos + 8 + nbytes > len(buf):
            raise PthError(f"truncated: storage {key!r} needs bytes {pos + 8}..{pos + 8 + nbytes}, the file "
                           f"has {len(buf)}")
        storages[key] = Storage(key, dtype, numel, view[pos + 8:pos + 8 + nbytes])
        pos += 8 + nbytes
    return storages


def _resolve(pid, storages: dict, views: dict):
    dtype, key, numel, view = _parse(pid)
    storage = storages[key]
    if view is None:
        return storage
    view_key, offset, view_numel = view
    if view_key not in views:
        if offset + view_numel > storage.numel:
            raise PthError(f"bad storage view {view!r:.100}: elements {offset}..{offset + view_numel} of "
                           f"storage {key!r}, which holds {storage.numel}")
        size = itemsize(dtype)
        views[view_key] = Storage(str(view_key), dtype, view_numel,
                                  storage.data[offset * size:(offset + view_numel) * size])
    return views[view_key]
