"""Differentiable losses with ``torch.nn.functional``'s names: smooth L1, BCE with logits, cross-entropy.

``input`` and ``target`` may be Tensors or arrays; the gradient flows to ``input`` only (targets
are constants in Mask R-CNN). ``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"``.

The empty case follows torch: ``reduction="mean"`` over zero elements returns NaN (0 / 0), and its
backward gives an empty gradient; ``"sum"`` over zero elements returns 0. The detector never
averages an empty set: torchvision divides the box losses by the number of *sampled* anchors or
RoIs, and returns ``mask_logits.sum() * 0`` when an image batch has no positive RoI.

Per-element kernels: :mod:`minirc.ops.losses`. On ``"cuda"`` with a device ``input`` everything
stays on the device: the (host) target is uploaded once in the forward and saved there for the
backward, the reduction to a scalar and the upstream gradient of the backward are device arrays.
"""
from __future__ import annotations

import numpy as np

from minirc import _checks
from minirc.autograd import Function, Tensor
from minirc.backend import get_backend
from minirc.cuda_utils import array_module, is_device_array, to_device, to_host
from minirc.ops import losses as _ops
from minirc.ops.losses._common import check_input_target
from minirc.ops.losses.cross_entropy import check_logits_classes


def _constant(a):
    return a.data if isinstance(a, Tensor) else a


def _checked_target(check, x, t):
    """The target as ``check(x, t)`` returns it (checked and cast on the host), moved to the device when
    the input is there: uploaded once in the forward, reused by the backward."""
    t = check(x, t)[1]
    return to_device(t) if is_device_array(x) and not is_device_array(t) else t


def _save_and_reduce(ctx, per_element, *saved):
    """The end of every loss forward: keep what the backward needs, then reduce as asked."""
    ctx.save_for_backward(*saved)
    ctx.dtype = per_element.dtype
    return _ops.reduce_loss(per_element, ctx.reduction)


def _upstream(ctx, grad_out, count):
    """The gradient each element receives from the reduction: per element for "none", else one value
    (``g`` for "sum", ``g / count`` for "mean", as torch's mean backward)."""
    if ctx.reduction == "none":
        return grad_out
    if is_device_array(grad_out):  # stays on the device; the division takes the count by value
        g = grad_out.reshape(1)
        return array_module(g).divide(g, ctx.dtype.type(max(count, 1))) if ctx.reduction == "mean" else g
    g = np.asarray(to_host(grad_out), dtype=ctx.dtype).reshape(1)
    if ctx.reduction == "mean":
        g = g / ctx.dtype.type(max(count, 1))
    return g


class SmoothL1Loss(Function):
    @staticmethod
    def forward(ctx, x, t, beta, reduction):
        ctx.backend, ctx.beta, ctx.reduction = get_backend(), beta, reduction
        t = _checked_target(check_input_target, x, t)
        per_element = _ops.smooth_l1_loss(x, t, beta, backend=ctx.backend)
        return _save_and_reduce(ctx, per_element, x, t)

    @staticmethod
    def backward(ctx, grad_out):
        x, t = ctx.saved
        g = _upstream(ctx, grad_out, int(np.prod(x.shape)))
        return _ops.smooth_l1_loss_backward(g, x, t, ctx.beta, backend=ctx.backend), None, None, None


class BCEWithLogits(Function):
    @staticmethod
    def forward(ctx, x, z, reduction):
        ctx.backend, ctx.reduction = get_backend(), reduction
        z = _checked_target(check_input_target, x, z)
        per_element = _ops.binary_cross_entropy_with_logits(x, z, backend=ctx.backend)
        return _save_and_reduce(ctx, per_element, x, z)

    @staticmethod
    def backward(ctx, grad_out):
        x, z = ctx.saved
        g = _upstream(ctx, grad_out, int(np.prod(x.shape)))
        return _ops.binary_cross_entropy_with_logits_backward(g, x, z, backend=ctx.backend), None, None


class CrossEntropy(Function):
    @staticmethod
    def forward(ctx, x, t, reduction):
        ctx.backend, ctx.reduction = get_backend(), reduction
        t = _checked_target(check_logits_classes, x, t)
        per_row, lse = _ops.cross_entropy(x, t, backend=ctx.backend)
        return _save_and_reduce(ctx, per_row, x, t, lse)

    @staticmethod
    def backward(ctx, grad_out):
        x, t, lse = ctx.saved
        g = _upstream(ctx, grad_out, x.shape[0])
        return _ops.cross_entropy_backward(g, x, t, lse, backend=ctx.backend), None, None


def _reduction(reduction):
    return _checks.one_of(reduction, "reduction", _ops.REDUCTIONS)


def smooth_l1_loss(input, target, beta=1.0, reduction="mean"):
    """``0.5 d^2 / beta`` where ``|d| < beta``, else ``|d| - 0.5 beta``, with ``d = input - target``.

    input, target: same shape, float; beta >= 0 (0 gives the L1 loss, as torch). Returns a scalar
    Tensor for "mean"/"sum", input's shape for "none".
    """
    return SmoothL1Loss.apply(input, _constant(target), beta, _reduction(reduction))


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """``max(x, 0) - x z + log(1 + exp(-|x|))`` for logits x and targets z in [0, 1] (same shape).

    Finite for any finite logit (``x = +-100`` included); gradient ``sigmoid(x) - z``.
    """
    return BCEWithLogits.apply(input, _constant(target), _reduction(reduction))


def cross_entropy(input, target, reduction="mean"):
    """``logsumexp(x_r) - x_r[t_r]`` for logits (R, K) and int class indices (R,) in [0, K).

    Every target counts (no ``ignore_index``). "mean" divides by R, as torch without weights.
    """
    return CrossEntropy.apply(input, _constant(target), _reduction(reduction))
