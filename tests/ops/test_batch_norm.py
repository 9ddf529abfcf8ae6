"""Batch norm kernels (minirc.ops.batch_norm) and their autograd wrapper (minirc.nn.functional.batch_norm)."""
import numpy as np
import pytest

from minirc import Tensor, no_grad, use_backend
from minirc.nn.functional.batch_norm import batch_norm as F_bn
from minirc.ops.batch_norm import batch_norm_backward, batch_norm_forward
from minirc.testing import assert_backends_agree, gradcheck


def golden_input():
    """(2, 2, 2, 2). Channel 0: image 0 all 1, image 1 all 3 -> mean 2, var 1, x_hat -1 / +1.
    Channel 1: 3s and 7s, four each -> mean 5, var 4, invstd 1/2, x_hat -1 / +1."""
    x = np.zeros((2, 2, 2, 2), np.float32)
    x[0, 0], x[1, 0] = 1.0, 3.0
    x[0, 1] = [[3, 7], [3, 7]]
    x[1, 1] = [[7, 3], [7, 3]]
    return x


W = np.array([2.0, 3.0], np.float32)
B = np.array([1.0, -1.0], np.float32)


def test_golden_training_forward_and_running_stats(backend):
    x = golden_input()
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    y, mean, invstd = batch_norm_forward(x, W, B, rm, rv, training=True, momentum=0.1, eps=0.0, backend=backend)
    np.testing.assert_array_equal(mean, [2.0, 5.0])
    np.testing.assert_array_equal(invstd, [1.0, 0.5])
    # y = weight * x_hat + bias: channel 0 -> 2*(-1)+1 = -1 and 2*1+1 = 3; channel 1 -> 3*(-1)-1 = -4, 3*1-1 = 2
    np.testing.assert_array_equal(y[0, 0], -1.0)
    np.testing.assert_array_equal(y[1, 0], 3.0)
    np.testing.assert_array_equal(y[0, 1], [[-4, 2], [-4, 2]])
    np.testing.assert_array_equal(y[1, 1], [[2, -4], [2, -4]])
    # running_mean = 0.9 * 0 + 0.1 * mean; running_var = 0.9 * 1 + 0.1 * var * 8 / 7 (unbiased, M = 8)
    np.testing.assert_allclose(rm, [0.2, 0.5], rtol=1e-7)
    np.testing.assert_allclose(rv, [0.9 + 0.1 * 8 / 7, 0.9 + 0.1 * 4 * 8 / 7], rtol=1e-7)
    assert rm.dtype == rv.dtype == np.float32


def test_golden_training_backward(backend):
    # g = 1 at x[0, 0, 0, 0] only (x_hat = -1 there): dbias = 1, dweight = -1,
    # dx = w * invstd * (g - 1/8 - x_hat * (-1)/8) = 2 * (g - 1/8 + x_hat/8): 1.5 at the hot element,
    # -0.5 at the other x_hat = -1 elements, 0 at x_hat = +1; channel 1 receives nothing
    x = golden_input()
    _, mean, invstd = batch_norm_forward(x, W, B, None, None, training=True, eps=0.0, backend=backend)
    g = np.zeros_like(x)
    g[0, 0, 0, 0] = 1.0
    dx, dw, db = batch_norm_backward(g, x, W, mean, invstd, training=True, backend=backend)
    np.testing.assert_array_equal(dx[0, 0], [[1.5, -0.5], [-0.5, -0.5]])
    np.testing.assert_array_equal(dx[1, 0], 0.0)
    np.testing.assert_array_equal(dx[:, 1], 0.0)
    np.testing.assert_array_equal(dw, [-1.0, 0.0])
    np.testing.assert_array_equal(db, [1.0, 0.0])


def test_golden_eval_forward_and_backward(backend):
    x = golden_input()
    rm, rv = np.array([1.0, 5.0], np.float32), np.array([4.0, 1.0], np.float32)
    y, mean, invstd = batch_norm_forward(x, W, B, rm, rv, training=False, eps=0.0, backend=backend)
    np.testing.assert_array_equal(y[0, 0], 1.0)  # (1 - 1) / 2 * 2 + 1
    np.testing.assert_array_equal(y[1, 0], 3.0)  # (3 - 1) / 2 * 2 + 1
    np.testing.assert_array_equal(y[0, 1], [[-7, 5], [-7, 5]])  # (3 - 5) * 3 - 1, (7 - 5) * 3 - 1
    np.testing.assert_array_equal(rm, [1.0, 5.0])  # eval updates nothing
    np.testing.assert_array_equal(rv, [4.0, 1.0])
    g = np.ones_like(x)
    dx, dw, db = batch_norm_backward(g, x, W, mean, invstd, training=False, backend=backend)
    np.testing.assert_array_equal(dx[:, 0], 1.0)  # w * invstd = 2 * 1/2: the statistics are constants
    np.testing.assert_array_equal(dx[:, 1], 3.0)
    np.testing.assert_array_equal(db, [8.0, 8.0])
    np.testing.assert_array_equal(dw, [(0 * 4 + 1 * 4), 0.0])  # sum of x_hat: 0 (x=1) and 1 (x=3)


def test_constant_channel_with_zero_eps_gives_bias(backend):
    # var = 0 and eps = 0: torch's InvStd returns 0 instead of inf, so y = bias
    x = np.full((2, 1, 2, 2), 4.0, np.float32)
    y, _, invstd = batch_norm_forward(x, np.array([2.0], np.float32), np.array([0.5], np.float32), None, None,
                                      training=True, eps=0.0, backend=backend)
    assert invstd[0] == 0.0
    np.testing.assert_array_equal(y, 0.5)


def _forward(backend, x, training, w, b, rm, rv):
    rm, rv = rm.copy(), rv.copy()
    out = batch_norm_forward(x, w, b, rm, rv, training=training, momentum=0.3, eps=1e-3, backend=backend)
    return (*out, rm, rv)


@pytest.mark.parametrize("training", [True, False])
def test_backends_agree_forward_and_backward(rng, training):
    x = (rng.standard_normal((2, 3, 4, 5)) * 2 + 1).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    w, b = rng.uniform(0.5, 1.5, 3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    rm, rv = rng.standard_normal(3).astype(np.float32), rng.uniform(0.5, 2.0, 3).astype(np.float32)
    # the sums are float64 in every backend; the elementwise passes may differ by an ulp (CUDA FMA)
    _, mean, invstd, _, _ = assert_backends_agree(_forward, x=x, training=training, w=w, b=b, rm=rm, rv=rv,
                                                  rtol=1e-6, atol=1e-6)
    assert_backends_agree(batch_norm_backward, grad_out=g, input=x, weight=w, save_mean=mean,
                          save_invstd=invstd, training=training, rtol=1e-5, atol=1e-6)


def test_cpu_is_deterministic(rng):
    x = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    runs = []
    for _ in range(2):
        y, m, s = batch_norm_forward(x, None, None, None, None, training=True, backend="cpu")
        runs.append((y, *batch_norm_backward(g, x, None, m, s, training=True, backend="cpu")))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("training", [True, False])
def test_gradcheck_numpy_reference(rng, training):
    x = rng.standard_normal((2, 3, 2, 3)) * 2 + 0.5
    w, b = rng.uniform(0.5, 1.5, 3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2.0, 3)

    def fn(xt, wt, bt):  # fresh buffers per call: the function of (x, w, b) stays the same
        return F_bn(xt, rm.copy(), rv.copy(), wt, bt, training=training, eps=1e-3)

    with use_backend("numpy"):
        gradcheck(fn, [x, w, b])


def test_running_stats_follow_torch_formula(rng):
    x = rng.standard_normal((3, 2, 3, 2)).astype(np.float64)
    rm, rv = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    rm0, rv0 = rm.copy(), rv.copy()
    batch_norm_forward(x, None, None, rm, rv, training=True, momentum=0.25, backend="numpy")
    flat = x.transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(rm, 0.75 * rm0 + 0.25 * flat.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(rv, 0.75 * rv0 + 0.25 * flat.var(axis=1, ddof=1), rtol=1e-12)  # unbiased
    before = rm.copy()
    batch_norm_forward(x, None, None, rm, rv, training=True, momentum=0.0, backend="numpy")
    np.testing.assert_array_equal(rm, before)  # momentum 0: the buffers keep their values


def test_functional_updates_buffers_in_place_even_without_grad(rng):
    x = rng.standard_normal((2, 2, 3, 3)).astype(np.float32) + 3.0
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    with no_grad():
        F_bn(Tensor(x), rm, rv, training=True)
    assert np.all(rm > 0.25)  # 0.1 * (a mean near 3)
    rm2 = rm.copy()
    F_bn(Tensor(x), rm, rv, training=False)
    np.testing.assert_array_equal(rm, rm2)


def test_functional_gradients_reach_weight_and_bias_only_when_asked(rng):
    x = Tensor(rng.standard_normal((2, 2, 2, 2)).astype(np.float32), requires_grad=True)
    w = Tensor(np.ones(2, np.float32), requires_grad=True)
    y = F_bn(x, np.zeros(2, np.float32), np.ones(2, np.float32), w, np.zeros(2, np.float32), training=True)
    (y * y).sum().backward()
    assert x.grad.shape == (2, 2, 2, 2) and w.grad.shape == (2,) and w.grad.dtype == np.float32


def test_device_arrays_stay_on_the_device(rng):
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    x = rng.standard_normal((1, 2, 2, 3)).astype(np.float32)
    y, mean, invstd = batch_norm_forward(to_device(x), None, None, None, None, training=True, backend="cuda")
    assert is_device_array(y) and not is_device_array(mean)
    dx, dw, _ = batch_norm_backward(to_device(x), to_device(x), None, mean, invstd, training=True, backend="cuda")
    assert is_device_array(dx)
    ref = batch_norm_backward(x, x, None, mean, invstd, training=True, backend="numpy")
    np.testing.assert_allclose(dx.copy_to_host(), ref[0], rtol=1e-5, atol=1e-6)


def test_empty_batch_in_eval_mode(backend):
    x = np.zeros((0, 3, 4, 4), np.float32)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, mean, invstd = batch_norm_forward(x, None, None, rm, rv, training=False, backend=backend)
    assert y.shape == (0, 3, 4, 4) and y.dtype == np.float32
    dx, dw, db = batch_norm_backward(x, x, None, mean, invstd, training=False, backend=backend)
    assert dx.shape == (0, 3, 4, 4)
    np.testing.assert_array_equal(dw, 0.0)
    np.testing.assert_array_equal(db, 0.0)


@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (0, 2, 3, 3)])
def test_training_needs_more_than_one_value_per_channel(shape):
    x = np.zeros(shape, np.float32)
    with pytest.raises(ValueError, match="input: expected more than 1 value per channel"):
        batch_norm_forward(x, None, None, np.zeros(2, np.float32), np.ones(2, np.float32), training=True)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"input": np.zeros((2, 3, 4))}, ValueError, "input"),
    ({"input": np.zeros((2, 2, 2, 2), np.int32)}, TypeError, "input"),
    ({"weight": np.ones(3, np.float32)}, ValueError, "weight"),
    ({"bias": np.ones((2, 1), np.float32)}, ValueError, "bias"),
    ({"running_mean": None}, ValueError, "running_mean"),
    ({"running_var": np.ones(5, np.float32)}, ValueError, "running_var"),
    ({"momentum": 1.5}, ValueError, "momentum"),
    ({"eps": -1.0}, ValueError, "eps"),
])
def test_bad_arguments_name_themselves(kwargs, error, match):
    args = dict(input=np.zeros((2, 2, 2, 2), np.float32), weight=None, bias=None,
                running_mean=np.zeros(2, np.float32), running_var=np.ones(2, np.float32), training=False)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        batch_norm_forward(**args)


def test_backward_checks_grad_out():
    x = np.zeros((2, 2, 2, 2), np.float32)
    stats = np.zeros(2, np.float32), np.ones(2, np.float32)
    with pytest.raises(ValueError, match="grad_out"):
        batch_norm_backward(np.zeros((2, 2, 2, 3), np.float32), x, None, *stats)
    with pytest.raises(TypeError, match="grad_out"):
        batch_norm_backward(x.astype(np.float64), x, None, *stats)
