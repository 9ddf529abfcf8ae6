"""Tools the test suite, the notebooks and the benchmarks use: finite differences, backend
agreement, and the wall time of repeated calls."""
from __future__ import annotations

import time

import numpy as np

from minirc.autograd import Tensor
from minirc.cuda_utils import to_host


def numerical_grad(f, arrays, index: int, eps: float = 1e-6) -> np.ndarray:
    """Central-difference gradient of the scalar ``f(*arrays)`` w.r.t. ``arrays[index]`` (float64)."""
    x = arrays[index]
    grad = np.zeros_like(x, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = float(f(*arrays))
        flat[i] = old - eps
        lo = float(f(*arrays))
        flat[i] = old
        grad.reshape(-1)[i] = (hi - lo) / (2 * eps)
    return grad


def gradcheck(fn, inputs, wrt=None, eps: float = 1e-6, atol: float = 1e-6, rtol: float = 1e-5, seed: int = 0):
    """Check the tape's gradients of ``fn`` against central differences, in float64.

    fn: takes Tensors (one per entry of ``inputs``) and returns a Tensor;
    inputs: float64 arrays; wrt: indices of the inputs to check (default: all).
    The output is reduced to a scalar with fixed random weights, so every output element's
    gradient path is exercised. Raises ``AssertionError`` with the worst element on mismatch.
    """
    inputs = [np.array(a, dtype=np.float64) for a in inputs]
    wrt = range(len(inputs)) if wrt is None else wrt
    out = fn(*[Tensor(a) for a in inputs])
    weights = np.random.default_rng(seed).standard_normal(out.shape)

    def scalar(*arrays):
        return float(np.sum(to_host(fn(*[Tensor(a) for a in arrays]).data) * weights))

    tensors = [Tensor(a.copy(), requires_grad=(i in wrt)) for i, a in enumerate(inputs)]
    out = fn(*tensors)
    out.backward(weights.astype(out.dtype))
    for i in wrt:
        analytic = np.zeros_like(inputs[i]) if tensors[i].grad is None else to_host(tensors[i].grad)
        numeric = numerical_grad(scalar, inputs, i, eps)
        if not np.allclose(analytic, numeric, atol=atol, rtol=rtol):
            err = np.abs(analytic - numeric)
            worst = np.unravel_index(np.argmax(err), err.shape)
            raise AssertionError(f"gradcheck failed for input {i} at {worst}: analytic {analytic[worst]:.8g}, "
                                 f"numeric {numeric[worst]:.8g} (max abs error {err.max():.3g})")
    return True


def assert_backends_agree(fn, backends=("numpy", "cpu", "cuda"), rtol: float = 1e-5, atol: float = 1e-6, **kwargs):
    """Run ``fn(backend=b, **kwargs)`` for each backend and assert every result equals the NumPy one.

    ``fn`` may return an array or a tuple of arrays. Returns the reference result.
    """
    def as_tuple(r):
        return tuple(to_host(x) for x in r) if isinstance(r, tuple) else (to_host(r),)

    reference = as_tuple(fn(backend=backends[0], **kwargs))
    for b in backends[1:]:
        got = as_tuple(fn(backend=b, **kwargs))
        assert len(got) == len(reference), f"backend {b}: {len(got)} outputs, reference has {len(reference)}"
        for k, (r, g) in enumerate(zip(reference, got)):
            assert r.shape == g.shape, f"backend {b}, output {k}: shape {g.shape}, reference {r.shape}"
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=f"backend {b}, output {k}")
    return reference if len(reference) > 1 else reference[0]


def call_times(fn, repeats: int) -> list:
    """Wall-clock seconds of ``repeats`` calls of ``fn()``, after one untimed call (it compiles the
    Numba kernels and warms caches and allocators). Take the min for "how fast can it go" on a
    quiet machine, the median on a shared one."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times
