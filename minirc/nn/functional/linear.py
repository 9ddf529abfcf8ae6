"""Differentiable ``linear`` (``torch.nn.functional.linear``): ``y = x W^T + b``.

Shapes: x (*, in), weight (out, in), bias (out,), y (*, out); leading axes are flattened into one
batch axis of B rows. With g = dL/dy (B, out), the backward is two matrix products and a sum::

    dx = g @ W          (B, out) @ (out, in)
    dW = g^T @ x        (out, B) @ (B, in)    -- read transposed by the kernel, never copied
    db = g summed over the batch

The products run on :func:`minirc.ops.matmul.matmul` with the backend current at the forward; on
``"cuda"`` the arrays may be device arrays (the glue -- reshape, bias add, sum -- then runs through
:mod:`minirc.cuda_array`, picked by ``array_module``).
"""
from __future__ import annotations

from minirc import _checks
from minirc.autograd import Function
from minirc.backend import get_backend
from minirc.cuda_utils import array_module, is_device_array
from minirc.ops.matmul import matmul


def _check(x, w, b):
    x = _checks.as_array(x, "input", float_only=True)
    w = _checks.as_array(w, "weight", ndim=2, float_only=True)
    _checks.same_dtype(x, w, "input", "weight")
    if x.ndim == 0 or tuple(x.shape)[-1] != w.shape[1]:
        raise ValueError(f"input: expected a last dimension of {w.shape[1]} (weight's in_features, "
                         f"weight shape {tuple(w.shape)}), got shape {tuple(x.shape)}")
    if b is not None:
        b = _checks.as_array(b, "bias", ndim=1, float_only=True)
        _checks.same_dtype(x, b, "input", "bias")
        if b.shape[0] != w.shape[0]:
            raise ValueError(f"bias: expected shape ({w.shape[0]},), got {tuple(b.shape)}")
    return x, w, b


class Linear(Function):
    @staticmethod
    def forward(ctx, x, w, b):
        x, w, b = _check(x, w, b)
        xp = array_module(x, w)
        ctx.backend = get_backend()
        ctx.x_shape = tuple(x.shape)
        x2 = xp.reshape(x, (-1, w.shape[1]))                            # (B, in)
        ctx.save_for_backward(x2, w)
        y = matmul(x2, w, transpose_b=True, backend=ctx.backend)        # (B, in) @ (in, out)
        if b is not None:
            y = xp.add(y, b)
        return xp.reshape(y, (*ctx.x_shape[:-1], w.shape[0]))

    @staticmethod
    def backward(ctx, grad_out):
        x2, w = ctx.saved
        xp = array_module(grad_out)
        if not is_device_array(grad_out) and grad_out.dtype != w.dtype:
            grad_out = grad_out.astype(w.dtype)
        g = xp.reshape(grad_out, (-1, w.shape[0]))                        # (B, out)
        need_x, need_w, need_b = ctx.needs_grad
        dx = xp.reshape(matmul(g, w, backend=ctx.backend), ctx.x_shape) if need_x else None
        dw = matmul(g, x2, transpose_a=True, backend=ctx.backend) if need_w else None
        db = xp.sum(g, axis=0) if need_b else None
        return dx, dw, db


def linear(input, weight, bias=None):
    """``input @ weight.T + bias``: input (*, in), weight (out, in), bias (out,) or None.

    Tensors or host arrays, float32 or float64 (one dtype). Returns a Tensor (*, out).
    """
    return Linear.apply(input, weight, bias)
