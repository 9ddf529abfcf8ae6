"""The tape on Numba device arrays: the same graph, run with data on the (simulated) GPU, gives the
same values and gradients as on the host, and every intermediate stays a device array."""
import numpy as np
import pytest

import minirc
from minirc import Tensor
from minirc.cuda_utils import is_device_array, to_device, to_host

pytestmark = pytest.mark.cuda


def _run(fn, arrays, device):
    tensors = [Tensor(to_device(a) if device else a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    if device:
        assert is_device_array(out.data), "result left the device"
    out.backward(to_device(np.ones(out.shape, out.dtype)) if device else np.ones(out.shape, out.dtype))
    if device:
        assert all(is_device_array(t.grad) for t in tensors), "a gradient left the device"
    return to_host(out.data), [to_host(t.grad) for t in tensors]


GRAPHS = {
    "broadcast_arith": lambda a, b: (a * b[:1] + b) / (a * a + 1.0) - a,
    "exp_log_pow": lambda a, b: (a * a + 1.0).log() + (b * 0.1).exp() + a ** 2,
    "reductions": lambda a, b: (a * b).sum(axis=1, keepdims=True) + a.mean(axis=0),
    "full_sum": lambda a, b: (a * b).sum(),
    "shape_ops": lambda a, b: a.reshape(4, 3).transpose(1, 0) * b.T.reshape(3, 4),
    "gather_repeated": lambda a, b: a[np.array([0, 0, 2])] * b[np.array([1, 1, 1])],
    "slices": lambda a, b: a[:, 1:] * b[::2, :2].sum(),
    "cat_stack": lambda a, b: minirc.stack([minirc.cat([a, b], axis=1), minirc.cat([b, a], axis=1)], axis=1),
}


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_device_graph_matches_host(name, rng):
    a = rng.standard_normal((3, 4)).astype(np.float32)
    b = rng.standard_normal((3, 4)).astype(np.float32)
    host_out, host_grads = _run(GRAPHS[name], [a, b], device=False)
    dev_out, dev_grads = _run(GRAPHS[name], [a, b], device=True)
    np.testing.assert_allclose(dev_out, host_out, rtol=1e-5, atol=1e-6)
    for g_dev, g_host in zip(dev_grads, host_grads):
        np.testing.assert_allclose(g_dev, g_host, rtol=1e-5, atol=1e-6)


def test_device_gather_backward_is_deterministic(rng):
    a = rng.standard_normal(5).astype(np.float32)
    idx = rng.integers(0, 5, size=40)
    grads = []
    for _ in range(2):
        t = Tensor(to_device(a), requires_grad=True)
        t[idx].sum().backward()
        grads.append(to_host(t.grad))
    np.testing.assert_array_equal(grads[0], grads[1])
    np.testing.assert_allclose(grads[0], np.bincount(idx, minlength=5))
