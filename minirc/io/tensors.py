"""Storages and tensors of a ``.pth`` file as NumPy arrays: the stand-ins for torch's rebuild functions.

A tensor in a torch pickle is ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
requires_grad, backward_hooks[, metadata])``: a strided view (offset, size and stride in elements)
into a flat storage of raw bytes, the storage being a persistent id resolved by the container format
(:mod:`~minirc.io.zip_format`, :mod:`~minirc.io.legacy_format`). :class:`TensorBuilder` does what
those functions do, with NumPy, after checking that the view lies inside the storage.

Every tensor comes out as its own C-contiguous, writeable array in native byte order (torch's
views into one storage become copies); bfloat16 is widened to float32 (NumPy has no bfloat16),
bool is read from its bytes (0 is False, anything else True).
"""
from __future__ import annotations

import math

import numpy as np

from minirc.io.errors import PthError

# torch's typed storage classes (pickled as the globals torch.<Name>) -> the element type they hold
STORAGE_DTYPES = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64", "ComplexDoubleStorage": "complex128",
}
# torch dtypes (pickled as the globals torch.<name>; _rebuild_tensor_v3 passes one) -> NumPy's name
TORCH_DTYPES = ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
                "bool", "complex64", "complex128", "uint16", "uint32", "uint64")
_RAW_CODES = {"bfloat16": "u2", "bool": "u1"}  # read as bits, converted after the strided copy
MAX_DIMS = 64  # torch's own limit on tensor dimensions is far above any weight; this bounds the checks


class StorageType:
    """What a ``torch.FloatStorage``-like global unpickles to: the element type it names."""
    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: str):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f"torch.{self.name}"


class TorchDtype:
    """What a ``torch.float32``-like global unpickles to."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return f"torch.{self.name}"


class TensorType:
    """What ``torch.Tensor`` / ``torch.nn.parameter.Parameter`` unpickle to (only as a type tag)."""
    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def __repr__(self):
        return self.name


def raw_dtype(dtype: str, byteorder: str = "little") -> np.dtype:
    """The NumPy dtype that reads one element of ``dtype`` from a storage's bytes."""
    base = _RAW_CODES[dtype] if dtype in _RAW_CODES else np.dtype(dtype).str[1:]
    return np.dtype(("<" if byteorder == "little" else ">") + base)


def itemsize(dtype: str) -> int:
    return raw_dtype(dtype).itemsize


class Storage:
    """One flat storage: ``numel`` elements of ``dtype`` in ``data`` (bytes; None while only declared)."""
    __slots__ = ("key", "dtype", "numel", "data", "byteorder")

    def __init__(self, key: str, dtype: str, numel: int, data=None, byteorder: str = "little"):
        self.key, self.dtype, self.numel, self.data, self.byteorder = key, dtype, numel, data, byteorder

    @property
    def nbytes(self) -> int:
        return self.numel * itemsize(self.dtype)

    def __repr__(self):
        return f"<storage {self.key!r}: {self.numel} x {self.dtype}>"


def _check_ints(value, what: str, where: str) -> tuple:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS:
        raise PthError(f"{where}: bad view: {what} must be a tuple of at most {MAX_DIMS} ints, got {value!r:.80}")
    for v in value:
        if type(v) is not int or v < 0:
            raise PthError(f"{where}: bad view: {what} must hold ints >= 0, got {value!r:.80}")
    return tuple(value)


class TensorBuilder:
    """The rebuild functions the unpickler may call, checking every view against its storage.

    ``max_bytes`` caps the bytes of all the arrays built together: overlapping views (stride 0, as
    ``expand`` makes) could otherwise turn a small file into an arbitrarily large allocation.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.total_bytes = 0
        self.count = 0

    # ----- the names torch pickles ------------------------------------------------------------
    def rebuild_tensor(self, storage, storage_offset, size, stride):
        """``torch._utils._rebuild_tensor``: the strided view as a new array."""
        return self.build(storage, storage_offset, size, stride)

    def rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                          backward_hooks=None, metadata=None):
        """``torch._utils._rebuild_tensor_v2``: gradients flags, hooks and metadata are not kept."""
        return self.build(storage, storage_offset, size, stride)

    def rebuild_tensor_v3(self, storage, storage_offset, size, stride, requires_grad, backward_hooks,
                          dtype, metadata=None):
        """``torch._utils._rebuild_tensor_v3``: an untyped (byte) storage read as ``dtype``."""
        if not isinstance(dtype, TorchDtype):
            raise PthError(f"tensor {self.count}: _rebuild_tensor_v3 expects a torch dtype, got {dtype!r:.80}")
        return self.build(storage, storage_offset, size, stride, dtype.name)

    def rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None):
        """``torch._utils._rebuild_parameter[_with_state]``: a Parameter is its data."""
        if data is not None and not isinstance(data, np.ndarray):
            raise PthError(f"tensor {self.count}: _rebuild_parameter expects a tensor, got {type(data).__name__}")
        return data

    def rebuild_from_type_v2(self, func, new_type, args, state):
        """``torch._tensor._rebuild_from_type_v2``: a tensor (sub)class around one of the rebuilds."""
        allowed = (self.rebuild_tensor, self.rebuild_tensor_v2, self.rebuild_tensor_v3, self.rebuild_parameter)
        if func not in allowed or not isinstance(new_type, TensorType) or not isinstance(args, tuple):
            raise PthError(f"tensor {self.count}: _rebuild_from_type_v2 expects a tensor rebuild, "
                           f"got {func!r:.60} for {new_type!r:.60}")
        return func(*args)

    # ----- the view ---------------------------------------------------------------------------
    def build(self, storage, offset, size, stride, dtype: str | None = None):
        """The tensor ``storage[offset + sum(i_k * stride_k)]`` of shape ``size``, checked, as an array."""
        where = f"tensor {self.count}"
        self.count += 1
        if not isinstance(storage, Storage):
            raise PthError(f"{where}: expected a storage (a persistent id), got {type(storage).__name__}")
        dtype = dtype or storage.dtype
        size, stride = _check_ints(size, "size", where), _check_ints(stride, "stride", where)
        if type(offset) is not int or offset < 0:
            raise PthError(f"{where}: bad view: offset must be an int >= 0, got {offset!r:.80}")
        if len(size) != len(stride):
            raise PthError(f"{where}: bad view: size {size} and stride {stride} differ in length")
        available = storage.nbytes // itemsize(dtype)
        numel = math.prod(size)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
        if offset > available or last >= available:
            raise PthError(f"{where}: bad view: offset {offset}, size {size}, stride {stride} reach element "
                           f"{max(offset, last)}; storage {storage.key!r} holds {available} {dtype} elements")
        out_dtype = np.dtype("float32" if dtype == "bfloat16" else dtype)
        self.total_bytes += numel * out_dtype.itemsize
        if self.total_bytes > self.max_bytes:
            raise PthError(f"{where}: the tensors would take more than {self.max_bytes} bytes (views of "
                           f"size {size} with stride {stride}: overlapping views such as expand's); pass a "
                           f"larger max_bytes to read them")
        if storage.data is None:  # only declared so far (the legacy format's first pass)
            return None
        if numel == 0:
            return np.zeros(size, out_dtype)
        return _strided_copy(storage, offset, size, stride, dtype)


def _strided_copy(storage: Storage, offset: int, size: tuple, stride: tuple, dtype: str) -> np.ndarray:
    raw = raw_dtype(dtype, storage.byteorder)
    flat = np.frombuffer(storage.data, dtype=raw, count=storage.nbytes // raw.itemsize)
    view = np.lib.stride_tricks.as_strided(flat[offset:], size, [s * raw.itemsize for s in stride],
                                           writeable=False)
    if dtype == "bfloat16":  # the upper half of a float32: shift the 16 bits into place
        bits = view.astype(np.uint32, order="C")
        bits <<= 16  # in place: a 0-d array stays an array
        return bits.view(np.float32)
    if dtype == "bool":
        return np.array(view != 0, order="C")
    return np.array(view, dtype=np.dtype(dtype).newbyteorder("="), order="C")
