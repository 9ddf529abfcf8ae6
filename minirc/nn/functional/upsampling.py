"""Differentiable nearest-neighbour resizing (``torch.nn.functional.interpolate``, ``mode="nearest"``).

Only torch's legacy ``"nearest"`` mode is offered -- the one the FPN top-down path uses:
``src = min(floor(dst * ratio), in - 1)`` (see :mod:`minirc.ops.interpolate` for the ratio rules).
The backward adds the gradients of all outputs that copied one input pixel.

(The file is not called ``interpolate.py``: a submodule named like the function it exports would
replace ``minirc.nn.functional.interpolate`` -- the function -- by the module once imported.)
"""
from __future__ import annotations

from minirc.autograd import Function
from minirc.backend import get_backend
from minirc.cuda_utils import is_device_array
from minirc.ops import interpolate as _ops

MODES = ("nearest",)


class InterpolateNearest(Function):
    @staticmethod
    def forward(ctx, x, size, scale_factor, recompute_scale_factor):
        ctx.backend = get_backend()
        ctx.args = (size, scale_factor, recompute_scale_factor)
        ctx.input_shape, ctx.dtype = tuple(x.shape), x.dtype
        return _ops.interpolate_nearest(x, size, scale_factor, recompute_scale_factor, backend=ctx.backend)

    @staticmethod
    def backward(ctx, grad_out):
        if not is_device_array(grad_out):
            grad_out = grad_out.astype(ctx.dtype, copy=False)
        grad_in = _ops.interpolate_nearest_backward(grad_out, ctx.input_shape, *ctx.args, backend=ctx.backend)
        return grad_in, None, None, None


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None):
    """Resize an (N, C, H, W) input to ``size`` (int or (OH, OW)) or by ``scale_factor`` (number or pair).

    Exactly one of ``size`` and ``scale_factor``. With ``scale_factor`` the output is
    ``floor(H * scale_factor)`` and the kernel uses ``1 / scale_factor`` unless
    ``recompute_scale_factor=True`` (then ``H / OH``), exactly as torch.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES} (the only mode minirc implements), got {mode!r}")
    if align_corners is not None:  # torch raises the same for the non-interpolating modes
        raise ValueError(f"align_corners: can only be set with interpolating modes, not mode={mode!r}; "
                         f"got {align_corners!r}")
    return InterpolateNearest.apply(input, size, scale_factor, recompute_scale_factor)
