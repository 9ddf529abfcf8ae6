"""A small tape-based autograd: :class:`Tensor`, :class:`Function` and :func:`no_grad`.

micrograd lifted to arrays. Every differentiable op is a :class:`Function` subclass whose
``forward(ctx, *args)`` computes an array and saves on ``ctx`` what the backward needs, and whose
``backward(ctx, grad_out)`` returns one gradient per positional argument (``None`` for arguments that
are not tensors or need no gradient). The two are written next to each other, op by op.

Calling ``Fn.apply(*args)`` runs ``forward`` on the raw arrays and, when any input tensor requires
a gradient (and grad mode is on), records a node that links the output to its inputs.
``loss.backward()`` walks the recorded graph in reverse topological order and applies the chain
rule. Gradients **accumulate** (``+=``): a tensor used twice (the FPN features feed both the RPN
and the RoI heads) receives the sum of both contributions, and leaf ``.grad`` accumulates across
``backward`` calls until it is reset, as in PyTorch.

Non-differentiable steps of Mask R-CNN (anchors, matching, sampling, NMS, proposal decoding, mask
targets) stay plain NumPy outside the tape: proposals are constants, as in torchvision.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from minirc.cuda_utils import array_module, is_device_array, to_device, to_host

_state = threading.local()


def is_grad_enabled() -> bool:
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Inside this block no graph is recorded (inference, optimizer updates)."""
    previous = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = previous


class Context:
    """Scratch space a Function's forward fills for its backward (``ctx.saved``, any attribute)."""

    def save_for_backward(self, *arrays):
        self.saved = arrays


class _Node:
    __slots__ = ("fn", "ctx", "parents")

    def __init__(self, fn, ctx, parents):
        self.fn, self.ctx, self.parents = fn, ctx, parents


class Function:
    """Base class of differentiable ops. Never instantiated: a subclass defines two static methods,

    * ``forward(ctx, *args, **kwargs)``: the output array, computed from raw arrays (Tensors unwrapped);
    * ``backward(ctx, grad_out)``: one gradient per positional argument of ``forward`` (``None`` for
      arguments that are not tensors or need no gradient),

    and is called as ``Fn.apply(*args)``. A subclass missing either is refused when it is defined.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        missing = [name for name in ("forward", "backward") if not callable(getattr(cls, name, None))]
        if missing:
            raise TypeError(f"Function subclass {cls.__name__} must define static methods "
                            f"forward(ctx, *args) and backward(ctx, grad_out); missing: {', '.join(missing)}")

    @classmethod
    def apply(cls, *args, **kwargs):
        raw = [a.data if isinstance(a, Tensor) else a for a in args]
        ctx = Context()
        ctx.needs_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in args)
        out = cls.forward(ctx, *raw, **kwargs)
        track = is_grad_enabled() and any(ctx.needs_grad)
        result = Tensor(out, requires_grad=track)
        if track:
            parents = tuple(a if isinstance(a, Tensor) else None for a in args)
            result._node = _Node(cls, ctx, parents)
        return result


def _add(a, b):
    return array_module(a, b).add(a, b)


def _topological_order(root: "Tensor") -> list:
    order, seen = [], set()
    stack = [(root, False)]
    while stack:  # iterative DFS: deep graphs (ResNet-50) would overflow Python's recursion limit
        t, expanded = stack.pop()
        if expanded:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._node is not None:
            for p in t._node.parents:
                if p is not None and p.requires_grad and id(p) not in seen:
                    stack.append((p, False))
    return order  # inputs before outputs


class Tensor:
    """An array with an optional gradient.

    data: a NumPy array (or a Numba CUDA device array on the ``"cuda"`` backend);
    grad: an array of the same shape once ``backward`` has reached it (leaves only), else ``None``.
    """

    __array_priority__ = 1000  # so ndarray + Tensor calls Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False):
        if isinstance(data, Tensor):
            data = data.data
        if not is_device_array(data):
            data = np.asarray(data)
            if data.dtype == object:
                raise TypeError("Tensor(data): expected a numeric array, got an object array")
        if requires_grad and not np.issubdtype(np.dtype(data.dtype), np.floating):
            raise TypeError(f"Tensor(requires_grad=True): only float tensors have gradients, got {data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._node = None

    # ----- array-like properties -------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: len(self.data.shape))
    size = property(lambda self: int(np.prod(self.data.shape)))
    is_leaf = property(lambda self: self._node is None)

    def __len__(self):
        return self.data.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (copied from the GPU when it lives there)."""
        return to_host(self.data)

    def item(self) -> float:
        return self.numpy().item()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def zero_grad(self):
        self.grad = None

    # ----- the backward pass ----------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` that requires a gradient.

        grad: the upstream gradient, same shape as ``self``; may be omitted for a single-element tensor.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require a gradient (no input had requires_grad=True)")
        if grad is None:
            if self.size != 1:
                raise ValueError(f"backward(grad): grad may be omitted only for a single-element tensor, got shape {self.shape}")
            grad = np.ones(self.shape, dtype=self.dtype)
        grad = grad.data if isinstance(grad, Tensor) else grad
        if is_device_array(self.data) and not is_device_array(grad):
            grad = to_device(np.asarray(grad, dtype=self.dtype))  # the seed gradient joins the data on the GPU
        if tuple(grad.shape) != tuple(self.shape):
            raise ValueError(f"backward(grad): expected shape {self.shape}, got {tuple(grad.shape)}")
        grads = {id(self): grad}
        for t in reversed(_topological_order(self)):
            g = grads.pop(id(t), None)
            if g is None:
                continue
            if t._node is None:
                # copy: one upstream array may reach several leaves (add returns it twice)
                t.grad = (g.copy() if isinstance(g, np.ndarray) else g) if t.grad is None else _add(t.grad, g)
                continue
            node = t._node
            in_grads = node.fn.backward(node.ctx, g)
            if not isinstance(in_grads, tuple):
                in_grads = (in_grads,)
            for parent, pg in zip(node.parents, in_grads):
                if parent is None or pg is None or not parent.requires_grad:
                    continue
                if tuple(pg.shape) != parent.shape:
                    raise RuntimeError(f"{node.fn.__name__}.backward returned a gradient of shape "
                                       f"{tuple(pg.shape)} for an input of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else _add(grads[key], pg)

    # ----- operators (defined in minirc.tensor_math, attached there) ---------------------------
