"""Differentiable batch norm (``torch.nn.functional.batch_norm``), gradients w.r.t. input, weight, bias.

Training mode normalises with the batch's own statistics and updates the running buffers in place;
eval mode uses the running buffers as constants. The math and the kernels: :mod:`minirc.ops.batch_norm`.
"""
from __future__ import annotations

from minirc.autograd import Function, Tensor
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array, to_device
from minirc.ops import batch_norm as _ops


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def _like(grad, param):
    """A (C,) host gradient moved next to its parameter (a device array on "cuda" when it lives there)."""
    if param is None:
        return None
    grad = grad.astype(param.dtype, copy=False)
    return to_device(grad) if is_device_array(param) else grad


class BatchNorm(Function):
    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, training, momentum, eps):
        ctx.backend, ctx.training, ctx.dtype = get_backend(), training, x.dtype
        out, mean, invstd = _ops.batch_norm_forward(x, weight, bias, running_mean, running_var, training,
                                                    momentum, eps, backend=ctx.backend)
        ctx.save_for_backward(x, weight, bias, mean, invstd)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if not is_device_array(grad_out):
            grad_out = grad_out.astype(ctx.dtype, copy=False)
        x, weight, bias, mean, invstd = ctx.saved
        grad_in, grad_weight, grad_bias = _ops.batch_norm_backward(grad_out, x, weight, mean, invstd, ctx.training,
                                                                   backend=ctx.backend)
        grad_in = grad_in if ctx.needs_grad[0] else None
        return grad_in, _like(grad_weight, weight), _like(grad_bias, bias), None, None, None, None, None


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5):
    """Batch norm of an (N, C, H, W) input, torch's argument order.

    running_mean, running_var: (C,) float buffers (arrays, updated in place when ``training``; may be
    None in training mode); weight, bias: (C,) Tensors/Parameters or arrays, or None (1 and 0);
    training: normalise with the batch's statistics (needs N*H*W > 1) and update the buffers, else
    with the running ones; momentum in [0, 1]; eps >= 0. Returns (N, C, H, W) in input's dtype.
    """
    return BatchNorm.apply(input, weight, bias, _raw(running_mean), _raw(running_var), bool(training),
                           momentum, eps)
