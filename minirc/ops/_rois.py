"""RoI arguments shared by roi_align and roi_pool: list-of-boxes -> (K, 5) rois, their checks, empty results.

``rois: (K, 5) [batch_index, x1, y1, x2, y2]`` in input-image pixels, or a list with one
``(L_i, 4)`` array of x1y1x2y2 boxes per image (the list position becomes the batch index), as in
torchvision's ``convert_boxes_to_roi_format``. The batch index is truncated to an int, as the C++
kernels do (``int roi_batch_ind = offset_rois[0]``).
"""
from __future__ import annotations

import numpy as np

from minirc import _checks
from minirc.cuda_utils import is_device_array, to_device, to_host


def convert_boxes_to_roi_format(boxes, dtype=np.float32, name: str = "boxes") -> np.ndarray:
    """A list of per-image ``(L_i, 4)`` boxes -> ``(sum L_i, 5)`` rois with the image index first."""
    parts = []
    for i, b in enumerate(boxes):
        b = _checks.as_array(to_host(b), f"{name}[{i}]", ndim=2, last_dim=4, allow_device=False)
        idx = np.full((b.shape[0], 1), i, dtype=dtype)
        parts.append(np.concatenate([idx, b.astype(dtype, copy=False)], axis=1))
    if not parts:
        return np.zeros((0, 5), dtype=dtype)
    return np.ascontiguousarray(np.concatenate(parts, axis=0))


def check_rois(boxes, num_images: int, dtype, name: str = "boxes"):
    """Host ``(K, 5)`` rois in ``dtype`` and their ``(K,)`` int64 batch indices, checked.

    Raises ValueError for a wrong shape, non-finite coordinates or a batch index outside
    ``[0, num_images)`` (torchvision reads out of bounds there; we refuse).
    torchvision requires rois and input to share a dtype; minirc casts the rois to the input's.
    """
    if isinstance(boxes, (list, tuple)):
        rois = convert_boxes_to_roi_format(boxes, dtype, name)
    else:
        rois = _checks.as_array(to_host(boxes), name, allow_device=False)
        if rois.ndim != 2 or rois.shape[1] != 5:
            raise ValueError(f"{name}: expected a (K, 5) array [batch_index, x1, y1, x2, y2] or a list "
                             f"of (L, 4) arrays, got an array of shape {tuple(rois.shape)}")
        rois = np.ascontiguousarray(rois, dtype=dtype)
    _checks.check_finite(rois, name)
    batch = np.trunc(rois[:, 0]).astype(np.int64)
    bad = np.flatnonzero((batch < 0) | (batch >= num_images))
    if bad.size:
        k = int(bad[0])
        raise ValueError(f"{name}: batch index (column 0) must lie in [0, {num_images}) for an input of "
                         f"{num_images} image(s); roi {k} has {rois[k, 0]!r} ({bad.size} bad roi(s))")
    return rois, batch


def check_spatial_scale(spatial_scale) -> float:
    """spatial_scale (feature size / image size) as a float, checked: finite and > 0."""
    scale = _checks.number(spatial_scale, "spatial_scale", low=0.0)
    if scale == 0.0 or not np.isfinite(scale):
        raise ValueError(f"spatial_scale: expected a finite number > 0, got {spatial_scale!r}")
    return scale


def check_pool_args(input, output_size, spatial_scale):
    """Common checks: input (N, C, H, W) float, output_size int or pair >= 1, spatial_scale > 0."""
    input = _checks.as_array(input, "input", ndim=4, float_only=True)
    ph, pw = _checks.pair(output_size, "output_size", minimum=1)
    return input, (ph, pw), check_spatial_scale(spatial_scale)


def check_backward_args(grad_output, boxes, input_shape):
    """A pooling backward's grad_output (K, C, PH, PW), boxes and input_shape (N, C, H, W), checked together.

    Returns (grad_output, input_shape as ints, rois, batch) with rois and batch as :func:`check_rois`.
    """
    grad_output = _checks.as_array(grad_output, "grad_output", ndim=4, float_only=True)
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 4 or input_shape[1] != grad_output.shape[1] or min(input_shape) < 0:
        raise ValueError(f"input_shape: expected (N, C, H, W) >= 0 with C = grad_output.shape[1] = "
                         f"{grad_output.shape[1]}, got {input_shape}")
    _checks.elements(input_shape, "input_shape", "the gradient (N, C, H, W)")
    rois, batch = check_rois(boxes, input_shape[0], grad_output.dtype)
    if len(rois) != grad_output.shape[0]:
        raise ValueError(f"grad_output: expected {len(rois)} rois (one per box), "
                         f"got shape {tuple(grad_output.shape)}")
    return grad_output, input_shape, rois, batch


def zeros_like_input(shape, dtype, like):
    """Zeros (an empty result), on the device when ``like`` is a device array: no kernel is launched."""
    out = np.zeros(shape, dtype=dtype)
    return to_device(out) if is_device_array(like) else out
