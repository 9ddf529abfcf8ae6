import numpy as np
import pytest

from minirc import Tensor, use_backend
from minirc.nn.functional.loss import binary_cross_entropy_with_logits, cross_entropy, smooth_l1_loss
from minirc.ops import losses as L
from minirc.testing import assert_backends_agree, gradcheck


# ---- golden values by hand ---------------------------------------------------------------------
def test_smooth_l1_golden(backend):
    x = np.array([0.0, 0.5, -2.0, 1.0, 3.0], np.float32)
    t = np.array([0.0, 0.0, 0.0, 0.0, 1.0], np.float32)
    # beta = 1: |d| < 1 -> 0.5 d^2, else |d| - 0.5
    np.testing.assert_allclose(L.smooth_l1_loss(x, t, 1.0, backend=backend), [0, 0.125, 1.5, 0.5, 1.5])
    # beta = 1/9 (the RPN's): d = 0.1 is inside -> 0.5 * 0.01 * 9 = 0.045; d = 1 -> 1 - 1/18
    got = L.smooth_l1_loss(np.array([0.1, 1.0], np.float32), np.zeros(2, np.float32), 1 / 9, backend=backend)
    np.testing.assert_allclose(got, [0.045, 1 - 1 / 18], rtol=1e-6)
    # beta = 0 is the L1 loss, gradient sign(d) with sign(0) = 0
    np.testing.assert_allclose(L.smooth_l1_loss(x, t, 0.0, backend=backend), np.abs(x - t))
    g = L.smooth_l1_loss_backward(np.float32(1), x, t, 0.0, backend=backend)
    np.testing.assert_array_equal(g, [0, 1, -1, 1, 1])
    g = L.smooth_l1_loss_backward(np.float32(1), x, t, 1.0, backend=backend)
    np.testing.assert_array_equal(g, [0, 0.5, -1, 1, 1])  # d/beta inside, sign(d) outside


def test_bce_golden_and_stable_at_large_logits(backend):
    x = np.array([0.0, 0.0, 100.0, 100.0, -100.0, -100.0, 2.0], np.float32)
    z = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.25], np.float32)
    loss = L.binary_cross_entropy_with_logits(x, z, backend=backend)
    assert np.all(np.isfinite(loss))
    expected = [np.log(2), np.log(2), 0.0, 100.0, 0.0, 100.0,
                -(0.25 * np.log(1 / (1 + np.exp(-2))) + 0.75 * np.log(1 - 1 / (1 + np.exp(-2))))]
    np.testing.assert_allclose(loss, expected, rtol=1e-6, atol=1e-30)
    g = L.binary_cross_entropy_with_logits_backward(np.float32(1), x, z, backend=backend)
    np.testing.assert_allclose(g, [0.5, -0.5, 0, 1, 0, -1, 1 / (1 + np.exp(-2)) - 0.25], rtol=1e-6, atol=1e-30)


def test_cross_entropy_golden(backend):
    x = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]], np.float32)
    t = np.array([1, 2, 1])
    loss, lse = L.cross_entropy(x, t, backend=backend)
    lse1 = 3 + np.log(1 + np.exp(-1) + np.exp(-2))
    np.testing.assert_allclose(loss, [np.log(3), lse1 - 3, 1000.0], rtol=1e-6)  # finite at +-1000
    g = L.cross_entropy_backward(np.ones(3, np.float32), x, t, lse, backend=backend)
    np.testing.assert_allclose(g[0], [1 / 3, -2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(g[2], [1, -1, 0], atol=1e-7)


def test_reductions_and_empty():
    per = np.array([1.0, 2.0, 4.0], np.float32)
    assert L.reduce_loss(per, "sum") == 7 and L.reduce_loss(per, "mean") == pytest.approx(7 / 3)
    assert L.reduce_loss(per, "none") is per
    empty = np.zeros(0, np.float32)
    assert np.isnan(L.reduce_loss(empty, "mean"))  # torch: mean of nothing is NaN
    assert L.reduce_loss(empty, "sum") == 0
    with pytest.raises(ValueError, match="reduction: expected one of"):
        L.reduce_loss(per, "avg")


# ---- backends --------------------------------------------------------------------------------------
def test_backends_agree(rng):
    x = (rng.standard_normal((3, 7)) * 3).astype(np.float32)
    t = rng.standard_normal(x.shape).astype(np.float32)
    z = rng.uniform(0, 1, x.shape).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    tol = dict(rtol=1e-6, atol=1e-7)
    for beta in (1 / 9, 0.0):
        assert_backends_agree(L.smooth_l1_loss, input=x, target=t, beta=beta, **tol)
        assert_backends_agree(L.smooth_l1_loss_backward, grad_out=g, input=x, target=t, beta=beta, **tol)
    assert_backends_agree(L.binary_cross_entropy_with_logits, input=x * 30, target=z, **tol)
    assert_backends_agree(L.binary_cross_entropy_with_logits_backward, grad_out=np.float32(0.3),
                          input=x * 30, target=z, **tol)
    labels = rng.integers(0, 7, 3)
    _, lse = assert_backends_agree(L.cross_entropy, input=x, target=labels, **tol)
    assert_backends_agree(L.cross_entropy_backward, grad_out=g[:, 0], input=x, target=labels, logsumexp=lse, **tol)


# ---- autograd: float64 gradchecks on the NumPy reference, fast backward == NumPy backward ----------------
def _losses(rng):
    t = rng.standard_normal((3, 4))
    z = rng.uniform(0, 1, (3, 4))
    labels = np.array([0, 3, 3])
    return [
        lambda x, r: smooth_l1_loss(x, t, beta=0.5, reduction=r),
        lambda x, r: smooth_l1_loss(x, t, beta=0.0, reduction=r),
        lambda x, r: binary_cross_entropy_with_logits(x * 5, z, reduction=r),
        lambda x, r: cross_entropy(x, labels, reduction=r),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gradcheck_numpy_reference(reduction, rng):
    x = rng.standard_normal((3, 4))
    with use_backend("numpy"):
        for loss in _losses(rng):
            gradcheck(lambda a: loss(a, reduction), [x])


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fast_backward_equals_numpy_backward(reduction, backend, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    for loss in _losses(np.random.default_rng(1)):
        grads = []
        for b in ("numpy", backend):
            t = Tensor(x, requires_grad=True)
            with use_backend(b):
                out = loss(t, reduction)
            out.backward(np.ones(out.shape, np.float32))
            grads.append(t.grad)
        np.testing.assert_allclose(grads[1], grads[0], rtol=1e-6, atol=1e-7)


def test_mean_gradient_is_divided_by_count():
    x = Tensor(np.array([3.0, -3.0, 0.0, 0.0], np.float32), requires_grad=True)
    smooth_l1_loss(x, np.zeros(4, np.float32), beta=1.0).backward()
    np.testing.assert_allclose(x.grad, [0.25, -0.25, 0, 0])


def test_target_gets_no_gradient():
    x = Tensor(np.ones(3), requires_grad=True)
    t = Tensor(np.zeros(3), requires_grad=True)
    binary_cross_entropy_with_logits(x, t).backward()
    assert t.grad is None and x.grad is not None


def test_empty_inputs(backend):
    x = Tensor(np.zeros((0, 4), np.float32), requires_grad=True)
    with use_backend(backend):
        assert np.isnan(smooth_l1_loss(x, np.zeros((0, 4), np.float32)).item())
        total = smooth_l1_loss(x, np.zeros((0, 4), np.float32), reduction="sum")
        assert total.item() == 0
        total.backward()
        assert x.grad.shape == (0, 4)
        assert cross_entropy(np.zeros((0, 5), np.float32), np.zeros(0, np.int64), reduction="sum").item() == 0
        assert binary_cross_entropy_with_logits(np.zeros(0, np.float32), np.zeros(0, np.float32),
                                                reduction="none").shape == (0,)


def test_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="target: expected the shape of input"):
        L.smooth_l1_loss(x, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="beta: expected a number in"):
        smooth_l1_loss(x, x, beta=-1.0)
    with pytest.raises(ValueError, match="reduction: expected one of"):
        binary_cross_entropy_with_logits(x, x, reduction="avg")
    with pytest.raises(ValueError, match=r"target: expected class indices in \[0, 3\), got -100"):
        cross_entropy(x, np.array([0, -100]))
    with pytest.raises(TypeError, match="target: expected integer class indices"):
        cross_entropy(x, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="input: expected 2 dimensions"):
        cross_entropy(np.zeros(3, np.float32), np.array([0]))


def test_match_torch(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = (rng.standard_normal((6, 5)) * 4).astype(np.float32)
    t = rng.standard_normal(x.shape).astype(np.float32)
    z = rng.uniform(0, 1, x.shape).astype(np.float32)
    labels = rng.integers(0, 5, 6)
    X = torch.from_numpy(x)
    for r in ("mean", "sum", "none"):
        for beta in (1 / 9, 1.0, 0.0):
            np.testing.assert_allclose(smooth_l1_loss(x, t, beta=beta, reduction=r).numpy(),
                                       tf.smooth_l1_loss(X, torch.from_numpy(t), beta=beta, reduction=r).numpy(),
                                       rtol=1e-6)
        ref = tf.binary_cross_entropy_with_logits(X * 30, torch.from_numpy(z), reduction=r)
        np.testing.assert_allclose(binary_cross_entropy_with_logits(x * 30, z, reduction=r).numpy(), ref.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(cross_entropy(x, labels, reduction=r).numpy(),
                                   tf.cross_entropy(X, torch.from_numpy(labels), reduction=r).numpy(), rtol=1e-6)
    ours = Tensor(x, requires_grad=True)
    cross_entropy(ours, labels).backward()
    ref = X.clone().requires_grad_(True)
    tf.cross_entropy(ref, torch.from_numpy(labels)).backward()
    np.testing.assert_allclose(ours.grad, ref.grad.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.cuda
@pytest.mark.filterwarnings("ignore:invalid value")  # the simulator computes the mean of nothing, 0 / 0, in NumPy
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_device_losses_stay_on_the_device(reduction, rng):
    """On "cuda" with a device input, the reduced loss and the input's gradient are device arrays."""
    from minirc.backend import cuda_available
    from minirc.cuda_utils import is_device_array, to_device, to_host

    if not cuda_available():
        pytest.skip("no CUDA GPU and no simulator")
    x = rng.standard_normal((4, 3)).astype(np.float32)
    z = (rng.random((4, 3)) > 0.5).astype(np.float32)
    labels = np.array([0, 2, 1, 2])
    for fn, target in ((smooth_l1_loss, z), (binary_cross_entropy_with_logits, z), (cross_entropy, labels)):
        host = Tensor(x.copy(), requires_grad=True)
        dev = Tensor(to_device(x), requires_grad=True)
        with use_backend("cuda"):
            want, got = fn(host, target, reduction=reduction), fn(dev, target, reduction=reduction)
            assert is_device_array(got.data) and got.shape == ()
            want.backward()
            got.backward()
        np.testing.assert_allclose(to_host(got.data), want.numpy(), rtol=1e-6)
        assert is_device_array(dev.grad)
        np.testing.assert_allclose(to_host(dev.grad), host.grad, rtol=1e-6, atol=1e-7)
    empty = L.reduce_loss(to_device(np.zeros((0, 3), np.float32)), reduction)
    assert is_device_array(empty)
    assert np.isnan(to_host(empty)) if reduction == "mean" else to_host(empty) == 0
