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

``state_dict()`` holds the momentum buffers and the hyper-parameters of every group (lr included, so
a schedule's current value is restored); ``load_state_dict`` makes a resumed run bit-identical.
"""
from __future__ import annotations

import copy

import numpy as np

from minirc import _checks
from minirc.autograd import Tensor
from minirc.cuda_utils import to_host

DEFAULTS = ("lr", "momentum", "dampening", "weight_decay", "nesterov")


def _axpy(a, alpha, b):
    """``a + alpha * b`` rounded once to a's dtype (torch's fused ``add(a, b, alpha=alpha)``)."""
    if a.dtype == np.float64:
        return a + alpha * b
    alpha = float(a.dtype.type(alpha))  # torch casts the scalar to the tensor's dtype first
    return (a.astype(np.float64) + alpha * b.astype(np.float64)).astype(a.dtype)


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
                p.grad = None if set_to_none or p.grad is None else np.zeros_like(p.grad)

    def step(self) -> None:
        """One update of every parameter that has a gradient (the arrays change in place)."""
        for group in self.param_groups:
            lr, m, d = group["lr"], group["momentum"], group["dampening"]
            wd, nesterov = group["weight_decay"], group["nesterov"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                w = p.data
                g = np.asarray(to_host(p.grad), dtype=w.dtype)
                if g.shape != w.shape:
                    raise ValueError(f"grad: expected the parameter's shape {w.shape}, got {g.shape}")
                if wd != 0:
                    g = _axpy(g, wd, w)
                if m != 0:
                    state = self.state.setdefault(id(p), {})
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = g.copy()
                    else:
                        buf = _axpy(buf * w.dtype.type(m), 1 - d, g) if d != 0 else buf * w.dtype.type(m) + g
                    state["momentum_buffer"] = buf
                    g = _axpy(g, m, buf) if nesterov else buf
                w[...] = _axpy(w, -lr, g)

    # ----- checkpointing ------------------------------------------------------------------------
    def _index(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self) -> dict:
        """``{"state": {i: {"momentum_buffer": array}}, "param_groups": [{..., "params": [i, ...]}]}``,
        parameters numbered in group order (torch's layout); arrays are copies."""
        index = {id(p): i for i, p in enumerate(self._index())}
        state = {index[pid]: {k: np.array(v, copy=True) for k, v in s.items()}
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
            self.state[id(p)] = {"momentum_buffer": buf}
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
