"""Per-sample math of RoIAlign, shared by the CPU (``@njit``) and CUDA (``@cuda.jit``) kernels.

These are plain ``@njit`` functions: Numba compiles them into the CPU kernels and, as device
functions, into the CUDA kernels, so both fast backends run the very same arithmetic. The NumPy
reference in :mod:`minirc.ops.roi_align` spells the same steps out with arrays.

Bit-faithfulness to torchvision's CPU kernel (``roi_align_kernel.cpp``, ``roi_align_common.h``)
needs every operation in the input dtype ``T`` (float32 in the model) and in the kernel's order.
Numba would silently promote ``float32 * int64`` or ``float32 + 0.5`` to float64, so every integer
and literal is converted with ``T(...)`` first, where ``T = type(x)`` is the float type of the
arguments (float32 or float64; one compiled specialisation each). CUDA kernels call these
through :func:`for_cuda`.
"""
from __future__ import annotations

import math
import types

from numba import njit
from numba.core.dispatcher import Dispatcher

from minirc.backend import cuda_simulated


def for_cuda(fn):
    """``fn`` as the CUDA kernels call it.

    On a GPU, Numba compiles the ``@njit`` function into the kernel as a device function (and the
    ``@njit`` functions it calls with it). Under the simulator (``NUMBA_ENABLE_CUDASIM=1``) kernels
    run as Python, and calling a compiled CPU function would hand back Python floats (float64
    arithmetic from there on), so the kernels get the plain Python function instead, which keeps
    NumPy's float32 scalars float32, and so do the ``@njit`` functions it calls.
    """
    return _as_python(fn) if cuda_simulated() else fn


def _as_python(fn):
    """The Python function of the ``@njit`` function ``fn``, calling the Python functions of the ``@njit``
    functions it names. Its globals are a copy taken now: call for_cuda once the callees are defined."""
    py = fn.py_func
    env = dict(py.__globals__)
    for name in py.__code__.co_names:
        if isinstance(env.get(name), Dispatcher):
            env[name] = _as_python(env[name])
    return types.FunctionType(py.__code__, env, py.__name__, py.__defaults__, py.__closure__)


@njit(cache=True)
def align_roi_geometry(x1, y1, x2, y2, spatial_scale, aligned, sampling_ratio, pooled_h, pooled_w):
    """Where one RoI's bins start and how they are sampled (torchvision's per-roi preamble).

    x1..x2, spatial_scale: T scalars (the roi in image pixels, the feature-map scale);
    returns (start_h, start_w, bin_h, bin_w, grid_h, grid_w, count): T, T, T, T, int, int, T.
    """
    T = type(x1)
    # aligned=True moves the box by -0.5 so that continuous coordinate c sits between pixel
    # indices floor(c - 0.5) and ceil(c - 0.5) (detectron2's pixel model); never round.
    offset = T(0.5) if aligned else T(0.0)
    start_w = x1 * spatial_scale - offset
    start_h = y1 * spatial_scale - offset
    end_w = x2 * spatial_scale - offset
    end_h = y2 * spatial_scale - offset
    roi_w = end_w - start_w
    roi_h = end_h - start_h
    if not aligned:  # legacy: malformed (tiny or inverted) RoIs are forced to 1x1 cells
        roi_w = max(roi_w, T(1.0))
        roi_h = max(roi_h, T(1.0))
    bin_h = roi_h / T(pooled_h)
    bin_w = roi_w / T(pooled_w)
    if sampling_ratio > 0:
        grid_h = sampling_ratio
        grid_w = sampling_ratio
    else:  # adaptive: about one sample per feature cell, ceil of the (float) bin size
        grid_h = int(math.ceil(bin_h))
        grid_w = int(math.ceil(bin_w))
    # An aligned RoI of size <= 0 gets an empty grid (ceil(<=0) <= 0): no samples, output 0.
    count = T(max(grid_h * grid_w, 1))
    return start_h, start_w, bin_h, bin_w, grid_h, grid_w, count


@njit(cache=True)
def sample_coord(start, p, bin_size, i, grid):
    """Coordinate of sample i (of ``grid``) in bin p: start + p*bin + (i + 0.5)*bin/grid, in T.

    The parenthesisation is torchvision's: (start + p*bin) + (((i + .5) * bin) / grid).
    """
    T = type(start)
    return (start + T(p) * bin_size) + ((T(i) + T(0.5)) * bin_size) / T(grid)


@njit(cache=True)
def bilinear_neighbours(y, x, height, width):
    """The four pixels around (y, x) and their bilinear weights, with torchvision's border rules.

    y, x: T, in feature-map cells (value i sits at coordinate i: the shift of aligned=True is
    already in y and x). Returns (valid, y_low, x_low, y_high, x_high, w1, w2, w3, w4) with
    w1..w4 for (y_low, x_low), (y_low, x_high), (y_high, x_low), (y_high, x_high).

    * Outside [-1, H] x [-1, W] the sample is empty: valid=False, indices 0, weights 0 (the forward
      still reads pixel 0 with weight 0, as torchvision's CPU kernel does; the backward skips it).
    * Inside, there is no zero padding: coordinates in [-1, 0] clamp to 0 and those in
      [H-1, H] to H-1, so a sample just outside the map copies the border pixel.
    """
    T = type(y)
    zero = T(0.0)
    # Written as not(in range) so that NaN coordinates are empty too.
    if not (y >= -1.0 and y <= height and x >= -1.0 and x <= width):
        return False, 0, 0, 0, 0, zero, zero, zero, zero
    if y <= 0:
        y = zero
    if x <= 0:
        x = zero
    y_low = int(y)  # C's (int) truncation; y >= 0 here, so this is floor
    x_low = int(x)
    if y_low >= height - 1:
        y_low = height - 1
        y_high = y_low
        y = T(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = width - 1
        x_high = x_low
        x = T(x_low)
    else:
        x_high = x_low + 1
    ly = y - T(y_low)
    lx = x - T(x_low)
    hy = T(1.0) - ly
    hx = T(1.0) - lx
    return True, y_low, x_low, y_high, x_high, hy * hx, hy * lx, ly * hx, ly * lx
