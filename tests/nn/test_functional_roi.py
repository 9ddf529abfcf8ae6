"""Autograd wrappers of RoIAlign / RoIPool: float64 gradchecks (reference backend), fast backends'
gradients equal the reference's, no gradient w.r.t. boxes, empty RoI lists, fan-out accumulation."""
import numpy as np
import pytest

from minirc import Tensor, use_backend
from minirc.nn import functional as F
from minirc.testing import gradcheck

ROIS = np.array([[0, 0.4, 0.7, 5.1, 4.2], [1, -3.0, 2.0, 9.0, 11.0], [0, 2.2, 2.2, 2.3, 2.9]])  # scale 1/2


@pytest.mark.parametrize("aligned, sr", [(False, 2), (True, -1)])
def test_roi_align_gradcheck_float64(rng, aligned, sr):
    x = rng.standard_normal((2, 2, 4, 5))
    with use_backend("numpy"):
        assert gradcheck(lambda t: F.roi_align(t, ROIS, (2, 3), 0.5, sr, aligned), [x])


def test_roi_pool_gradcheck_float64(rng):
    x = rng.permutation(80).reshape(2, 2, 4, 5) / 9.0  # distinct values: no ties under the +-eps steps
    with use_backend("numpy"):
        assert gradcheck(lambda t: F.roi_pool(t, ROIS, 2, 0.5), [x])


@pytest.mark.parametrize("op", ["align", "pool"])
def test_fast_backend_gradients_equal_the_reference(backend, rng, op):
    x = rng.standard_normal((2, 2, 4, 5)).astype(np.float32)
    g = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)

    def grad_on(name):
        t = Tensor(x, requires_grad=True)
        with use_backend(name):
            out = F.roi_align(t, ROIS, 2, 0.5, 2) if op == "align" else F.roi_pool(t, ROIS, 2, 0.5)
            out.backward(g)
        return out.numpy(), np.asarray(t.grad)

    (ref_out, ref_grad), (out, grad) = grad_on("numpy"), grad_on(backend)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(grad, ref_grad)


def test_boxes_get_no_gradient_and_lists_work(rng):
    x = Tensor(rng.standard_normal((2, 1, 4, 4)).astype(np.float32), requires_grad=True)
    boxes = [Tensor(np.array([[0, 0, 3, 3]], np.float32), requires_grad=True), np.zeros((0, 4), np.float32)]
    out = F.roi_align(x, boxes, 2, 1.0, 2)
    out.sum().backward()
    assert boxes[0].grad is None and x.grad.shape == x.shape
    assert np.isclose(x.grad[0].sum(), 4.0) and not x.grad[1].any()  # each bin's weights sum to 1


@pytest.mark.parametrize("fn", [F.roi_align, F.roi_pool])
def test_empty_rois_give_empty_output_and_zero_gradient(fn):
    x = Tensor(np.ones((1, 3, 4, 4), np.float32), requires_grad=True)
    out = fn(x, [np.zeros((0, 4), np.float32)], 2)
    assert out.shape == (0, 3, 2, 2) and out.requires_grad
    out.sum().backward()
    assert x.grad.shape == x.shape and not x.grad.any()


def test_feature_used_twice_accumulates(rng):
    x = Tensor(rng.standard_normal((1, 1, 4, 4)).astype(np.float32), requires_grad=True)
    roi = ROIS[:1]
    (F.roi_align(x, roi, 2, 0.5, 2).sum() + F.roi_pool(x, roi, 2, 0.5).sum()).backward()
    a, p = Tensor(x.data, requires_grad=True), Tensor(x.data, requires_grad=True)
    F.roi_align(a, roi, 2, 0.5, 2).sum().backward()
    F.roi_pool(p, roi, 2, 0.5).sum().backward()
    np.testing.assert_allclose(x.grad, a.grad + p.grad, rtol=1e-6)


def test_bad_input_is_reported():
    with pytest.raises(ValueError, match="input"):
        F.roi_align(Tensor(np.ones((4, 4), np.float32)), ROIS, 2)
    with pytest.raises(ValueError, match="boxes: batch index"):
        F.roi_pool(Tensor(np.ones((1, 1, 4, 4), np.float32)), ROIS, 2)
