"""A pickle reader that can only build tensors: an exact allow-list of globals, nothing else runs.

A pickle is a program for a small stack machine; its ``GLOBAL`` opcode imports any name and
``REDUCE`` calls it, which is how a ``.pth`` file could run ``os.system``. Here every global goes
through :func:`allowed_globals`, an exact table from ``module.name`` to a stand-in written in this
package (no torch, no import happens): torch's tensor-rebuild functions become
:class:`~minirc.io.tensors.TensorBuilder` methods, storage classes and dtypes become inert tags.
Any other name is refused before anything is called. ``BUILD`` (which would call an object's
``__setstate__``) is allowed only on an ``OrderedDict``, where torch stores a state dict's
``_metadata``.

The opcodes themselves are Python's own (``pickle._Unpickler``, the pure-Python reader, whose
per-opcode table can be overridden; the C reader's cannot).
"""
from __future__ import annotations

import io
import pickle
from collections import OrderedDict

from minirc.io.errors import PthError
from minirc.io.tensors import STORAGE_DTYPES, TORCH_DTYPES, StorageType, TensorBuilder, TensorType, TorchDtype


def _latin1_bytes(text, encoding):
    """``_codecs.encode(text, "latin1")``: how protocol 2 pickles a ``bytes`` object."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise PthError(f"_codecs.encode: only (str, 'latin1') is allowed, got ({type(text).__name__}, {encoding!r:.40})")
    return text.encode("latin1")


def allowed_globals(builder: TensorBuilder) -> dict:
    """The exact table of globals a tensor file may name, each mapped to its stand-in."""
    table = {
        "collections.OrderedDict": OrderedDict,  # state dicts (and the empty backward_hooks)
        "_codecs.encode": _latin1_bytes,  # bytes under protocol 2
        "torch._utils._rebuild_tensor": builder.rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": builder.rebuild_tensor_v2,
        "torch._utils._rebuild_tensor_v3": builder.rebuild_tensor_v3,
        "torch._utils._rebuild_parameter": builder.rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": builder.rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": builder.rebuild_from_type_v2,
        "torch.Tensor": TensorType("torch.Tensor"),
        "torch.nn.parameter.Parameter": TensorType("torch.nn.parameter.Parameter"),
        "torch.storage.UntypedStorage": StorageType("UntypedStorage", "uint8"),  # bytes, for _v3
    }
    for name, dtype in STORAGE_DTYPES.items():
        table[f"torch.{name}"] = StorageType(name, dtype)
        table[f"torch.cuda.{name}"] = StorageType(name, dtype)  # legacy files saved from a GPU
    for name in TORCH_DTYPES:
        table[f"torch.{name}"] = TorchDtype(name)
    return table


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickle from the binary ``file`` with only ``globals_`` importable, ``persistent_load`` resolving ids."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, globals_: dict, persistent_load=None):
        super().__init__(file, encoding="utf-8")  # as torch.load: a Python 2 str reads as str
        self._globals = globals_
        self._persistent = persistent_load

    def find_class(self, module, name):
        key = f"{module}.{name}"
        if key not in self._globals:
            raise PthError(f"refused the global {key!r}: a tensor file may name only torch's tensor and "
                           f"storage rebuilders (see docs/io.md); loading a pickle that names other "
                           f"globals could run code (a whole pickled model? save its state_dict())")
        return self._globals[key]

    def persistent_load(self, pid):
        if self._persistent is None:
            raise PthError(f"unexpected persistent id {pid!r:.80} in a pickle that holds no tensors")
        return self._persistent(pid)

    def _load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is not OrderedDict or not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
            raise PthError(f"refused BUILD on a {type(inst).__name__} with a {type(state).__name__} state: "
                           f"only a state dict's attributes (an OrderedDict's _metadata) may be set")
        inst.__dict__.update(state)

    dispatch[pickle.BUILD[0]] = _load_build


def unpickle(file, globals_: dict | None = None, persistent_load=None):
    """Read one pickle from the binary ``file`` (bytes are wrapped), leaving ``file`` just past its STOP."""
    if isinstance(file, (bytes, bytearray, memoryview)):
        file = io.BytesIO(file)
    return RestrictedUnpickler(file, globals_ or {}, persistent_load).load()
