import numpy as np
import pytest

import minirc
from minirc import Tensor, no_grad
from minirc.testing import gradcheck


def test_fan_out_accumulates():
    # d/dx of (x + x) * x = 4x: the classic test that catches assignment instead of +=
    x = Tensor(np.array([3.0]), requires_grad=True)
    ((x + x) * x).backward()
    assert x.grad[0] == pytest.approx(12.0)


def test_leaf_grad_accumulates_across_calls_until_reset():
    x = Tensor(np.array([2.0, -1.0]), requires_grad=True)
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None


def test_no_grad_records_nothing():
    x = Tensor(np.ones(3), requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf


def test_backward_errors_are_clear():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match="single-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="expected shape"):
        (x * 2).backward(np.ones(4))
    with pytest.raises(RuntimeError, match="does not require"):
        Tensor(np.ones(1)).backward()
    with pytest.raises(TypeError, match="only float"):
        Tensor(np.ones(2, dtype=np.int64), requires_grad=True)


@pytest.mark.parametrize("op", [
    lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / (b * b + 1.0),
    lambda a, b: (a * b).sum(axis=1), lambda a, b: (a - b).mean(axis=0, keepdims=True),
    lambda a, b: a.exp() * b, lambda a, b: (a * a + 1.0).log() ** 2,
])
def test_elementwise_gradcheck(op, rng):
    gradcheck(op, [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))])


def test_broadcasting_gradcheck(rng):
    gradcheck(lambda a, b: a * b + b, [rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 1))])


def test_shape_ops_gradcheck(rng):
    a = rng.standard_normal((2, 3, 4))
    gradcheck(lambda x: x.reshape(6, 4).T @ x.reshape(6, 4), [a])
    gradcheck(lambda x: x.transpose(2, 0, 1)[1:, ::2] * 2.0, [a])
    gradcheck(lambda x: x[np.array([0, 0, 1])], [a])  # repeated index: gradients add up
    gradcheck(lambda x, y: minirc.cat([x, y], axis=1), [a, rng.standard_normal((2, 2, 4))])
    gradcheck(lambda x, y: minirc.stack([x, y], axis=0).sum(axis=1), [a, a + 1])


@pytest.mark.parametrize("index", [np.array([2, 0, 3]), np.array([-1, 0, 1]), np.array([1, 1, 0]),
                                   np.array([True, False, True, True]), np.array([], dtype=np.int64),
                                   (np.array([0, 1]), np.array([2, 2]))])
def test_getitem_backward_equals_add_at(rng, index):
    # the backward assigns when no row repeats and falls back to np.add.at otherwise: same numbers
    a = minirc.Tensor(rng.standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    g = rng.standard_normal(a.data[index].shape).astype(np.float32)
    a[index].backward(g)
    expected = np.zeros_like(a.data)
    np.add.at(expected, index, g)
    np.testing.assert_array_equal(a.grad, expected)


def test_matmul_gradcheck(rng):
    gradcheck(lambda a, b: a @ b, [rng.standard_normal((3, 5)), rng.standard_normal((5, 2))])


def test_gradcheck_can_fail():
    class WrongSquare(minirc.Function):
        @staticmethod
        def forward(ctx, a):
            ctx.save_for_backward(a)
            return a * a

        @staticmethod
        def backward(ctx, g):
            return g * ctx.saved[0]  # missing factor 2

    with pytest.raises(AssertionError, match="gradcheck failed"):
        gradcheck(WrongSquare.apply, [np.array([1.0, 2.0])])


def test_float32_stays_float32():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x * 2 + 1) / 3 - 0.5
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


def test_empty_tensors_work():
    x = Tensor(np.zeros((0, 4)), requires_grad=True)
    y = (x * 2).sum()
    y.backward()
    assert x.grad.shape == (0, 4)
    assert x.flatten().shape == (0,)


def test_function_subclass_without_backward_is_refused_at_definition():
    from minirc.autograd import Function

    with pytest.raises(TypeError, match="must define static methods.*missing: backward"):
        class OnlyForward(Function):  # noqa: F841 - the definition itself must fail
            @staticmethod
            def forward(ctx, x):
                return x
