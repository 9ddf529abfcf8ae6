"""Checkpoints: one ``.npz`` file holding everything a run needs to continue bit-identically.

Layout of the file (plain NumPy, ``np.load(path)`` opens it; no pickle anywhere):

* ``model/<name>``    -- every entry of ``model.state_dict()`` (PyTorch's key names);
* ``state/<n>``       -- the arrays of the optimizer and scheduler states (momentum buffers);
* ``__meta__``        -- one JSON string: format version, the model config (``config.to_dict()``),
  the optimizer / scheduler / loader states with their arrays replaced by ``{"__array__": key}``,
  the global RNG state (:func:`minirc.random.get_state`) and any ``extra`` (iteration, loss log,
  training and data settings).

Why bit-identical resume works on the cpu backend: the weights and momentum buffers round-trip
exactly through ``.npz``, Python floats (learning rates) round-trip exactly through JSON (``repr``
is shortest-exact), the loader's next batch is a function of ``(seed, epoch, position)``, and the
detector's random samplers draw from the one global generator whose PCG64 state is saved.
The CPU kernels are deterministic (no atomics), so the same inputs give the same bits.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import numpy as np

from minirc.cuda_utils import is_device_array, to_host

FORMAT = "minirc-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A file that is not a readable minirc checkpoint: missing parts, truncated, corrupt or foreign."""


# ---- nested states <-> (JSON tree, arrays) ------------------------------------------------------
def _is_tensor(v) -> bool:
    from minirc.autograd import Tensor

    return isinstance(v, Tensor)


def _host(a) -> np.ndarray:
    """A host copy of an array, a device array or a Tensor/Parameter's data."""
    if _is_tensor(a):
        a = a.data
    return np.array(to_host(a), copy=True)


def _is_array(v) -> bool:
    return isinstance(v, np.ndarray) or is_device_array(v) or _is_tensor(v)


def encode_state(obj, arrays: dict, prefix: str = "state/"):
    """Replace every array in a nested dict/list/tuple by ``{"__array__": key}``; fill ``arrays``.

    Dicts with non-string keys (torch's optimizer state is keyed by parameter index) become
    ``{"__items__": [[key, value], ...]}`` and tuples ``{"__tuple__": [...]}``, so decoding gives back
    exactly the types that went in.
    """
    if _is_array(obj):
        key = f"{prefix}{len(arrays)}"
        arrays[key] = _host(obj)
        return {"__array__": key}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_state(v, arrays, prefix) for k, v in obj.items()}
        return {"__items__": [[encode_state(k, arrays, prefix), encode_state(v, arrays, prefix)]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, arrays, prefix) for v in obj]}
    if isinstance(obj, list):
        return [encode_state(v, arrays, prefix) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint: cannot store a value of type {type(obj).__name__} ({obj!r:.60})")


def decode_state(tree, arrays):
    """Inverse of :func:`encode_state` (``arrays``: a mapping such as an open ``NpzFile``)."""
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            return np.array(arrays[tree["__array__"]])
        if set(tree) == {"__items__"}:
            return {_hashable(decode_state(k, arrays)): decode_state(v, arrays) for k, v in tree["__items__"]}
        if set(tree) == {"__tuple__"}:
            return tuple(decode_state(v, arrays) for v in tree["__tuple__"])
        return {k: decode_state(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [decode_state(v, arrays) for v in tree]
    return tree


def _hashable(k):
    return tuple(k) if isinstance(k, list) else k


# ---- save / load --------------------------------------------------------------------------------
def save_checkpoint(path, model, optimizer=None, scheduler=None, loader=None, extra=None,
                    config=None) -> str:
    """Write model (+ optimizer, scheduler, loader, RNG) state to ``path`` (a ``.npz``); return the path.

    config: the model config as a dict; default ``model.config.to_dict()`` when the model has one.
    extra: any JSON-able dict (iteration count, loss log, training settings, class names).
    The file is written to a temporary name and renamed, so a crash never leaves half a checkpoint.
    """
    from minirc import random as mrandom

    path = os.fspath(path)
    if config is None and hasattr(getattr(model, "config", None), "to_dict"):
        config = model.config.to_dict()
    arrays = {f"model/{k}": _host(v) for k, v in model.state_dict().items()}
    meta = {
        "format": FORMAT, "version": VERSION, "config": encode_state(config, arrays),
        "optimizer": None if optimizer is None else encode_state(optimizer.state_dict(), arrays),
        "scheduler": None if scheduler is None else encode_state(scheduler.state_dict(), arrays),
        "loader": None if loader is None else loader.state_dict(),
        "rng": mrandom.get_state(),
        "extra": encode_state(extra or {}, arrays),
    }
    arrays["__meta__"] = np.array(json.dumps(meta))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())  # on disk before the rename makes it the checkpoint
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; a checkpoint gets the user's umask
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class Checkpoint(dict):
    """What :func:`load_checkpoint` returns: a dict with ``config``, ``model``, ``optimizer``,
    ``scheduler``, ``loader``, ``rng`` and ``extra`` (``None`` where nothing was saved)."""

    def restore(self, model=None, optimizer=None, scheduler=None, loader=None, rng: bool = True):
        """Load the saved states into the given objects (each optional) and the global RNG."""
        from minirc import random as mrandom

        if model is not None:
            model.load_state_dict(self["model"])
        for name, obj in (("optimizer", optimizer), ("scheduler", scheduler), ("loader", loader)):
            if obj is not None:
                if self[name] is None:
                    raise ValueError(f"{name}: the checkpoint holds no {name} state to restore")
                obj.load_state_dict(self[name])
        if rng:
            mrandom.set_state(self["rng"])


def load_checkpoint(path) -> Checkpoint:
    """Read a file written by :func:`save_checkpoint`.

    Raises FileNotFoundError when there is no file, and :class:`CheckpointError` (a ValueError naming
    the file) for anything else that keeps it from being read: not a zip, truncated, a corrupt entry,
    a foreign ``.npz``, missing parts or a newer format.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint: no file at {path!r}")
    try:
        return _read(path)
    except CheckpointError:
        raise
    except (OSError, EOFError, KeyError, IndexError, TypeError, ValueError, AttributeError,
            zipfile.BadZipFile, zlib.error) as e:
        raise CheckpointError(f"checkpoint: {path!r} is not a readable minirc checkpoint (truncated or "
                              f"corrupt?): {type(e).__name__}: {e}") from e


def _read(path) -> Checkpoint:
    with np.load(path, allow_pickle=False) as f:
        if "__meta__" not in f.files:
            raise CheckpointError(f"checkpoint: {path!r} is not a minirc checkpoint (no __meta__ entry)")
        meta = json.loads(str(f["__meta__"]))
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint: {path!r} is not a minirc checkpoint (__meta__ is not a dict)")
        if meta.get("format") != FORMAT or meta.get("version", 0) > VERSION:
            raise CheckpointError(f"checkpoint: {path!r} has format {meta.get('format')!r} version "
                                  f"{meta.get('version')!r}; this minirc reads {FORMAT!r} up to version {VERSION}")
        model = {k[len("model/"):]: np.array(f[k]) for k in f.files if k.startswith("model/")}
        return Checkpoint(
            config=decode_state(meta["config"], f), model=model,
            optimizer=decode_state(meta["optimizer"], f), scheduler=decode_state(meta["scheduler"], f),
            loader=meta["loader"], rng=meta["rng"], extra=decode_state(meta["extra"], f))


def load_model(path):
    """Build the :class:`minirc.model.MaskRCNN` a checkpoint describes and load its weights.

    Returns ``(model, checkpoint)``; the model is in eval mode.
    """
    ckpt = load_checkpoint(path)
    from minirc.model import MaskRCNN
    from minirc.model.config import MaskRCNNConfig

    if ckpt["config"] is None:
        raise ValueError(f"checkpoint: {os.fspath(path)!r} holds no model config; build the model "
                         f"yourself and call load_checkpoint(path).restore(model)")
    model = MaskRCNN(MaskRCNNConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model, ckpt
