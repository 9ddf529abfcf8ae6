"""Differentiable array arithmetic behind :class:`minirc.Tensor`'s operators.

Each op is a :class:`~minirc.autograd.Function` with its backward right under its forward.
Broadcasting follows NumPy; a broadcast input receives the gradient summed back to its own shape
(:func:`unbroadcast`). Each op runs on NumPy arrays, or on Numba device arrays through
:mod:`minirc.cuda_array` (``xp = array_module(...)`` picks the namespace), so the ``"cuda"``
backend keeps the whole graph on the GPU. The heavy layers live in :mod:`minirc.ops` and are
reached through :mod:`minirc.nn.functional`.
"""
from __future__ import annotations

import numpy as np

from minirc.autograd import Function, Tensor
from minirc.cuda_utils import array_module, is_device_array


def unbroadcast(grad, shape: tuple):
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched to reach ``grad.shape``."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    xp = array_module(grad)
    extra = grad.ndim - len(shape)
    grad = xp.sum(grad, axis=tuple(range(extra))) if extra > 0 else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = xp.sum(grad, axis=stretched, keepdims=True)
    return xp.reshape(grad, tuple(shape))


def _shape(a):
    return np.shape(a)


class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return array_module(a, b).add(a, b)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.shapes[0]), unbroadcast(g, ctx.shapes[1])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.shapes = (_shape(a), _shape(b))
        return array_module(a, b).subtract(a, b)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.shapes[0]), unbroadcast(array_module(g).negative(g), ctx.shapes[1])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return array_module(a, b).multiply(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        xp = array_module(g)
        ga = unbroadcast(xp.multiply(g, b), _shape(a)) if ctx.needs_grad[0] else None
        gb = unbroadcast(xp.multiply(g, a), _shape(b)) if ctx.needs_grad[1] else None
        return ga, gb


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return array_module(a, b).divide(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        xp = array_module(g)
        ga = unbroadcast(xp.divide(g, b), _shape(a)) if ctx.needs_grad[0] else None
        if ctx.needs_grad[1]:  # d(a/b)/db = -a / b^2
            gb = unbroadcast(xp.negative(xp.divide(xp.multiply(g, a), xp.multiply(b, b))), _shape(b))
        else:
            gb = None
        return ga, gb


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return array_module(a).negative(a)

    @staticmethod
    def backward(ctx, g):
        return array_module(g).negative(g)


class Pow(Function):
    """a ** p for a constant exponent p."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a)
        ctx.p = p
        return array_module(a).power(a, p)

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        xp = array_module(g)
        return xp.multiply(g, xp.multiply(xp.power(a, ctx.p - 1), np.asarray(ctx.p, a.dtype))), None


class MatMul(Function):
    """(..., n, k) @ (..., k, m); 2-D in the model (linear layers)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return array_module(a, b).matmul(a, b)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved
        xp = array_module(g)
        ga = unbroadcast(xp.matmul(g, xp.swapaxes(b, -1, -2)), a.shape) if ctx.needs_grad[0] else None
        gb = unbroadcast(xp.matmul(xp.swapaxes(a, -1, -2), g), b.shape) if ctx.needs_grad[1] else None
        return ga, gb


class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = array_module(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        return array_module(g).multiply(g, ctx.saved[0])


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return array_module(a).log(a)

    @staticmethod
    def backward(ctx, g):
        return array_module(g).divide(g, ctx.saved[0])


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.shape, ctx.axis, ctx.keepdims = a.shape, axis, keepdims
        if is_device_array(a):
            return array_module(a).sum(a, axis=axis, keepdims=keepdims)
        return np.asarray(np.sum(a, axis=axis, keepdims=keepdims))

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        ndim = len(ctx.shape)
        axes = range(ndim) if ctx.axis is None else ((ctx.axis,) if np.isscalar(ctx.axis) else ctx.axis)
        axes = {ax % max(ndim, 1) for ax in axes}
        kept = tuple(1 if i in axes else n for i, n in enumerate(ctx.shape))  # g with keepdims=True
        out = xp.broadcast_to(xp.reshape(g, kept), ctx.shape)
        return out.copy() if isinstance(out, np.ndarray) else out  # a writable array, not a view


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        return array_module(a).reshape(a, shape)

    @staticmethod
    def backward(ctx, g):
        return array_module(g).reshape(g, ctx.shape), None


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes):
        ctx.axes = axes
        return array_module(a).transpose(a, axes)

    @staticmethod
    def backward(ctx, g):
        return array_module(g).transpose(g, tuple(np.argsort(ctx.axes))), None


class GetItem(Function):
    """a[index] for any NumPy index; the backward scatters with ``np.add.at`` so repeats add up.

    On the device the host turns the index into flat source positions once; the forward gathers
    them and the backward sums them back in a fixed order (:mod:`minirc.cuda_array`).
    """

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.index = a.shape, index
        if is_device_array(a):
            from minirc import cuda_array

            ctx.positions = cuda_array.flat_index(a.shape, index)
            return cuda_array.gather(a, ctx.positions)
        return a[index]

    @staticmethod
    def backward(ctx, g):
        if is_device_array(g):
            from minirc import cuda_array

            return cuda_array.scatter_sum(g, ctx.positions, ctx.shape), None
        out = np.zeros(ctx.shape, dtype=g.dtype)
        if _selects_each_row_once(ctx.index, ctx.shape[0] if ctx.shape else 0):
            out[ctx.index] = g  # no repeats: assigning is adding to zeros, bit for bit, 50x faster
        else:
            np.add.at(out, ctx.index, g)
        return out, None


def _selects_each_row_once(index, rows: int) -> bool:
    """True for a boolean mask, or a 1-D integer array with no repeated row (the RoI re-orderings
    and selections of the heads): scattering such an index back needs no ``np.add.at``."""
    if isinstance(index, tuple) and len(index) == 1:
        index = index[0]
    if not isinstance(index, np.ndarray) or index.ndim != 1:
        return False
    if index.dtype == np.bool_:
        return True
    if index.dtype.kind not in "iu" or index.size > rows:
        return False
    return np.unique(np.where(index < 0, index + rows, index)).size == index.size


class Concat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        ctx.axis = axis
        ctx.sizes = [a.shape[axis] for a in arrays]
        return array_module(*arrays).concatenate(arrays, axis=axis)

    @staticmethod
    def backward(ctx, g):
        cuts = np.cumsum(ctx.sizes)[:-1]
        return tuple(array_module(g).split(g, cuts, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = array_module(*arrays)
        ctx.axis = axis = axis % (arrays[0].ndim + 1)
        expanded = [xp.reshape(a, a.shape[:axis] + (1,) + a.shape[axis:]) for a in arrays]
        return xp.concatenate(expanded, axis=axis)  # stack = concatenate along a new unit axis

    @staticmethod
    def backward(ctx, g):
        xp = array_module(g)
        parts = xp.split(g, np.arange(1, g.shape[ctx.axis]), axis=ctx.axis)
        return tuple(xp.reshape(p, p.shape[:ctx.axis] + p.shape[ctx.axis + 1:]) for p in parts)


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
