"""Differentiable frozen batch norm (torchvision's ``FrozenBatchNorm2d`` forward).

``y = x * scale[c] + shift[c]`` with ``scale = weight * rsqrt(running_var + eps)``,
``shift = bias - running_mean * scale`` (:mod:`minirc.ops.frozen_batch_norm`). The four buffers
are constants: the gradient flows to the input only (a Tensor passed as a buffer gets none).
"""
from __future__ import annotations

from minirc.autograd import Function, Tensor
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops import frozen_batch_norm as _ops


def _constant(a):
    return a.data if isinstance(a, Tensor) else a


class FrozenBatchNorm2d(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps):
        ctx.backend = get_backend()
        ctx.saved_buffers, ctx.eps, ctx.dtype = (weight, running_var), eps, x.dtype
        return _ops.frozen_batch_norm2d(x, weight, bias, running_mean, running_var, eps, backend=ctx.backend)

    @staticmethod
    def backward(ctx, grad_out):
        if not is_device_array(grad_out):
            grad_out = grad_out.astype(ctx.dtype, copy=False)
        weight, running_var = ctx.saved_buffers
        grad_in = _ops.frozen_batch_norm2d_backward(grad_out, weight, running_var, ctx.eps, backend=ctx.backend)
        return grad_in, None, None, None, None, None


def frozen_batch_norm2d(input, weight, bias, running_mean, running_var, eps=1e-5):
    """Per-channel affine map of an (N, C, H, W) input with fixed statistics.

    weight, bias, running_mean, running_var: (C,) arrays (or Tensors, used as constants); eps >= 0.
    Returns (N, C, H, W) in input's dtype.
    """
    return FrozenBatchNorm2d.apply(input, _constant(weight), _constant(bias), _constant(running_mean),
                                   _constant(running_var), eps)
