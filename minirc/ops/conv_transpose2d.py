"""2-D transposed convolution (``torch.nn.functional.conv_transpose2d``), built from conv2d's kernels.

Shape shorthand: x (N, Cin, H, W), w (Cin, Cout, kh, kw) -- note the order, torch's --, b (Cout,),
y (N, Cout, Ho, Wo) with ``Ho = (H - 1) sh - 2 ph + dh (kh - 1) + output_padding + 1``::

    y[n, co, ih*sh - ph + i*dh, iw*sw - pw + j*dw] += x[n, ci, ih, iw] * w[ci, co, i, j]   (+ b[co])

Every input pixel *scatters* a weighted copy of the kernel into the output. That is exactly what
conv2d's input gradient does with grad_out, so nothing new is computed here:

* forward:  ``y  = conv2d_input_grad(g=x, w)``    (col2im of ``W^T @ x``, W = w.reshape(Cin, -1))
* backward: ``dx = conv2d(gy, w)``                  (the adjoint of the adjoint is the conv itself)
*           ``dw = conv2d_weight_grad(g=x, x=gy)``  (the same correlation, roles swapped)
*           ``db = gy summed over (N, Ho, Wo)``

The Mask R-CNN predictor uses kernel 2, stride 2, padding 0 (``conv5_mask``, 14x14 -> 28x28): the
2x2 footprints of neighbouring pixels do not overlap, so each output pixel has exactly one tap.
All three backends ("numpy", "cpu", "cuda") come from :func:`minirc.ops.conv2d.conv_kernels`.
"""
from __future__ import annotations

from minirc import _checks
from minirc.ops._conv_args import check_conv_inputs, check_grad_out, geometry, output_size
from minirc.ops.conv2d import conv_kernels


def _geometry_and_size(x, w, stride, padding, output_padding, dilation):
    geom = geometry(w.shape[2:], stride, padding, dilation)
    oph, opw = _checks.pair(output_padding, "output_padding", minimum=0)
    # torch allows output_padding < stride *or* < dilation; minirc needs < stride, so that the
    # conv of the output has exactly the input's size (the extra rows only pad the far edge)
    if oph >= geom.sh or opw >= geom.sw:
        raise ValueError(f"output_padding: expected values smaller than stride {(geom.sh, geom.sw)}, "
                         f"got {(oph, opw)}")
    h, wd = x.shape[2:]
    out_hw = ((h - 1) * geom.sh - 2 * geom.ph + geom.dh * (geom.kh - 1) + oph + 1,
              (wd - 1) * geom.sw - 2 * geom.pw + geom.dw * (geom.kw - 1) + opw + 1)
    if min(out_hw) <= 0:
        raise ValueError(f"padding: {(geom.ph, geom.pw)} crops the whole output of input size "
                         f"{(h, wd)} and kernel {tuple(w.shape[2:])}: output size would be {out_hw}")
    _checks.elements((x.shape[0], w.shape[1], *out_hw), "stride", "the output (N, Cout, Ho, Wo)")
    # the kernels are conv2d's input gradient: the output plays conv2d's input, x its output
    output_size((x.shape[0], w.shape[1], *out_hw), geom, "input", out_channels=w.shape[0])
    return geom, out_hw


def conv_transpose2d_forward(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                             backend=None):
    """y = conv_transpose2d(x, w, b): x (N, Cin, H, W), w (Cin, Cout, kh, kw), b (Cout,) or None.

    Returns (N, Cout, Ho, Wo) in the dtype of x (float32 or float64); stride >= 1, padding >= 0,
    0 <= output_padding < stride, dilation >= 1, each an int or an (h, w) pair.
    """
    x, w, b = check_conv_inputs(x, w, b, channel_axis=0)
    geom, out_hw = _geometry_and_size(x, w, stride, padding, output_padding, dilation)
    k = conv_kernels(backend)
    y = k.input_grad(k.wrap(x), k.wrap(w), out_hw, geom)
    if b is not None:
        y = k.add_bias(y, k.wrap(b))
    return k.unwrap(y, x, w, b)


def conv_transpose2d_backward(grad_out, x, w, stride=1, padding=0, output_padding=0, dilation=1,
                              need=(True, True, True), backend=None):
    """Gradients of conv_transpose2d: (dx (N, Cin, H, W), dw (Cin, Cout, kh, kw), db (Cout,)).

    grad_out: (N, Cout, Ho, Wo); need: which of (dx, dw, db) to compute, the others are None.
    """
    x, w, _ = check_conv_inputs(x, w, None, channel_axis=0)
    geom, out_hw = _geometry_and_size(x, w, stride, padding, output_padding, dilation)
    g = check_grad_out(grad_out, x, (x.shape[0], w.shape[1], *out_hw), "the transposed convolution")
    k = conv_kernels(backend)
    gs, xs, ws = k.wrap(g), k.wrap(x), k.wrap(w)
    dx = k.forward(gs, ws, geom) if need[0] else None
    dw = k.weight_grad(xs, gs, geom) if need[1] else None
    db = k.bias_grad(gs) if need[2] else None
    return tuple(None if r is None else k.unwrap(r, grad_out, x, w) for r in (dx, dw, db))
