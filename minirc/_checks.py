"""Argument checks shared by every public function.

Each raises ``TypeError`` or ``ValueError`` with a message that names the argument, says what was
expected and what was received, so bad input fails at the API boundary and never deep in a kernel.
"""
from __future__ import annotations

import numbers

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)

# Caps on sizes computed from user numbers (docs/conventions.md, "Limits"). Every size a kernel
# allocates or loops over is computed in Python ints and checked against these first, so that no
# int64 product can wrap inside a kernel and no MemoryError escapes from a size that could be checked.
MAX_ELEMENTS = 2**31 - 1  # elements of one array a kernel allocates (int32 flat indices stay valid)
MAX_INT_ARG = 2**31 - 1   # an int argument (kernel_size, stride, padding, output_size, ...)


def _describe(a) -> str:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return f"{type(a).__name__} of shape {tuple(a.shape)} and dtype {a.dtype}"
    return f"{type(a).__name__} {a!r}"[:120]


def as_array(a, name: str, ndim: int | None = None, last_dim: int | None = None,
             dtype=None, float_only: bool = False, allow_device: bool = True):
    """Return ``a`` as an array (NumPy, or a CUDA device array when ``allow_device``), checked.

    ndim: required number of dimensions; last_dim: required size of the last axis;
    dtype: convert to this dtype (after the checks); float_only: require float32/float64.
    """
    from minirc.cuda_utils import is_device_array

    if hasattr(a, "data") and type(a).__name__ == "Tensor":
        a = a.data
    if not (allow_device and is_device_array(a)):
        if isinstance(a, (str, bytes)) or a is None:
            raise TypeError(f"{name}: expected an array, got {_describe(a)}")
        a = np.asarray(a)
        if a.dtype == object:
            raise TypeError(f"{name}: expected a numeric array, got an object array")
    shape = tuple(a.shape)  # the CUDA simulator's shape objects take no negative indices
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got {_describe(a)}")
    if last_dim is not None and (not shape or shape[-1] != last_dim):
        raise ValueError(f"{name}: expected last dimension of size {last_dim}, got {_describe(a)}")
    if float_only and a.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {_describe(a)}")
    if dtype is not None and a.dtype != dtype and not is_device_array(a):
        a = a.astype(dtype)
    return a


def check_finite(a, name: str) -> None:
    """Raise ValueError when a host array holds NaN or infinity."""
    if isinstance(a, np.ndarray) and a.size and not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries in {_describe(a)}")


def pair(v, name: str, minimum: int = 0, maximum: int = MAX_INT_ARG) -> tuple[int, int]:
    """An int or a pair of ints (torch's ``_pair``) as a checked ``(h, w)`` tuple, minimum <= each <= maximum."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        out = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in v):
        out = (int(v[0]), int(v[1]))
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints, got {v!r}")
    if min(out) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {v!r}")
    if max(out) > maximum:
        raise ValueError(f"{name}: expected values <= {maximum} (the limit), got {v!r}")
    return out


def elements(shape, name: str, what: str, limit: int = MAX_ELEMENTS) -> int:
    """The element count of ``shape`` in Python ints; ValueError naming ``name`` when over ``limit``.

    what: the array that would be allocated, e.g. "the output (K, C, PH, PW)".
    """
    count = 1
    for s in shape:
        count *= int(s)
    if count > limit:
        raise ValueError(f"{name}: {what} of shape {tuple(int(s) for s in shape)} would hold {count} "
                         f"elements; the limit is {limit}")
    return count


def positive_int(v, name: str, minimum: int = 1) -> int:
    if not isinstance(v, numbers.Integral) or isinstance(v, bool):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    if v < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {v!r}")
    return int(v)


def number(v, name: str, low: float | None = None, high: float | None = None) -> float:
    if not isinstance(v, numbers.Real) or isinstance(v, bool):
        raise TypeError(f"{name}: expected a real number, got {v!r}")
    v = float(v)
    if np.isnan(v) or (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name}: expected a number in [{low}, {high}], got {v!r}")
    return v


def one_of(v, name: str, choices) -> str:
    if v not in choices:
        raise ValueError(f"{name}: expected one of {tuple(choices)}, got {v!r}")
    return v


def same_dtype(a, b, name_a: str, name_b: str) -> None:
    if a.dtype != b.dtype:
        raise TypeError(f"{name_b}: expected the dtype of {name_a} ({a.dtype}), got {b.dtype}")
