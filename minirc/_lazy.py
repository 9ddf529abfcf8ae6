"""Lazy re-exports: a package's public names map to the submodule that defines them.

A name is imported on first use, so ``import minirc`` stays light and each concept keeps its own file.
An entry ``name: ".sub"`` re-exports ``sub.name``; an entry ``name: (".sub", None)`` exports the
submodule itself.
"""
from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict):
    """Return a module ``__getattr__`` and ``__dir__`` that import ``exports[name]`` on demand."""
    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = exports[name]
        if isinstance(target, tuple):  # the submodule itself
            return importlib.import_module(target[0], package)
        return getattr(importlib.import_module(target, package), name)

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
