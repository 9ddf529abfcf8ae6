"""NumPy-like array math on Numba CUDA device arrays, so the autograd tape can stay on the GPU.

On the ``"cuda"`` backend a :class:`~minirc.Tensor` holds a Numba device array. The layers
(:mod:`minirc.ops`) take and return device arrays; the glue between them -- adding the FPN's
top-down path, flattening RPN outputs, gathering sampled anchors, concatenating levels, summing
losses -- is the small set of functions below, each one ``@cuda.jit`` kernel with one thread per
output element. :mod:`minirc.tensor_math` calls them instead of NumPy when its inputs live on the
device (see :func:`array_module`).

Index arithmetic: every kernel works on C-contiguous arrays seen as flat vectors. Broadcasting is
done with *element strides*: an operand's stride is 0 along an axis it is broadcast over, so output
element ``i`` (unravelled to a multi-index) reads ``a[sum_d idx_d * stride_a[d]]``.

Launch metadata (shapes, strides) never travels as a NumPy kernel argument: Numba would copy such an
array to the GPU before the launch *and back* after it, a hidden synchronising round trip per op.
Small int64 tuples are uploaded once and cached (:func:`constant`); scalars are passed by value.

Gathers with repeated indices (``x[[0, 0, 1]]``) have a deterministic backward: the host sorts the
(small) index array once, and each source element sums its contributions in that fixed order -- no
atomics, so two backward passes are bit-identical.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from minirc.cuda_utils import blocks_for, c_order, is_device_array

# op codes for the elementwise kernels
ADD, SUB, MUL, DIV = 0, 1, 2, 3
NEG, EXP, LOG, POW = 0, 1, 2, 3


@cuda.jit(device=True)
def _apply_binary(op, x, y):
    """x (op) y for one pair of elements: the arithmetic of both binary kernels."""
    if op == ADD:
        return x + y
    if op == SUB:
        return x - y
    if op == MUL:
        return x * y
    return x / y


@cuda.jit
def _binary_kernel(op, a, a_strides, b, b_strides, out_shape, out):
    i = cuda.grid(1)
    if i < out.size:
        rem, ia, ib = i, 0, 0
        for d in range(out_shape.size - 1, -1, -1):  # unravel i (C order), accumulate strided offsets
            k = rem % out_shape[d]
            rem //= out_shape[d]
            ia += k * a_strides[d]
            ib += k * b_strides[d]
        out[i] = _apply_binary(op, a[ia], b[ib])


@cuda.jit
def _binary_scalar_kernel(op, a, s, reverse, out):
    """out = a (op) s, or s (op) a when ``reverse``; the scalar s arrives by value (no upload)."""
    i = cuda.grid(1)
    if i < out.size:
        out[i] = _apply_binary(op, s, a[i]) if reverse else _apply_binary(op, a[i], s)


@cuda.jit
def _fill_kernel(out, value):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = value


@cuda.jit
def _unary_kernel(op, p, a, out):
    i = cuda.grid(1)
    if i < out.size:
        x = a[i]
        if op == NEG:
            out[i] = -x
        elif op == EXP:
            out[i] = math.exp(x)
        elif op == LOG:
            out[i] = math.log(x)
        else:
            out[i] = x ** p


@cuda.jit
def _strided_copy_kernel(a, a_strides, out_shape, out):
    """out (contiguous) = a viewed through element strides: transpose, broadcast_to, repeat."""
    i = cuda.grid(1)
    if i < out.size:
        rem, ia = i, 0
        for d in range(out_shape.size - 1, -1, -1):
            k = rem % out_shape[d]
            rem //= out_shape[d]
            ia += k * a_strides[d]
        out[i] = a[ia]


@cuda.jit
def _sum_kernel(a, outer, inner, reduced, out):
    """a seen as (outer, reduced, inner); one thread per (outer, inner) sums over `reduced` serially."""
    i = cuda.grid(1)
    if i < outer * inner:
        o, n = i // inner, i % inner
        acc = a[0] * 0
        base = o * reduced * inner + n
        for r in range(reduced):
            acc += a[base + r * inner]
        out[i] = acc


@cuda.jit
def _max_kernel(a, outer, inner, reduced, out):
    """Like _sum_kernel, with max; ``reduced`` >= 1."""
    i = cuda.grid(1)
    if i < outer * inner:
        o, n = i // inner, i % inner
        base = o * reduced * inner + n
        acc = a[base]
        for r in range(1, reduced):
            v = a[base + r * inner]
            if v > acc:
                acc = v
        out[i] = acc


@cuda.jit
def _block_copy_kernel(count, src, src_row, src_offset, dst_row, dst_offset, row, out):
    """Copy ``row`` elements of every row: out[o*dst_row + dst_offset + r] = src[o*src_row + src_offset + r].

    Concatenation along an axis writes each part into a column band of the output seen as
    (outer, total * inner); splitting reads the bands back. One thread per copied element (count).
    """
    i = cuda.grid(1)
    if i < count:
        o, r = i // row, i % row
        out[o * dst_row + dst_offset + r] = src[o * src_row + src_offset + r]


@cuda.jit
def _gather_kernel(a, index, out):
    i = cuda.grid(1)
    if i < out.size:
        out[i] = a[index[i]]


@cuda.jit
def _scatter_sum_kernel(g, order, starts, targets, out):
    """out[targets[t]] = sum of g[order[starts[t]:starts[t+1]]]; one thread per distinct target."""
    t = cuda.grid(1)
    if t < targets.size:
        acc = g[0] * 0
        for j in range(starts[t], starts[t + 1]):
            acc += g[order[j]]
        out[targets[t]] = acc


def _launch(kernel, n, *args):
    if n:
        kernel[blocks_for(n), 256](*args)


_CONSTS: dict = {}


def constant(values):
    """A cached read-only device copy of small ints (shapes, strides, index tables) as int64.

    Uploaded once per distinct content; the result must never be written to.
    """
    key = tuple(int(v) for v in values)
    arr = _CONSTS.get(key)
    if arr is None:
        if len(_CONSTS) >= 4096:  # a bound, not a tuning knob: models use a few hundred shapes
            _CONSTS.clear()
        arr = _CONSTS[key] = cuda.to_device(np.asarray(key, dtype=np.int64))
    return arr


def _flat(a):
    if not a.is_c_contiguous():
        raise ValueError(f"expected a C-contiguous device array, got strides {a.strides}")
    return a.reshape(a.size) if a.ndim != 1 else a


def _as_device(x, dtype):
    if is_device_array(x):
        return x
    return cuda.to_device(c_order(np.asarray(x, dtype=dtype)))


def _element_strides(shape, out_shape):
    """C-order element strides of `shape` aligned to `out_shape`, 0 where broadcast (a tuple)."""
    shape = tuple(shape)  # the simulator's shape objects do not take negative indices
    strides, step = [0] * len(out_shape), 1
    for d in range(1, len(shape) + 1):
        n = shape[-d]
        strides[-d] = step if n != 1 else 0
        step *= n
    return tuple(strides)


def _scalar(x):
    """The Python number in ``x`` when it is a host scalar or a one-element host array, else None."""
    if is_device_array(x):
        return None
    x = np.asarray(x)
    return x.reshape(()).item() if x.size == 1 else None


def zeros(shape, dtype):
    return fill(cuda.device_array(tuple(shape), dtype=dtype), 0)


def fill(out, value):
    _launch(_fill_kernel, out.size, _flat(out), out.dtype.type(value))
    return out


def binary(op, a, b):
    """Elementwise a (op) b with NumPy broadcasting; a or b may be a scalar or host array.

    A host scalar (or one-element host array) goes to the kernel by value: ``loss * 0.5`` uploads nothing.
    """
    dtype = (a if is_device_array(a) else b).dtype
    for scalar, dev, reverse in ((_scalar(b), a, False), (_scalar(a), b, True)):
        if scalar is not None and is_device_array(dev) and np.ndim(a if reverse else b) <= dev.ndim:
            out = cuda.device_array(tuple(dev.shape), dtype=dtype)
            _launch(_binary_scalar_kernel, out.size, op, _flat(dev), dtype.type(scalar), reverse, _flat(out))
            return out
    a, b = _as_device(a, dtype), _as_device(b, dtype)
    out_shape = tuple(np.broadcast_shapes(tuple(a.shape), tuple(b.shape)))
    out = cuda.device_array(out_shape, dtype=dtype)
    shape = out_shape or (1,)
    _launch(_binary_kernel, out.size, op, _flat(a), constant(_element_strides(a.shape, shape)),
            _flat(b), constant(_element_strides(b.shape, shape)), constant(shape), _flat(out))
    return out


def unary(op, a, p=1.0):
    out = cuda.device_array(a.shape, dtype=a.dtype)
    _launch(_unary_kernel, a.size, op, p, _flat(a), _flat(out))
    return out


def transpose(a, axes):
    """A contiguous copy of ``np.transpose(a, axes)``."""
    axes = tuple(int(x) % a.ndim for x in axes)
    out_shape = tuple(tuple(a.shape)[d] for d in axes)
    src = _element_strides(a.shape, a.shape)
    out = cuda.device_array(out_shape, dtype=a.dtype)
    _launch(_strided_copy_kernel, out.size, _flat(a), constant([src[d] for d in axes] or [0]),
            constant(out_shape or (1,)), _flat(out))
    return out


def broadcast_to(a, shape):
    shape = tuple(int(n) for n in shape)
    out = cuda.device_array(shape, dtype=a.dtype)
    _launch(_strided_copy_kernel, out.size, _flat(a), constant(_element_strides(a.shape, shape or (1,))),
            constant(shape or (1,)), _flat(out))
    return out


def reshape(a, shape):
    return a.reshape(tuple(shape))


def _reduce(kernel, a, axis, keepdims, identity, what):
    """Reduce ``a`` over ``axis`` (None, an int or a tuple) one axis at a time, the last first, each
    with ``kernel`` (a strided serial reduction, one thread per kept element). ``identity``: the result
    over a zero-size axis (0 for a sum); None where there is none (max), which raises ValueError."""
    axes = range(a.ndim) if axis is None else ((axis,) if np.isscalar(axis) else axis)
    axes = sorted({int(x) % max(a.ndim, 1) for x in axes}, reverse=True)
    out = a
    for d in axes:
        shape = tuple(out.shape)
        if shape[d] == 0 and identity is None:
            raise ValueError(f"{what}: zero-size axis {d} of shape {shape}: the {what} of no values is undefined")
        outer, inner = int(np.prod(shape[:d])), int(np.prod(shape[d + 1:]))
        new = cuda.device_array(shape[:d] + (1,) + shape[d + 1:], dtype=a.dtype)
        if shape[d] == 0:
            fill(new, identity)
        else:
            _launch(kernel, outer * inner, _flat(out), outer, inner, shape[d], _flat(new))
        out = new
    if not keepdims:
        out = out.reshape(tuple(n for i, n in enumerate(out.shape) if i not in axes))
    return out


def reduce_sum(a, axis=None, keepdims=False):
    """Sum over ``axis`` (None, an int or a tuple), one axis at a time (each a strided serial sum)."""
    return _reduce(_sum_kernel, a, axis, keepdims, identity=0, what="sum")


def reduce_max(a, axis=None, keepdims=False):
    """Max over ``axis`` (None, an int or a tuple), one axis at a time; every reduced axis must be non-empty."""
    return _reduce(_max_kernel, a, axis, keepdims, identity=None, what="max")


def flat_index(shape, index) -> np.ndarray:
    """Host computation of the flat source positions that ``x[index]`` reads (int64)."""
    return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)[index]


def gather(a, positions: np.ndarray):
    """out.flat[i] = a.flat[positions.flat[i]]; out has positions' shape."""
    out = cuda.device_array(positions.shape, dtype=a.dtype)
    _launch(_gather_kernel, out.size, _flat(a), cuda.to_device(c_order(positions.ravel())), _flat(out))
    return out


def scatter_sum(g, positions: np.ndarray, shape):
    """The adjoint of :func:`gather`: out.flat[p] = sum of g.flat[j] over j with positions.flat[j] == p."""
    pos = positions.ravel()
    order = np.argsort(pos, kind="stable")  # fixed summation order: deterministic
    targets, starts = np.unique(pos[order], return_index=True)
    starts = np.append(starts, pos.size).astype(np.int64)
    out = zeros(shape, g.dtype)
    _launch(_scatter_sum_kernel, targets.size, _flat(g), cuda.to_device(order.astype(np.int64)),
            cuda.to_device(starts), cuda.to_device(targets.astype(np.int64)), _flat(out))
    return out


def _rows(shape, axis):
    """(outer, inner): the sizes before and after ``axis``; an array is (outer, shape[axis] * inner) rows."""
    return int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1:]))


def concatenate(arrays, axis=0):
    """Concatenate device arrays along ``axis``: each part fills its column band of the output."""
    shapes = [tuple(a.shape) for a in arrays]
    axis = axis % len(shapes[0])
    out_shape = list(shapes[0])
    out_shape[axis] = int(np.sum([s[axis] for s in shapes]))
    out = cuda.device_array(tuple(out_shape), dtype=arrays[0].dtype)
    _, inner = _rows(out_shape, axis)
    dst_row, start = out_shape[axis] * inner, 0
    for a, shape in zip(arrays, shapes):
        row = shape[axis] * inner
        _launch(_block_copy_kernel, a.size, a.size, _flat(a), row, 0, dst_row, start * inner, row, _flat(out))
        start += shape[axis]
    return out


def split(a, sizes, axis=0):
    """Inverse of :func:`concatenate`: contiguous parts of ``a`` along ``axis``."""
    shape = tuple(a.shape)
    axis = axis % a.ndim
    _, inner = _rows(shape, axis)
    parts, start = [], 0
    for n in sizes:
        part_shape = shape[:axis] + (int(n),) + shape[axis + 1:]
        part = cuda.device_array(part_shape, dtype=a.dtype)
        row = int(n) * inner
        _launch(_block_copy_kernel, part.size, part.size, _flat(a), shape[axis] * inner, start * inner, row, 0,
                row, _flat(part))
        start += int(n)
        parts.append(part)
    return parts


class DeviceNumpy:
    """The subset of NumPy's names that :mod:`minirc.tensor_math` uses, for device arrays."""

    add = staticmethod(lambda a, b: binary(ADD, a, b))
    subtract = staticmethod(lambda a, b: binary(SUB, a, b))
    multiply = staticmethod(lambda a, b: binary(MUL, a, b))
    divide = staticmethod(lambda a, b: binary(DIV, a, b))
    negative = staticmethod(lambda a: unary(NEG, a))
    exp = staticmethod(lambda a: unary(EXP, a))
    log = staticmethod(lambda a: unary(LOG, a))
    power = staticmethod(lambda a, p: unary(POW, a, float(p)))
    sum = staticmethod(reduce_sum)
    max = staticmethod(reduce_max)
    reshape = staticmethod(reshape)
    transpose = staticmethod(transpose)
    broadcast_to = staticmethod(broadcast_to)
    concatenate = staticmethod(concatenate)
    zeros = staticmethod(zeros)

    @staticmethod
    def swapaxes(a, i, j):
        axes = list(range(a.ndim))
        axes[i], axes[j] = axes[j], axes[i]
        return transpose(a, axes)

    @staticmethod
    def matmul(a, b):
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul on the cuda backend takes 2-D arrays, got shapes {a.shape} and {b.shape}")
        from minirc.ops.matmul import matmul

        return matmul(a, b, backend="cuda")

    @staticmethod
    def split(a, cuts, axis=0):
        bounds = [0, *[int(c) for c in cuts], tuple(a.shape)[axis]]
        return split(a, [hi - lo for lo, hi in zip(bounds[:-1], bounds[1:])], axis)


device_numpy = DeviceNumpy()
