"""Which implementation of a kernel runs: ``"numpy"``, ``"cpu"`` or ``"cuda"``.

Every kernel in :mod:`minirc.ops` exists three times, side by side in one file:

* ``"numpy"`` -- the plain NumPy reference, written to be read; the spec the others are tested against;
* ``"cpu"``   -- a Numba ``@njit`` kernel (the default);
* ``"cuda"``  -- a Numba ``@cuda.jit`` kernel (a real GPU, or Numba's simulator when
  ``NUMBA_ENABLE_CUDASIM=1`` is set before Numba is imported).

Resolution order, first match wins:

1. the ``backend=`` argument of an op,
2. the innermost :func:`use_backend` context,
3. the environment variable ``MINIRC_BACKEND``,
4. the default, ``"cpu"``.

Asking for ``"cuda"`` where no GPU and no simulator is present raises :class:`RuntimeError`; minirc
never silently falls back to another backend. ``import minirc`` never touches the GPU: Numba's CUDA
module is imported on the first ``"cuda"`` request only.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading

BACKENDS = ("numpy", "cpu", "cuda")
DEFAULT_BACKEND = "cpu"
ENV_VAR = "MINIRC_BACKEND"

_local = threading.local()


def _stack() -> list:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _check_name(name, where: str) -> str:
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"{where}: expected one of {BACKENDS}, got {name!r}")
    return name


def get_backend(backend: str | None = None) -> str:
    """Return the backend name that an op called with ``backend=backend`` will use.

    Raises ``ValueError`` for an unknown name and ``RuntimeError`` for ``"cuda"`` without CUDA.
    """
    if backend is not None:
        name = _check_name(backend, "backend")
    elif _stack():
        name = _stack()[-1]
    elif os.environ.get(ENV_VAR):
        name = _check_name(os.environ[ENV_VAR], f"environment variable {ENV_VAR}")
    else:
        name = DEFAULT_BACKEND
    if name == "cuda":
        require_cuda()
    return name


@contextlib.contextmanager
def use_backend(name: str):
    """Run the enclosed block with ``name`` as the backend of every op that is not given one.

    >>> with use_backend("numpy"):
    ...     get_backend()
    'numpy'
    """
    _check_name(name, "use_backend(name)")
    if name == "cuda":
        require_cuda()
    _stack().append(name)
    try:
        yield name
    finally:
        _stack().pop()


@functools.lru_cache(maxsize=None)
def cuda_available() -> bool:
    """True when Numba can run CUDA kernels here: a working GPU, or the CUDA simulator."""
    try:
        from numba import cuda
    except Exception:  # numba-cuda missing or broken: no CUDA backend
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def cuda_simulated() -> bool:
    """True when CUDA kernels run in Numba's simulator (``NUMBA_ENABLE_CUDASIM=1``), not on a GPU."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def gpu_present() -> bool:
    """True only with a real GPU: what notebooks check before timing CUDA kernels."""
    return cuda_available() and not cuda_simulated()


def require_cuda() -> None:
    if not cuda_available():
        raise RuntimeError(
            "backend 'cuda' was requested but Numba finds no CUDA GPU here. Use backend='cpu' or "
            "'numpy', or set NUMBA_ENABLE_CUDASIM=1 before importing minirc to run the CUDA kernels "
            "in Numba's simulator (slow; tiny inputs only)."
        )
