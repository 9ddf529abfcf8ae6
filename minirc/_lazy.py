"""Lazy re-exports: a package's public names map to the submodule that defines them.

A name is imported on first use, so ``import minirc`` stays light and each concept keeps its own file.
An entry ``name: ".sub"`` re-exports ``sub.name``; an entry ``name: (".sub", None)`` exports the
submodule itself.

One Python subtlety is handled here: when a file is named like the function it exports
(``ops/roi_align.py`` defines ``roi_align``, as in torchvision), importing that file makes the import
system bind the *module* to ``ops.roi_align``, shadowing the function. The package's module class is
therefore swapped for one whose ``__setattr__`` refuses exactly that binding, and every resolved
name is cached on the package, so ``minirc.ops.roi_align`` is always the function.
"""
from __future__ import annotations

import importlib
import sys
import types


def lazy_exports(package: str, exports: dict):
    """Return a module ``__getattr__`` and ``__dir__`` that import ``exports[name]`` on demand."""
    function_names = {name for name, target in exports.items() if not isinstance(target, tuple)}

    class _Package(types.ModuleType):
        def __setattr__(self, name, value):
            if name in function_names and isinstance(value, types.ModuleType):
                return  # a submodule named like the function it exports: keep the function
            super().__setattr__(name, value)

    sys.modules[package].__class__ = _Package

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = exports[name]
        if isinstance(target, tuple):  # the submodule itself
            return importlib.import_module(target[0], package)
        value = getattr(importlib.import_module(target, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
