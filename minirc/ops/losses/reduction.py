"""Reducing per-element losses to one value: ``"none"``, ``"mean"`` or ``"sum"``, as torch.

Reductions run where the losses are: NumPy on the host, :mod:`minirc.cuda_array` sums on the device
(the scalar loss stays a device array). A "mean" over zero elements is NaN, as in torch; a "sum"
over zero elements is 0.
"""
from __future__ import annotations

import numpy as np

from minirc import _checks
from minirc.cuda_utils import is_device_array

REDUCTIONS = ("none", "mean", "sum")


def reduce_loss(per_element, reduction):
    """``"none"``: unchanged; ``"sum"``: the sum; ``"mean"``: sum / count (NaN for zero elements, as torch).

    Returns a 0-d array for "sum" and "mean", in the loss's dtype, where the losses live: NumPy
    (pairwise sum) for host arrays, a device array (serial sums, one axis at a time) on the GPU, so a
    device loss stays on the device until someone asks for its value.
    """
    _checks.one_of(reduction, "reduction", REDUCTIONS)
    if reduction == "none":
        return per_element
    if is_device_array(per_element):
        from minirc import cuda_array

        total = cuda_array.reduce_sum(per_element)
        if reduction == "sum":
            return total
        return cuda_array.binary(cuda_array.DIV, total, per_element.dtype.type(per_element.size))
    host = np.asarray(per_element)
    total = host.sum(dtype=host.dtype)
    if reduction == "sum":
        return np.asarray(total, dtype=host.dtype)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 -> NaN, as torch's mean of nothing
        return np.asarray(total / host.dtype.type(host.size), dtype=host.dtype)
