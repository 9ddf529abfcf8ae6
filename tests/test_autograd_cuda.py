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


def test_device_max_and_scalar_arithmetic_match_numpy(rng):
    from minirc import cuda_array

    a = rng.standard_normal((2, 3, 4)).astype(np.float32)
    d = to_device(a)
    for axis in (None, 0, 1, (0, 2)):
        np.testing.assert_array_equal(to_host(cuda_array.reduce_max(d, axis=axis, keepdims=True)),
                                      a.max(axis=axis, keepdims=True))
    with pytest.raises(ValueError, match="zero-size"):
        cuda_array.reduce_max(to_device(np.zeros((0, 2), np.float32)), axis=0)
    # a host scalar goes to the kernel by value, on either side
    np.testing.assert_array_equal(to_host(cuda_array.binary(cuda_array.SUB, 2.0, d)), np.float32(2.0) - a)
    np.testing.assert_array_equal(to_host(cuda_array.binary(cuda_array.DIV, d, np.float32(4.0))), a / np.float32(4))


def test_device_concatenate_and_split_along_every_axis(rng):
    from minirc import cuda_array

    for axis in (0, 1, 2):
        shapes = [tuple(n if d == axis else (2, 3, 2)[d] for d in range(3)) for n in (1, 0, 2)]
        parts = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        want = np.concatenate(parts, axis=axis)
        got = cuda_array.concatenate([to_device(p) for p in parts], axis=axis)
        np.testing.assert_array_equal(to_host(got), want)
        sizes = [p.shape[axis] for p in parts]
        for back, p in zip(cuda_array.split(got, sizes, axis=axis), parts):
            np.testing.assert_array_equal(to_host(back), p)


def test_constants_are_uploaded_once(rng):
    from minirc import cuda_array

    first = cuda_array.constant((3, 1, 4))
    assert cuda_array.constant(np.array([3, 1, 4])) is first
    np.testing.assert_array_equal(to_host(first), [3, 1, 4])
