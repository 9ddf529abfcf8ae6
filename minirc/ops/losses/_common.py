"""What the three loss files share: argument checks, and the flat layout their kernels work on.

Every elementwise loss kernel sees its arrays flattened (one compiled specialisation per dtype, any
shape). ``grad_out`` may hold one value per element (or row), or a single value that every element
reads: the kernels index it as ``g[i * g_step]`` with ``g_step`` 1 or 0 (:func:`grad_step`).
"""
from __future__ import annotations

import numpy as np

from minirc import _checks
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, to_device


def backend_for(backend, *arrays):
    """The backend name, refusing CUDA device arrays on a host backend."""
    name = get_backend(backend)
    if name != "cuda" and any(is_device_array(a) for a in arrays):
        raise TypeError(f"CUDA device arrays need backend='cuda', got backend={name!r}")
    return name


def check_input_target(x, t):
    """input (float, any shape) and target of the same shape, cast to input's dtype (host targets only)."""
    x = _checks.as_array(x, "input", float_only=True)
    t = _checks.as_array(t, "target")
    if tuple(t.shape) != tuple(x.shape):
        raise ValueError(f"target: expected the shape of input {tuple(x.shape)}, got {tuple(t.shape)}")
    if t.dtype != x.dtype:
        if is_device_array(t):
            raise TypeError(f"target: expected the dtype of input ({x.dtype}), got {t.dtype}")
        t = t.astype(x.dtype)
    return x, t


def check_grad_out(g, n, rows_name, x_dtype):
    """grad_out with ``n`` values (``rows_name`` says what they are) or a single one, in x's dtype."""
    g = _checks.as_array(g, "grad_out", float_only=True)
    size = int(np.prod(g.shape))
    if size not in (1, n):
        raise ValueError(f"grad_out: expected {n} values ({rows_name}) or a single value, got shape {tuple(g.shape)}")
    if g.dtype != x_dtype and not is_device_array(g):
        g = g.astype(x_dtype)
    return g


# ---- host (Numba CPU) layout ------------------------------------------------------------------------
def flat(a):
    return np.ascontiguousarray(a).reshape(-1)


def grad_step(g, n):
    """0 when a single grad_out value serves all ``n`` elements, else 1."""
    return 0 if int(np.prod(g.shape)) == 1 and n != 1 else 1


# ---- device (Numba CUDA) layout ---------------------------------------------------------------------
def launch(kernel, n, *args):
    """``kernel`` with one thread per each of ``n`` items; nothing for n == 0 (an empty grid is invalid)."""
    if n > 0:
        kernel[blocks_for(n), 256](*args)


def device_flat(a):
    return to_device(a).reshape(int(np.prod(a.shape)))
