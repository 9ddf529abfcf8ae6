"""Stochastic gradient descent with momentum and weight decay, in ``torch.optim.SGD``'s exact order.

For each parameter ``p`` with a gradient ``g`` (parameters whose ``grad`` is None are skipped), with
``lr``, ``momentum`` m, ``dampening`` d, ``weight_decay`` wd of its group:

    g = g + wd * p                          # weight decay is added to the gradient (L2, not decoupled)
    b = g                  on the first step  (the buffer starts as a copy of g, no dampening)
    b = m * b + (1 - d) * g  afterwards
    g = g + m * b if nesterov else b
    p = p - lr * g

Arithmetic is in the parameter's dtype (float32), with the scalars rounded to it first. Each
``a + alpha * b`` with ``alpha != 1`` is rounded once, like the fused multiply-add of torch's
vectorised CPU ``add(a, b, alpha=...)``: the product of two float32 numbers is exact in float64,
so ``float32(float64(a) + float64(alpha) * float64(b))`` reproduces it (up to the rare double
rounding of the float64 sum).

Backends (the update is elementwise, so they agree bit for bit):

* ``"numpy"``: the update above in NumPy, one whole-array operation at a time (the reference);
* ``"cpu"`` (host arrays under any backend but ``"numpy"``): one fused Numba kernel per parameter that reads each
  element once and writes its weight and momentum buffer in place, with the same roundings;
* ``"cuda"`` (parameters moved with ``Module.to_device``, whatever the backend): one CUDA kernel per
  parameter, one thread per element, and the momentum buffers live on the device beside the weights.

The two kernels run one element function, :func:`_sgd_element`, compiled for each (as BatchNorm's
sums in :mod:`minirc.ops.batch_norm`), so they cannot drift apart.

``state_dict()`` holds the momentum buffers and the hyper-parameters of every group (lr included, so
a schedule's current value is restored); ``load_state_dict`` makes a resumed run bit-identical.
"""
from __future__ import annotations

import copy

import numpy as np
from numba import cuda, njit, prange

from minirc import _checks
from minirc.autograd import Tensor
from minirc.backend import get_backend
from minirc.cuda_utils import blocks_for, is_device_array, to_device, to_host, zeros_like

DEFAULTS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")
# the cpu kernel shares a parameter among Numba's threads from this many elements on (a parallel
# launch costs more than it saves on the small ones: biases, norms, the heads' last layers)
PARALLEL_MIN_SIZE = 2**16


def _axpy(a, alpha, b):
    """``a + alpha * b`` rounded once to a's dtype (torch's fused ``add(a, b, alpha=alpha)``)."""
    if a.dtype == np.float64:
        return a + alpha * b
    alpha = float(a.dtype.type(alpha))  # torch casts the scalar to the tensor's dtype first
    return (a.astype(np.float64) + alpha * b.astype(np.float64)).astype(a.dtype)


def _sgd_element(w, g, buf, i, neg_lr, m, one_minus_d, wd, nesterov, first):
    """One SGD update of element i, in the order and roundings of the NumPy update in :meth:`SGD.step`.

    ``T(float(a) + alpha * float(b))`` is :func:`_axpy`: the float64 product of two float32 numbers is
    exact, so only the final cast rounds (and a fused multiply-add, which a GPU compiler may form,
    gives the same bits). The scalars arrive already rounded to the weights' dtype. ``buf`` is
    written only where ``m != 0``.
    """
    T = type(w[i])
    wi = w[i]
    gi = g[i]
    if wd != 0:
        gi = T(float(gi) + wd * float(wi))
    if m != 0:
        if first:
            b = gi
        elif one_minus_d != 1:
            b = T(float(T(float(buf[i]) * m)) + one_minus_d * float(gi))
        else:
            b = T(float(buf[i]) * m) + gi
        buf[i] = b
        gi = T(float(gi) + m * float(b)) if nesterov else b
    w[i] = T(float(wi) + neg_lr * float(gi))


# inlined into the loop (Numba IR), which lets LLVM hoist the scalar branches and vectorise it:
# 4x faster than a call per element on 8192 float32 elements
_sgd_element_cpu = njit(cache=True, inline="always")(_sgd_element)
_sgd_element_cuda = cuda.jit(device=True)(_sgd_element)


@njit(cache=True)
def _sgd_cpu_kernel(w, g, buf, neg_lr, m, one_minus_d, wd, nesterov, first):
    for i in range(w.size):
        _sgd_element_cpu(w, g, buf, i, neg_lr, m, one_minus_d, wd, nesterov, first)


@njit(cache=True, parallel=True)
def _sgd_cpu_kernel_parallel(w, g, buf, neg_lr, m, one_minus_d, wd, nesterov, first):
    for i in prange(w.size):
        _sgd_element_cpu(w, g, buf, i, neg_lr, m, one_minus_d, wd, nesterov, first)


@cuda.jit
def _sgd_cuda_kernel(w, g, buf, neg_lr, m, one_minus_d, wd, nesterov, first):
    i = cuda.grid(1)
    if i < w.size:
        _sgd_element_cuda(w, g, buf, i, neg_lr, m, one_minus_d, wd, nesterov, first)


def _rounded(x, dtype):
    """A scalar as torch uses it: cast to the tensor's dtype first (a no-op for float64)."""
    return float(np.dtype(dtype).type(x))


def _step_cuda(w, g, state, lr, m, d, wd, nesterov):
    """The device twin of the host update below: w, g (and the momentum buffer) are device arrays."""
    n = int(np.prod(w.shape))
    buf = state.get("momentum_buffer") if m != 0 else None
    first = m != 0 and buf is None
    if first:
        buf = cuda.device_array(tuple(w.shape), dtype=w.dtype)
    elif buf is not None:
        buf = to_device(buf)
    if n:
        flat = (lambda a: a.reshape(n))
        _sgd_cuda_kernel[blocks_for(n), 256](flat(w), flat(g), flat(buf if buf is not None else g),
                                             _rounded(-lr, w.dtype), _rounded(m, w.dtype),
                                             _rounded(1 - d, w.dtype), _rounded(wd, w.dtype),
                                             bool(nesterov), bool(first))
    if m != 0:
        state["momentum_buffer"] = buf


def _step_numpy(w, g, state, lr, m, d, wd, nesterov):
    """The reference update of one host parameter w (in place) from its gradient g."""
    g = np.asarray(g, dtype=w.dtype)
    if wd != 0:
        g = _axpy(g, wd, w)
    if m != 0:
        buf = state.get("momentum_buffer")
        buf = None if buf is None else to_host(buf)  # a model moved back from the GPU
        if buf is None:
            buf = g.copy()
        else:
            buf = _axpy(buf * w.dtype.type(m), 1 - d, g) if d != 0 else buf * w.dtype.type(m) + g
        state["momentum_buffer"] = buf
        g = _axpy(g, m, buf) if nesterov else buf
    w[...] = _axpy(w, -lr, g)


def _step_cpu(w, g, state, lr, m, d, wd, nesterov):
    """The cpu twin of :func:`_step_numpy`: w (C-contiguous) and its momentum buffer change in place."""
    n = w.size
    g = np.ascontiguousarray(g, dtype=w.dtype).reshape(n)
    buf = state.get("momentum_buffer") if m != 0 else None
    first = m != 0 and buf is None
    if first:
        buf = np.empty(w.shape, dtype=w.dtype)
    elif buf is not None:
        buf = to_host(buf)  # a model moved back from the GPU
        if not (buf.dtype == w.dtype and buf.flags.c_contiguous and buf.flags.writeable):
            buf = np.array(buf, dtype=w.dtype)
    kernel = _sgd_cpu_kernel_parallel if n >= PARALLEL_MIN_SIZE else _sgd_cpu_kernel
    kernel(w.reshape(n), g, g if buf is None else buf.reshape(n), _rounded(-lr, w.dtype), _rounded(m, w.dtype),
           _rounded(1 - d, w.dtype), _rounded(wd, w.dtype), bool(nesterov), bool(first))
    if m != 0:
        state["momentum_buffer"] = buf


class SGD:
    """``SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)`` (torch's order).

    params: an iterable of Parameters, or of dicts ``{"params": [...], "lr": ..., ...}`` (param
    groups, each overriding the defaults it names).
    """

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.defaults = dict(lr=_checks.number(lr, "lr", low=0.0),
                             momentum=_checks.number(momentum, "momentum", low=0.0),
                             dampening=_checks.number(dampening, "dampening"),
                             weight_decay=_checks.number(weight_decay, "weight_decay", low=0.0),
                             nesterov=bool(nesterov))
        params = list(params)
        if not params:
            raise ValueError("params: expected at least one parameter, got an empty list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        self.state = {}  # id(param) -> {"momentum_buffer": array}
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group: dict) -> None:
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"param group: expected a dict with a 'params' list, got {group!r:.80}")
        unknown = set(group) - set(DEFAULTS) - {"params", "initial_lr"}
        if unknown:
            raise ValueError(f"param group: unknown option(s) {sorted(unknown)}; expected some of {DEFAULTS}")
        full = {**self.defaults, **group}
        full["params"] = list(group["params"]) if not isinstance(group["params"], Tensor) else [group["params"]]
        for p in full["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"params: expected Tensors/Parameters, got {type(p).__name__}")
        if full["nesterov"] and (full["momentum"] <= 0 or full["dampening"] != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0 (torch's rule)")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in full["params"]):
            raise ValueError("params: some parameters appear in more than one parameter group")
        self.param_groups.append(full)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None if set_to_none or p.grad is None else zeros_like(p.grad)

    def step(self) -> None:
        """One update of every parameter that has a gradient (the arrays change in place)."""
        fused = get_backend() != "numpy"  # host arrays: the cpu kernel unless the reference is asked for
        for group in self.param_groups:
            lr, m, d = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                w = p.data
                if tuple(p.grad.shape) != tuple(w.shape):
                    raise ValueError(f"grad: expected the parameter's shape {tuple(w.shape)}, "
                                     f"got {tuple(p.grad.shape)}")
                state = self.state.setdefault(id(p), {}) if m != 0 else {}
                if is_device_array(w):
                    if p.grad.dtype != w.dtype:
                        raise TypeError(f"grad: expected the parameter's dtype {w.dtype}, got {p.grad.dtype}")
                    _step_cuda(w, to_device(p.grad), state, lr, m, d, wd, nesterov)
                    continue
                g = to_host(p.grad)
                if fused and w.flags.c_contiguous and w.flags.writeable:
                    _step_cpu(w, g, state, lr, m, d, wd, nesterov)
                else:
                    _step_numpy(w, g, state, lr, m, d, wd, nesterov)

    # ----- checkpointing ------------------------------------------------------------------------
    def _index(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """``{"state": {i: {"momentum_buffer": array}}, "param_groups": [{..., "params": [i, ...]}]}``,
        parameters numbered in group order (torch's layout); arrays are copies."""
        index = {id(p): i for i, p in enumerate(self._index())}
        state = {index[pid]: {k: np.array(to_host(v), copy=True) for k, v in s.items()}
                 for pid, s in self.state.items() if pid in index}
        groups = []
        for group in self.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = [index[id(p)] for p in group["params"]]
            groups.append(g)
        return {"state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore buffers and hyper-parameters saved by :meth:`state_dict` for the same parameters."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if groups is None or "state" not in state_dict:
            raise ValueError("state_dict: expected a dict with 'state' and 'param_groups' (from SGD.state_dict())")
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError(f"state_dict: parameter groups of sizes {[len(g['params']) for g in groups]} do not "
                             f"match this optimizer's {[len(g['params']) for g in self.param_groups]}")
        params = self._index()
        self.state = {}
        for i, s in state_dict["state"].items():
            p = params[int(i)]
            buf = np.array(to_host(s["momentum_buffer"]), dtype=p.dtype, copy=True)
            if buf.shape != p.shape:
                raise ValueError(f"state_dict: momentum buffer {i} has shape {buf.shape}, its parameter {p.shape}")
            self.state[id(p)] = {"momentum_buffer": to_device(buf) if is_device_array(p.data) else buf}
        for mine, saved in zip(self.param_groups, groups):
            for k, v in saved.items():
                if k != "params":
                    mine[k] = copy.deepcopy(v)

    def __repr__(self):
        lines = [f"SGD ("]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}={g[k]}" for k in DEFAULTS)
            lines.append(f"  group {i}: {len(g['params'])} params, {opts}")
        return "\n".join(lines + [")"])
