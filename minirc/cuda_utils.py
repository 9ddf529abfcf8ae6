"""Small helpers for the ``"cuda"`` backend: device arrays, copies at the edges, launch sizes.

On the ``"cuda"`` backend, ops accept NumPy arrays or Numba device arrays. A NumPy input is copied to
the device and the result copied back (a convenience for tests and notebooks); a device-array input
gives a device-array result, so a chain of ops keeps its data on the GPU.
"""
from __future__ import annotations

import numpy as np

THREADS_PER_BLOCK = 256


def cuda():
    """Numba's CUDA module (or its simulator), imported on first use so ``import minirc`` stays light."""
    from minirc.backend import require_cuda

    require_cuda()
    from numba import cuda as _cuda

    return _cuda


def is_device_array(a) -> bool:
    """True for a Numba device array (real or simulated) without importing numba.cuda."""
    return hasattr(a, "copy_to_host") and hasattr(a, "shape")


def array_module(*arrays):
    """``numpy`` for host arrays, :data:`minirc.cuda_array.device_numpy` if any array lives on the GPU."""
    if any(is_device_array(a) for a in arrays):
        from minirc.cuda_array import device_numpy

        return device_numpy
    return np


def c_order(a) -> np.ndarray:
    """A C-contiguous host array; unlike np.ascontiguousarray it keeps 0-d arrays 0-d."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def to_device(a):
    """Device copy of a host array; device arrays pass through unchanged."""
    if is_device_array(a):
        return a
    return cuda().to_device(c_order(a))


def device_zeros(shape, dtype):
    """A zero-filled device array, allocated and filled on the device (no host buffer is copied over)."""
    cuda()  # raises the clear "no CUDA" error first
    from minirc.cuda_array import zeros

    return zeros((int(shape),) if np.ndim(shape) == 0 else tuple(int(n) for n in shape), dtype)


def zeros_like(a):
    """Zeros of ``a``'s shape and dtype where ``a`` lives: a device array (filled on the device) or NumPy."""
    if is_device_array(a):
        return device_zeros(tuple(a.shape), a.dtype)
    return np.zeros_like(a)


def copy_into(dst, values) -> None:
    """Overwrite ``dst`` in place with ``values`` (cast to dst's dtype), wherever ``dst`` lives: a
    host array, or a device array (one host-to-device copy). Keeps every reference to ``dst`` valid."""
    if is_device_array(dst):
        dst.copy_to_device(np.ascontiguousarray(values, dtype=dst.dtype))
    else:
        np.copyto(dst, values, casting="unsafe")


def to_host(a):
    """NumPy copy of a device array; NumPy arrays pass through unchanged."""
    if is_device_array(a):
        return a.copy_to_host()
    return np.asarray(a)


def like_input(result, *inputs):
    """Return ``result`` (a device array) on the host unless one of the inputs was on the device."""
    if any(is_device_array(x) for x in inputs):
        return result
    return to_host(result)


def blocks_for(n: int, threads: int = THREADS_PER_BLOCK) -> int:
    """Number of blocks so that ``blocks * threads >= n`` (at least one: launches of 0 are invalid)."""
    return max(1, (int(n) + threads - 1) // threads)
