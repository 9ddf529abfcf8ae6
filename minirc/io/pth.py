"""``load_pth`` / ``read_pth`` / ``save_pth``: torch ``.pth`` files as NumPy arrays, without torch.

The format is told by the first bytes: ``PK\\x03\\x04`` is torch's zip format
(:mod:`~minirc.io.zip_format`), ``\\x80`` (a pickle) the legacy one (:mod:`~minirc.io.legacy_format`).
Both unpickle with :mod:`~minirc.io.unpickler` (an exact allow-list of globals: loading never runs
code) and build tensors with :mod:`~minirc.io.tensors`. docs/io.md describes the formats.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from minirc.io.errors import PthError
from minirc.io.legacy_format import read_legacy
from minirc.io.pickle_writer import PickleWriter
from minirc.io.tensors import TensorBuilder
from minirc.io.unpickler import allowed_globals, unpickle
from minirc.io.zip_format import write_zip, read_zip

_SLACK_BYTES = 64 << 20  # max_bytes' default: 4x the file's size plus this much

# NumPy dtype -> the storage class torch pickles for it (save_pth writes these dtypes)
_STORAGE_NAMES = {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage", "int64": "LongStorage",
    "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage", "uint8": "ByteStorage",
    "bool": "BoolStorage", "complex64": "ComplexFloatStorage", "complex128": "ComplexDoubleStorage",
}


def read_pth(path, *, max_bytes: int | None = None):
    """The object a ``.pth`` file holds, every tensor as a NumPy array (no torch needed).

    Dicts, lists, tuples, numbers and strings come back as such; a state dict comes back as an
    ``OrderedDict``. ``max_bytes`` caps the total size of the arrays (default: 4x the file's size
    plus 64 MiB; only overlapping views, such as ``expand``'s, go past it). Raises
    :class:`~minirc.io.errors.PthError` (a ValueError) naming the file for anything that is not a
    well-formed torch file, and never runs code from the file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        buf = f.read()
    limit = 4 * len(buf) + _SLACK_BYTES if max_bytes is None else max_bytes
    try:
        return _read(buf, limit)
    except PthError as e:
        raise PthError(f"{path}: {e}") from None
    except Exception as e:  # noqa: BLE001 -- any failure deep in zipfile/pickle is a bad file
        raise PthError(f"{path}: not a well-formed torch file (truncated or corrupted?): "
                       f"{type(e).__name__}: {e}") from None


def load_pth(path, *, max_bytes: int | None = None) -> dict:
    """A ``.pth`` state dict as ``{name: np.ndarray}``, in the file's order, without torch.

    Reads both formats ``torch.save`` writes (zip since torch 1.6, the legacy pickle sequence
    before). Dtypes: float64/32/16, int64/32/16/8, uint8, bool, complex64/128 as themselves,
    bfloat16 widened to float32. Every array is its own C-contiguous, writeable copy. The file must
    hold a mapping of str to tensors (:func:`read_pth` returns anything else, e.g. a training
    checkpoint ``{"model": ..., "epoch": ...}``).
    """
    obj = read_pth(path, max_bytes=max_bytes)
    if not isinstance(obj, Mapping):
        raise PthError(f"{os.fspath(path)}: holds a {type(obj).__name__}, not a state dict (a mapping of names to "
                       f"tensors); read_pth returns it as it is")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, np.ndarray):
            raise PthError(f"{os.fspath(path)}: entry {key!r:.60} holds a {type(value).__name__}, not a tensor: "
                           f"not a flat state dict (read_pth returns the whole object, e.g. obj['model'])")
    return dict(obj)


def _read(buf: bytes, max_bytes: int):
    def load_pickle(data, persistent_load):
        builder = TensorBuilder(max_bytes)  # one per pass: the legacy format's first pass builds nothing
        return unpickle(data, allowed_globals(builder), persistent_load)

    if buf[:4] == b"PK\x03\x04":
        return read_zip(buf, load_pickle)
    if buf[:1] == b"\x80":
        return read_legacy(buf, load_pickle)
    if not buf:
        raise PthError("an empty file")
    if buf[257:262] == b"ustar":
        raise PthError("torch's tar format (torch before 0.4) is not supported: load it with torch and save again")
    raise PthError(f"neither a zip archive (torch.save since torch 1.6) nor torch's legacy pickle format: it "
                   f"starts with {buf[:8]!r}")


# ----- writing ----------------------------------------------------------------------------------

def save_pth(state_dict, path) -> None:
    """Write ``{name: array}`` as torch's zip format (what ``torch.save(state_dict, path)`` writes).

    ``torch.load(path, weights_only=True)`` reads it back as an ``OrderedDict`` of CPU tensors.
    Values: NumPy arrays (or anything ``np.asarray`` takes, minirc Tensors included) of float64/32/16,
    int64/32/16/8, uint8, bool or complex64/128. Arrays that are views of one C-contiguous base
    array (same dtype) share one storage in the file, with their offsets and strides, as torch
    saves views; any other array is written as its own contiguous storage. Storages are
    little-endian, every entry 64-byte aligned, timestamps fixed: the same state dict gives the same
    bytes.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
    storages, entries = {}, []
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state_dict: keys must be str, got {name!r:.60}")
        entries.append((name, _tensor_args(name, _as_array(name, value), storages)))
    records = [("data.pkl", PickleWriter().state_dict(entries)), (".format_version", b"1"),
               (".storage_alignment", b"64"), ("byteorder", b"little")]
    records += [(f"data/{key}", data) for key, _, data in storages.values()]
    records.append(("version", b"3\n"))
    with open(os.fspath(path), "wb") as f:
        write_zip(f, "archive", records)  # torch.save names the folder after the file; any name reads


def _as_array(name: str, value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy") and not isinstance(value, np.ndarray):  # a minirc Tensor
        value = value.numpy()
    array = np.asarray(value)
    if array.dtype.name not in _STORAGE_NAMES:
        raise TypeError(f"state_dict[{name!r}]: dtype {array.dtype} has no torch storage; expected one of "
                        f"{', '.join(_STORAGE_NAMES)}")
    return array


def _tensor_args(name: str, array: np.ndarray, storages: dict) -> tuple:
    """``(storage class, key, numel, offset, size, stride)`` for ``array``; adds its storage if new."""
    base, offset, stride = _view_of_base(array)
    if base is None:  # its own storage
        base, offset = np.array(array, order="C"), 0
        stride = tuple(int(np.prod(array.shape[i + 1:])) for i in range(array.ndim))  # C order, in elements
    if id(base) not in storages:  # the bases stay referenced in storages, so ids are not reused
        data = base.astype(base.dtype.newbyteorder("<"), copy=False).tobytes()
        storages[id(base)] = (str(len(storages)), base, data)
    key = storages[id(base)][0]
    return _STORAGE_NAMES[array.dtype.name], key, base.size, offset, array.shape, stride


def _view_of_base(array: np.ndarray):
    """``(base, offset, stride)`` in elements when ``array`` is (a view into) a C-contiguous base array."""
    base = array
    while isinstance(base.base, np.ndarray):
        base = base.base
    if base.dtype != array.dtype or not base.flags.c_contiguous:
        return None, 0, ()
    delta = array.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    size = array.itemsize
    if delta % size or any(s < 0 or s % size for s in array.strides):
        return None, 0, ()
    offset, stride = delta // size, tuple(s // size for s in array.strides)
    last = offset + sum((n - 1) * s for n, s in zip(array.shape, stride)) if array.size else offset
    if offset < 0 or last >= max(base.size, 1):
        return None, 0, ()
    return base, offset, stride
