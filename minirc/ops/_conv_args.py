"""The arguments of conv2d and conv_transpose2d: geometry (kernel, stride, padding, dilation) and checks.

Shared by :mod:`minirc.ops.conv2d` and :mod:`minirc.ops.conv_transpose2d`, whose kernels are the same
im2col building blocks (:func:`minirc.ops.conv2d.conv_kernels`).
"""
from __future__ import annotations

from typing import NamedTuple

from minirc import _checks


class Geometry(NamedTuple):
    """Kernel size, stride, padding and dilation, each (rows, columns); a tuple, so ``*geom`` passes 8 ints."""
    kh: int
    kw: int
    sh: int
    sw: int
    ph: int
    pw: int
    dh: int
    dw: int

    def out_size(self, h, w):
        """(Ho, Wo): torch's formula, floor division (taps that would overhang the padding are dropped)."""
        return ((h + 2 * self.ph - self.dh * (self.kh - 1) - 1) // self.sh + 1,
                (w + 2 * self.pw - self.dw * (self.kw - 1) - 1) // self.sw + 1)

    def is_pointwise(self):
        """A 1x1 kernel, stride 1, no padding: cols[n] *is* x[n].reshape(C, H*W), im2col is skipped."""
        return (self.kh, self.kw, self.sh, self.sw, self.ph, self.pw) == (1, 1, 1, 1, 0, 0)


def geometry(kernel_hw, stride, padding, dilation) -> Geometry:
    """Checked Geometry from torch-style int-or-pair arguments."""
    sh, sw = _checks.pair(stride, "stride", minimum=1)
    ph, pw = _checks.pair(padding, "padding", minimum=0)
    dh, dw = _checks.pair(dilation, "dilation", minimum=1)
    return Geometry(int(kernel_hw[0]), int(kernel_hw[1]), sh, sw, ph, pw, dh, dw)


def check_conv_inputs(x, w, b, name_x="input", name_w="weight", name_b="bias", channel_axis=1):
    """x (N, C, H, W) and w (., ., kh, kw) float arrays of one dtype with matching C; b (w.shape[...],) or None.

    channel_axis: the axis of w that must equal C (1 for conv2d, 0 for conv_transpose2d); the bias
    must match the other one.
    """
    x = _checks.as_array(x, name_x, ndim=4, float_only=True)
    w = _checks.as_array(w, name_w, ndim=4, float_only=True)
    _checks.same_dtype(x, w, name_x, name_w)
    if w.shape[channel_axis] != x.shape[1]:
        raise ValueError(f"{name_w}: expected {x.shape[1]} input channels (axis {channel_axis}) to match "
                         f"{name_x} of shape {tuple(x.shape)}, got {name_w} of shape {tuple(w.shape)}")
    if min(w.shape[2:]) < 1:
        raise ValueError(f"{name_w}: expected a kernel of at least 1x1, got shape {tuple(w.shape)}")
    if b is not None:
        b = _checks.as_array(b, name_b, ndim=1, float_only=True)
        _checks.same_dtype(x, b, name_x, name_b)
        n_out = w.shape[1 - channel_axis]
        if b.shape[0] != n_out:
            raise ValueError(f"{name_b}: expected shape ({n_out},), got {tuple(b.shape)}")
    return x, w, b


def check_grad_out(grad_out, x, expected, what):
    """grad_out: a float array of x's dtype and shape ``expected``, the output of ``what``."""
    g = _checks.as_array(grad_out, "grad_out", ndim=4, float_only=True)
    _checks.same_dtype(x, g, "input", "grad_out")
    if tuple(g.shape) != tuple(expected):
        raise ValueError(f"grad_out: expected shape {tuple(expected)} (the output of {what}), got {tuple(g.shape)}")
    return g


def output_size(x_shape, geom, name="input", out_channels=None):
    """(Ho, Wo) of a convolution of an input of shape ``x_shape``; ValueError when it would be empty.

    With ``out_channels`` (O), also the sizes the kernels allocate are checked (in Python ints,
    against ``_checks.MAX_ELEMENTS``): the padded input (N, C, H + 2ph, W + 2pw), the im2col
    columns (N, C, kh, kw, Ho, Wo) and the output (N, O, Ho, Wo).
    """
    ho, wo = geom.out_size(*x_shape[2:])
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"{name}: spatial size {tuple(x_shape[2:])} with padding {(geom.ph, geom.pw)} is smaller than "
            f"the dilated kernel {(geom.dh * (geom.kh - 1) + 1, geom.dw * (geom.kw - 1) + 1)}: "
            f"the output would be {(ho, wo)}")
    if out_channels is not None:
        n, c, h, w = (int(s) for s in x_shape)
        _checks.elements((n, c, h + 2 * geom.ph, w + 2 * geom.pw), "padding", "the padded input")
        _checks.elements((n, c, geom.kh, geom.kw, ho, wo), "stride", "the im2col columns")
        _checks.elements((n, int(out_channels), ho, wo), "padding", "the output")
    return ho, wo
