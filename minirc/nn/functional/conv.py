"""Differentiable conv2d and conv_transpose2d (``torch.nn.functional`` names and argument orders).

Kernels: :mod:`minirc.ops.conv2d` and :mod:`minirc.ops.conv_transpose2d`, on the backend current at
the forward (the backward reuses it). The backward of each is the other's forward, plus a
correlation for the weight (docs/conv.md):

=================  ==============================  ==================================
                   conv2d                          conv_transpose2d
=================  ==============================  ==================================
forward            im2col, ``W @ cols``            col2im of ``W^T @ x``
d input            col2im of ``W^T @ g``           conv2d of g
d weight           ``sum_n g[n] @ cols(x)[n]^T``    ``sum_n x[n] @ cols(g)[n]^T``
d bias             g summed over (N, H, W)         g summed over (N, H, W)
=================  ==============================  ==================================
"""
from __future__ import annotations

from minirc.autograd import Function
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops.conv2d import conv2d_backward, conv2d_forward
from minirc.ops.conv_transpose2d import conv_transpose2d_backward, conv_transpose2d_forward


def _as_dtype(g, dtype):
    return g if is_device_array(g) or g.dtype == dtype else g.astype(dtype)


class Conv2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, dilation):
        ctx.backend = get_backend()
        ctx.geometry = (stride, padding, dilation)
        ctx.save_for_backward(x, w)
        return conv2d_forward(x, w, b, stride, padding, dilation, backend=ctx.backend)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved
        grads = conv2d_backward(_as_dtype(grad_out, x.dtype), x, w, *ctx.geometry,
                                need=ctx.needs_grad[:3], backend=ctx.backend)
        return (*grads, None, None, None)


class ConvTranspose2d(Function):
    @staticmethod
    def forward(ctx, x, w, b, stride, padding, output_padding, dilation):
        ctx.backend = get_backend()
        ctx.geometry = (stride, padding, output_padding, dilation)
        ctx.save_for_backward(x, w)
        return conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation,
                                        backend=ctx.backend)

    @staticmethod
    def backward(ctx, grad_out):
        x, w = ctx.saved
        grads = conv_transpose2d_backward(_as_dtype(grad_out, x.dtype), x, w, *ctx.geometry,
                                          need=ctx.needs_grad[:3], backend=ctx.backend)
        return (*grads, None, None, None, None)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation, as ``torch.nn.functional.conv2d`` (no groups).

    input: (N, C, H, W); weight: (O, C, kh, kw); bias: (O,) or None; Tensors or arrays, float32 or
    float64, one dtype. stride >= 1, padding >= 0, dilation >= 1: an int or an (h, w) pair.
    Returns a Tensor (N, O, Ho, Wo), ``Ho = (H + 2 padding - dilation (kh - 1) - 1) // stride + 1``.
    """
    return Conv2d.apply(input, weight, bias, stride, padding, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, *, dilation=1):
    """Transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d`` (no groups).

    input: (N, Cin, H, W); weight: (Cin, Cout, kh, kw) -- torch's order; bias: (Cout,) or None.
    Returns a Tensor (N, Cout, Ho, Wo),
    ``Ho = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1``;
    0 <= output_padding < stride. The mask head's ``conv5_mask`` is kernel 2, stride 2: 14 -> 28.
    """
    return ConvTranspose2d.apply(input, weight, bias, stride, padding, output_padding, dilation)
