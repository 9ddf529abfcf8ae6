"""Differentiable array arithmetic behind :class:`minirc.Tensor`'s operators.

Each op is a :class:`~minirc.autograd.Function` with its backward right under its forward.
Broadcasting follows NumPy; a broadcast input receives the gradient summed back to its own shape
(:func:`unbroadcast`). These ops run on host NumPy arrays; the heavy layers live in
:mod:`minirc.ops` and are reached through :mod:`minirc.nn.functional`.
"""
from __future__ import annotations

import numpy as np

from minirc.autograd import Function, Tensor


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched to reach ``grad.shape``."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(extra))) if extra > 0 else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


def _shape(a):
    return np.shape(a)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.add(a, b)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.shapes[0]), unbroadcast(g, ctx.shapes[1])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return np.subtract(a, b)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.shapes[0]), unbroadcast(-g, ctx.shapes[1])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.multiply(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g * b, _shape(a)) if ctx.needs_grad[0] else None
        gb = unbroadcast(g * a, _shape(b)) if ctx.needs_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.divide(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(g / b, _shape(a)) if ctx.needs_grad[0] else None
        gb = unbroadcast(-g * a / (b * b), _shape(b)) if ctx.needs_grad[1] else None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return np.negative(a)

    @staticmethod
    def backward(ctx, g):
        return -g


class Pow(Function):
    """a ** p for a constant exponent p."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return np.power(a, p)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return g * ctx.p * np.power(a, ctx.p - 1), None


class MatMul(Function):
    """(..., n, k) @ (..., k, m); 2-D in the model (linear layers)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return np.matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        ga = unbroadcast(np.matmul(g, np.swapaxes(b, -1, -2)), a.shape) if ctx.needs_grad[0] else None
        gb = unbroadcast(np.matmul(np.swapaxes(a, -1, -2), g), b.shape) if ctx.needs_grad[1] else None
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = np.exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return g * ctx.saved[0]


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return np.log(a)

    @staticmethod
    def backward(ctx, g):
        return g / ctx.saved[0]


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        return np.asarray(np.sum(a, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        if ctx.axis is not None and not ctx.keepdims:
            axes = (ctx.axis,) if np.isscalar(ctx.axis) else tuple(ctx.axis)
            g = np.expand_dims(g, tuple(ax % len(ctx.shape) for ax in axes))
        return np.broadcast_to(g, ctx.shape).copy()


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return np.reshape(a, shape)

    @staticmethod
    def backward(ctx, g):
        return np.reshape(g, ctx.shape), None


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return np.transpose(a, axes)

    @staticmethod
    def backward(ctx, g):
        return np.transpose(g, np.argsort(ctx.axes)), None


class GetItem(Function):
    """a[index] for any NumPy index; the backward scatters with ``np.add.at`` so repeats add up."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, g):
        out = np.zeros(ctx.shape, dtype=g.dtype)
        np.add.at(out, ctx.index, g)
        return out, None


class Concat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return np.concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        cuts = np.cumsum(ctx.sizes)[:-1]
        return tuple(np.split(g, cuts, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        return np.stack(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        return tuple(np.moveaxis(g, ctx.axis, 0))


def _t(x):
    """Wrap Python numbers as arrays of a matching dtype so float32 stays float32."""
    return x if isinstance(x, Tensor) or isinstance(x, np.ndarray) else np.asarray(x, dtype=np.float32)


def _binary(fn, a, b):
    if not isinstance(b, (Tensor, np.ndarray)):
        b = np.asarray(b, dtype=a.dtype if isinstance(a, Tensor) else np.float32)
    if not isinstance(a, (Tensor, np.ndarray)):
        a = np.asarray(a, dtype=b.dtype)
    return fn.apply(a, b)


def cat(tensors, axis: int = 0) -> Tensor:
    """Concatenate tensors (or arrays) along ``axis``; differentiable."""
    if len(tensors) == 0:
        raise ValueError("cat(tensors): expected at least one tensor, got an empty sequence")
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis: int = 0) -> Tensor:
    """Stack tensors along a new ``axis``; differentiable."""
    if len(tensors) == 0:
        raise ValueError("stack(tensors): expected at least one tensor, got an empty sequence")
    return Stack.apply(*tensors, axis=axis)


def _mean(self, axis=None, keepdims=False):
    n = self.size if axis is None else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
    return Sum.apply(self, axis=axis, keepdims=keepdims) * (1.0 / max(n, 1))


def _reshape(self, *shape):
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    return Reshape.apply(self, tuple(shape))


def _transpose(self, *axes):
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
    axes = tuple(axes) if axes else tuple(reversed(range(self.ndim)))
    return Transpose.apply(self, axes)


Tensor.__add__ = lambda a, b: _binary(Add, a, b)
Tensor.__radd__ = lambda a, b: _binary(Add, b, a)
Tensor.__sub__ = lambda a, b: _binary(Sub, a, b)
Tensor.__rsub__ = lambda a, b: _binary(Sub, b, a)
Tensor.__mul__ = lambda a, b: _binary(Mul, a, b)
Tensor.__rmul__ = lambda a, b: _binary(Mul, b, a)
Tensor.__truediv__ = lambda a, b: _binary(Div, a, b)
Tensor.__rtruediv__ = lambda a, b: _binary(Div, b, a)
Tensor.__neg__ = lambda a: Neg.apply(a)
Tensor.__pow__ = lambda a, p: Pow.apply(a, p)
Tensor.__matmul__ = lambda a, b: MatMul.apply(a, _t(b))
Tensor.__rmatmul__ = lambda a, b: MatMul.apply(_t(b), a)
Tensor.__getitem__ = lambda a, index: GetItem.apply(a, index.data if isinstance(index, Tensor) else index)
Tensor.sum = lambda a, axis=None, keepdims=False: Sum.apply(a, axis=axis, keepdims=keepdims)
Tensor.mean = _mean
Tensor.reshape = _reshape
Tensor.transpose = _transpose
Tensor.T = property(lambda a: _transpose(a))
Tensor.exp = lambda a: Exp.apply(a)
Tensor.log = lambda a: Log.apply(a)
Tensor.flatten = lambda a, start_dim=0: _reshape(a, a.shape[:start_dim] + (int(np.prod(a.shape[start_dim:])),))
