"""``Module`` and ``Parameter``: PyTorch's module system, small (containers: :mod:`minirc.nn.containers`).

A :class:`Module` registers what is assigned to it: a :class:`Parameter` (a trainable Tensor) goes
to ``_parameters``, a Module to ``_modules``, an array declared with :meth:`Module.register_buffer`
to ``_buffers`` (constants saved with the model, such as FrozenBatchNorm's statistics). From these
registries come the dotted names torch uses -- ``backbone.body.layer1.0.conv1.weight`` -- so a
torchvision ``state_dict`` maps onto a minirc model key for key.

Device placement (the ``"cuda"`` backend): :meth:`Module.to_device` moves every parameter, gradient
and buffer onto the GPU as Numba device arrays, in place, and :meth:`Module.to_host` brings them back.
The Parameter objects themselves stay the same, so an optimizer built earlier keeps its references.
``state_dict`` always returns host copies; ``load_state_dict`` writes into arrays where they live.

Order of ``state_dict`` keys (torch's ``_save_to_state_dict``): a module's own parameters in
registration order, then its own buffers, then each child's keys, recursively.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Iterator, NamedTuple

import numpy as np

from minirc.autograd import Tensor
from minirc.cuda_utils import copy_into, is_device_array, to_device, to_host, zeros_like


class Parameter(Tensor):
    """A Tensor that a Module registers as trainable; ``requires_grad=True`` unless frozen."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns (torch's ``_IncompatibleKeys``)."""
    missing_keys: list
    unexpected_keys: list


class StateDictError(ValueError, RuntimeError):
    """A state dict that does not fit the model. A ValueError (minirc's bad-input error) and a
    RuntimeError (what ``torch.nn.Module.load_state_dict`` raises), so either ``except`` catches it."""


def _buffer_value(array):
    """A buffer as stored: device arrays stay on the device, anything else becomes a NumPy array."""
    return array if is_device_array(array) else np.asarray(array)


def _as_numpy(value, key):
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch.Tensor from a torchvision checkpoint
        value = value.detach().cpu().numpy()
    arr = np.asarray(to_host(value))
    if arr.dtype == object:
        raise StateDictError(f"state_dict[{key!r}]: expected a numeric array, got {type(value).__name__}")
    return arr


class Module:
    """Base class of layers and models: subclasses set attributes in ``__init__`` and define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----- registration ------------------------------------------------------------------------
    def _registries(self):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        return self._parameters, self._buffers, self._modules

    def __setattr__(self, name, value):
        params, buffers, modules = self._registries()
        if isinstance(value, Parameter):
            for other in (self.__dict__, buffers, modules):
                other.pop(name, None)
            params[name] = value
        elif name in params:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as parameter {name!r} "
                                f"(minirc.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            for other in (self.__dict__, params, buffers):
                other.pop(name, None)
            modules[name] = value
        elif name in modules:
            if value is not None:
                raise TypeError(f"cannot assign {type(value).__name__} as child module {name!r} "
                                f"(minirc.nn.Module or None expected)")
            modules[name] = None
        elif name in buffers:  # a new value for a registered buffer
            buffers[name] = None if value is None else _buffer_value(value)
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only called when normal lookup fails: look in the registries
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param) -> None:
        """Register ``param`` (a Parameter, or None for an absent one such as ``bias=False``)."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter({name!r}): expected a Parameter or None, got {type(param).__name__}")
        self._check_name(name)
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name: str, array, persistent: bool = True) -> None:
        """Register a non-trainable array saved in ``state_dict`` (unless ``persistent=False``)."""
        self._check_name(name)
        self.__dict__.pop(name, None)
        self._buffers[name] = None if array is None else _buffer_value(array)
        non_persistent = self.__dict__.setdefault("_non_persistent", set())
        (non_persistent.discard if persistent else non_persistent.add)(name)

    def add_module(self, name: str, module) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module({name!r}): expected a Module or None, got {type(module).__name__}")
        self._check_name(name)
        self.__dict__.pop(name, None)
        self._modules[name] = module

    def _check_name(self, name):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"name: expected a non-empty string without '.', got {name!r}")
        self._registries()

    # ----- calling ----------------------------------------------------------------------------
    def forward(self, *args, **kwargs):
        """What calling the module computes; every callable subclass overrides it (containers need not)."""
        raise TypeError(f"Module subclass {type(self).__name__} must define forward() to be called")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----- traversal ----------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple]:
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_modules(self, prefix: str = "", _seen=None) -> Iterator[tuple]:
        """(dotted name, module) for self (name ``prefix``, "" at the root) and every descendant, once."""
        seen = set() if _seen is None else _seen
        if id(self) in seen:
            return
        seen.add(id(self))
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(prefix + ("." if prefix else "") + name, seen)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def _named_members(self, registry: str, recurse: bool):
        seen = set()
        items = self.named_modules() if recurse else [("", self)]
        for module_prefix, module in items:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:  # shared tensors are listed once, as torch
                    continue
                seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, recurse: bool = True) -> Iterator[tuple]:
        """("layer1.0.conv1.weight", Parameter) pairs, frozen ones included, in state_dict order."""
        yield from self._named_members("_parameters", recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse):
            yield p

    def named_buffers(self, recurse: bool = True) -> Iterator[tuple]:
        yield from self._named_members("_buffers", recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers(recurse):
            yield b

    def apply(self, fn) -> "Module":
        """Call ``fn(module)`` on every child (recursively), then on self; returns self (torch's order)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def get_submodule(self, target: str) -> "Module":
        module = self
        for part in target.split(".") if target else []:
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"get_submodule({target!r}): {type(module).__name__} has no child {part!r}")
            module = module._modules[part]
        return module

    # ----- modes and gradients --------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        """Set ``training`` on self and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise TypeError(f"train(mode): expected a bool, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient to None (torch's default ``set_to_none=True``)."""
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = zeros_like(p.grad)

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        """Freeze (False) or unfreeze (True) every parameter; returns self."""
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    # ----- device placement ---------------------------------------------------------------------
    def to_device(self) -> "Module":
        """Move every parameter, gradient and float buffer to the GPU (Numba device arrays), in place.

        Integer buffers (counters such as BatchNorm's ``num_batches_tracked``, which Python code
        updates) stay on the host. Arrays already on the device are left alone, so calling it again
        copies nothing. Returns self.
        """
        return self._place(to_device)

    def to_host(self) -> "Module":
        """Move every parameter, gradient and buffer back to NumPy arrays, in place; returns self."""
        return self._place(to_host)

    def _place(self, move) -> "Module":
        for p in self.parameters():
            p.data = move(p.data)
            if p.grad is not None:
                p.grad = move(p.grad)
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None and np.issubdtype(np.dtype(b.dtype), np.floating):
                    m._buffers[name] = move(b)
        return self

    # ----- state dict ---------------------------------------------------------------------------
    def _state_items(self):
        """(key, holder, attribute name, kind) for every saved tensor, in torch's key order."""
        seen = set()
        for prefix, module in self.named_modules():
            dot = prefix + "." if prefix else ""
            non_persistent = module.__dict__.get("_non_persistent", set())
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield dot + name, module, name, "parameter"
            for name, b in module._buffers.items():
                if b is not None and name not in non_persistent:
                    yield dot + name, module, name, "buffer"

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and persistent buffer as NumPy arrays, keyed like torch.

        Copies (torch returns views): changing the returned arrays never changes the model.
        """
        out = OrderedDict()
        for key, module, name, kind in self._state_items():
            value = module._parameters[name].data if kind == "parameter" else module._buffers[name]
            out[key] = np.array(to_host(value), copy=True)
        return out

    def _load_from_state_dict_hook(self, state_dict: dict, prefix: str) -> None:
        """Edit ``state_dict`` in place before loading (rename legacy keys, drop unused ones).

        Called on every module with its key prefix (``"backbone.body.bn1."``); the default does
        nothing. It plays the part of torch's ``_load_from_state_dict`` overrides.
        """

    def load_state_dict(self, state_dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays (or Tensors, or torch tensors) into the parameters and buffers, in place.

        strict=True: the keys must match exactly, else :class:`StateDictError` lists the missing and
        unexpected keys. A shape mismatch is an error in either mode (as torch). Values are cast to
        the dtype of the parameter or buffer they replace. Returns ``(missing_keys, unexpected_keys)``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"state_dict: expected a mapping of names to arrays, got {type(state_dict).__name__}")
        state = OrderedDict(state_dict.items())
        for prefix, module in self.named_modules():
            module._load_from_state_dict_hook(state, prefix + "." if prefix else "")
        targets = OrderedDict((key, (module, name, kind)) for key, module, name, kind in self._state_items())
        missing = [k for k in targets if k not in state]
        unexpected = [k for k in state if k not in targets]
        errors, values = [], {}
        for key, (module, name, kind) in targets.items():
            if key not in state:
                continue
            current = module._parameters[name].data if kind == "parameter" else module._buffers[name]
            value = _as_numpy(state[key], key)
            if tuple(value.shape) != tuple(current.shape):
                errors.append(f"size mismatch for {key}: copying an array of shape {tuple(value.shape)}, "
                              f"the shape in the current model is {tuple(current.shape)}")
            values[key] = value
        if strict:
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(repr(k) for k in missing))
            if unexpected:
                errors.insert(1 if missing else 0,
                              "Unexpected key(s) in state_dict: " + ", ".join(repr(k) for k in unexpected))
        if errors:
            header = f"Error(s) in loading state_dict for {type(self).__name__}:"
            raise StateDictError("\n\t".join([header] + errors))
        for key, value in values.items():  # nothing is copied unless everything fits
            module, name, kind = targets[key]
            current = module._parameters[name].data if kind == "parameter" else module._buffers[name]
            copy_into(current, value)  # in place, on the GPU too: references to the array stay valid
        return IncompatibleKeys(missing, unexpected)

    # ----- printing ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The text inside ``Name(...)`` for a leaf layer (``in_features=4, out_features=2, bias=True``)."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + _indent(repr(m)) for name, m in self._modules.items()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = ([extra] if extra else []) + lines
        return f"{type(self).__name__}(\n  " + "\n  ".join(body) + "\n)"


def _indent(text: str) -> str:
    return text.replace("\n", "\n  ")
