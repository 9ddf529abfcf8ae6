"""``Sequential`` and ``ModuleList``: modules that hold other modules (torch's ``nn/modules/container.py``).

Children are registered like any attribute module, named ``"0"``, ``"1"``, ..., so their parameters
get torch's dotted ``state_dict`` keys (``layer1.0.conv1.weight``).
"""
from __future__ import annotations

from collections import OrderedDict

from minirc.nn.module import Module


class Sequential(Module):
    """Modules called in order; children named "0", "1", ... (or the keys of an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        items = list(self._modules.items())
        if isinstance(index, slice):
            return Sequential(OrderedDict(items[index]))
        if not -len(items) <= index < len(items):
            raise IndexError(f"index {index} is out of range for a Sequential of length {len(items)}")
        return items[index][1]

    def append(self, module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of modules whose parameters are registered, named "0", "1", ...; not callable."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _index(self, index):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for a ModuleList of length {len(self)}")
        return str(index % len(self))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[self._index(index)]

    def __setitem__(self, index, module):
        self.add_module(self._index(index), module)

    def append(self, module) -> "ModuleList":
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self
