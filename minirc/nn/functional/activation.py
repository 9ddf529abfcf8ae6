"""Differentiable ReLU and sigmoid (``torch.nn.functional.relu`` / ``torch.sigmoid``).

Both backwards use the saved *output*, as torch does: ``relu'(x) = [y > 0]``, ``sigmoid'(x) = y (1 - y)``.
Kernels: :mod:`minirc.ops.activation`, on the backend current at the forward (the backward reuses it).
"""
from __future__ import annotations

from minirc.autograd import Function
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops import activation as _ops


def _forward_saving_output(ctx, kernel, x):
    ctx.backend = get_backend()
    y = kernel(x, backend=ctx.backend)
    ctx.save_for_backward(y)
    return y


def _backward_from_output(ctx, kernel, grad_out):
    (y,) = ctx.saved
    if not is_device_array(grad_out) and grad_out.dtype != y.dtype:
        grad_out = grad_out.astype(y.dtype)
    return kernel(grad_out, y, backend=ctx.backend)


class ReLU(Function):
    @staticmethod
    def forward(ctx, x):
        return _forward_saving_output(ctx, _ops.relu, x)

    @staticmethod
    def backward(ctx, grad_out):
        return _backward_from_output(ctx, _ops.relu_backward, grad_out)


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, x):
        return _forward_saving_output(ctx, _ops.sigmoid, x)

    @staticmethod
    def backward(ctx, grad_out):
        return _backward_from_output(ctx, _ops.sigmoid_backward, grad_out)


def relu(input, inplace=False):
    """``max(input, 0)``; input: Tensor or array of any shape, float. ``inplace`` is accepted for
    torch compatibility and ignored: the tape never overwrites an array it may need later."""
    return ReLU.apply(input)


def sigmoid(input):
    """``1 / (1 + exp(-input))``, finite for any finite input; input: Tensor or array, float."""
    return Sigmoid.apply(input)
