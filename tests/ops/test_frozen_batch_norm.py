import numpy as np
import pytest

from minirc import Tensor, use_backend
from minirc.nn.functional.norm import frozen_batch_norm2d as F_fbn
from minirc.ops.frozen_batch_norm import frozen_batch_norm2d, frozen_batch_norm2d_backward, scale_and_shift
from minirc.testing import assert_backends_agree, gradcheck


def buffers(c, rng, dtype=np.float32):
    return [rng.uniform(0.5, 1.5, c).astype(dtype) for _ in range(4)]  # weight, bias, mean, var


def test_golden(backend):
    # channel 0: var 4, eps 0 -> scale 2 * 1/2 = 1, shift 3 - 1 * 1 = 2; channel 1: identity
    w = np.array([2.0, 1.0], np.float32)
    b = np.array([3.0, 0.0], np.float32)
    mean = np.array([1.0, 0.0], np.float32)
    var = np.array([4.0, 1.0], np.float32)
    x = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    y = frozen_batch_norm2d(x, w, b, mean, var, eps=0.0, backend=backend)
    np.testing.assert_array_equal(y[0, 0], x[0, 0] + 2)
    np.testing.assert_array_equal(y[0, 1], x[0, 1])
    g = frozen_batch_norm2d_backward(np.ones_like(x), w, var, eps=0.0, backend=backend)
    np.testing.assert_array_equal(g[0, 0], 1.0)


def test_default_buffers_are_identity_up_to_eps(backend, rng):
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    ones, zeros = np.ones(3, np.float32), np.zeros(3, np.float32)
    y = frozen_batch_norm2d(x, ones, zeros, zeros, ones, backend=backend)
    np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_scale_shift_formula_in_float32(rng):
    w, b, m, v = buffers(5, rng)
    scale, shift = scale_and_shift(w, b, m, v, 1e-5)
    assert scale.dtype == np.float32
    np.testing.assert_array_equal(scale, w * (np.float32(1) / np.sqrt(v + np.float32(1e-5))))
    np.testing.assert_array_equal(shift, b - m * scale)


def test_backends_agree(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    w, b, m, v = buffers(3, rng)
    # CUDA may fuse x*scale + shift into one FMA: allow an ulp
    assert_backends_agree(frozen_batch_norm2d, x=x, weight=w, bias=b, running_mean=m, running_var=v,
                          rtol=1e-6, atol=1e-6)
    assert_backends_agree(frozen_batch_norm2d_backward, grad_out=x, weight=w, running_var=v, rtol=0, atol=0)


def test_gradcheck_numpy_reference_buffers_are_constants(rng):
    w, b, m, v = buffers(3, rng, np.float64)
    with use_backend("numpy"):
        gradcheck(lambda t: F_fbn(t, w, b, m, v, eps=1e-5), [rng.standard_normal((2, 3, 2, 3))])
    wt = Tensor(w, requires_grad=True)  # a Tensor passed as a buffer is used as a constant
    x = Tensor(rng.standard_normal((1, 3, 2, 2)), requires_grad=True)
    F_fbn(x, wt, b, m, v).sum().backward()
    assert wt.grad is None and x.grad is not None


def test_fast_backward_equals_numpy_backward(backend, rng):
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b, m, v = buffers(3, rng)
    grads = []
    for name in ("numpy", backend):
        t = Tensor(x, requires_grad=True)
        with use_backend(name):
            F_fbn(t, w, b, m, v).backward(g)
        grads.append(t.grad)
    np.testing.assert_array_equal(grads[1], grads[0])


def test_empty_batch(backend, rng):
    y = frozen_batch_norm2d(np.zeros((0, 3, 4, 4), np.float32), *buffers(3, rng), backend=backend)
    assert y.shape == (0, 3, 4, 4)


def test_errors(rng):
    x = np.zeros((1, 3, 2, 2), np.float32)
    w, b, m, v = buffers(3, rng)
    with pytest.raises(ValueError, match=r"running_var: expected shape \(3,\)"):
        frozen_batch_norm2d(x, w, b, m, v[:2])
    with pytest.raises(ValueError, match="eps: expected a number in"):
        frozen_batch_norm2d(x, w, b, m, v, eps=-1.0)
    with pytest.raises(ValueError, match="input: expected 4 dimensions"):
        frozen_batch_norm2d(x[0], w, b, m, v)


def test_matches_torchvision(rng):
    pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    import torch

    x = rng.standard_normal((2, 4, 3, 5)).astype(np.float32)
    ref = ops.FrozenBatchNorm2d(4, eps=1e-5)
    w, b, m, v = buffers(4, rng)
    ref.load_state_dict({"weight": torch.from_numpy(w), "bias": torch.from_numpy(b),
                         "running_mean": torch.from_numpy(m), "running_var": torch.from_numpy(v)})
    np.testing.assert_array_equal(frozen_batch_norm2d(x, w, b, m, v), ref(torch.from_numpy(x)).numpy())


@pytest.mark.cuda
def test_device_buffers_give_the_host_buffers_result(rng):
    """A model moved to the GPU keeps its buffers there: scale and shift are then computed on the device."""
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device, to_host

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    bufs = buffers(3, rng)
    dev = [to_device(b) for b in bufs]
    want = frozen_batch_norm2d(x, *bufs, eps=1e-5, backend="numpy")
    got = frozen_batch_norm2d(to_device(x), *dev, eps=1e-5, backend="cuda")
    assert is_device_array(got)
    np.testing.assert_allclose(to_host(got), want, rtol=1e-6, atol=1e-6)
    g_want = frozen_batch_norm2d_backward(x, bufs[0], bufs[3], eps=1e-5, backend="numpy")
    g_got = frozen_batch_norm2d_backward(to_device(x), dev[0], dev[3], eps=1e-5, backend="cuda")
    np.testing.assert_allclose(to_host(g_got), g_want, rtol=1e-6, atol=1e-6)
    with pytest.raises(TypeError, match="all four"):
        frozen_batch_norm2d(to_device(x), dev[0], *bufs[1:], backend="cuda")
    with pytest.raises(TypeError, match="backend='cuda'"):
        frozen_batch_norm2d(x, *dev, backend="cpu")
