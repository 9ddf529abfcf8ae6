"""Differentiable 2-D max pooling (``torch.nn.functional.max_pool2d``).

The forward keeps the argmax of every window; the backward sends each output gradient to that
input cell (:mod:`minirc.ops.max_pool2d`: torch's tie and padding rules, deterministic sums).
"""
from __future__ import annotations

from minirc.autograd import Function, Tensor
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops import max_pool2d as _ops


class MaxPool2d(Function):
    @staticmethod
    def forward(ctx, x, kernel_size, stride, padding, dilation, ceil_mode, sink=None):
        ctx.backend = get_backend()
        out, indices = _ops.max_pool2d(x, kernel_size, stride, padding, dilation, ceil_mode, backend=ctx.backend)
        ctx.indices, ctx.input_shape, ctx.dtype = indices, tuple(x.shape), x.dtype
        ctx.window = (kernel_size, stride, padding, dilation)
        if sink is not None:  # return_indices=True: hand the argmax to the caller
            sink.append(indices)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if not is_device_array(grad_out):
            grad_out = grad_out.astype(ctx.dtype, copy=False)
        grad_in = _ops.max_pool2d_backward(grad_out, ctx.indices, ctx.input_shape, *ctx.window,
                                           backend=ctx.backend, check_indices=False)  # the forward's own
        return grad_in, None, None, None, None, None


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    """Max over windows of an (N, C, H, W) input; returns (N, C, OH, OW) (and int64 indices
    ``h * W + w`` into each input plane when ``return_indices=True``, as a Tensor)."""
    sink = [] if return_indices else None
    out = MaxPool2d.apply(input, kernel_size, stride, padding, dilation, ceil_mode, sink=sink)
    return (out, Tensor(sink[0])) if return_indices else out
