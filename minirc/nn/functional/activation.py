"""Differentiable ReLU and sigmoid (``torch.nn.functional.relu`` / ``torch.sigmoid``).

Both backwards use the saved *output*, as torch does: ``relu'(x) = [y > 0]``, ``sigmoid'(x) = y (1 - y)``.
Kernels: :mod:`minirc.ops.activation`, on the backend current at the forward (the backward reuses it).
"""
from __future__ import annotations

from minirc.autograd import Function
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops import activation as _ops


def _as_dtype(g, dtype):
    return g if is_device_array(g) or g.dtype == dtype else g.astype(dtype)


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.backend = get_backend()
        y = _ops.relu(x, backend=ctx.backend)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (y,) = ctx.saved
        return _ops.relu_backward(_as_dtype(grad_out, y.dtype), y, backend=ctx.backend)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        ctx.backend = get_backend()
        y = _ops.sigmoid(x, backend=ctx.backend)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (y,) = ctx.saved
        return _ops.sigmoid_backward(_as_dtype(grad_out, y.dtype), y, backend=ctx.backend)


def relu(input, inplace=False):
    """``max(input, 0)``; input: Tensor or array of any shape, float. ``inplace`` is accepted for
    torch compatibility and ignored: the tape never overwrites an array it may need later."""
    return ReLU.apply(input)


def sigmoid(input):
    """``1 / (1 + exp(-input))``, finite for any finite input; input: Tensor or array, float."""
    return Sigmoid.apply(input)
