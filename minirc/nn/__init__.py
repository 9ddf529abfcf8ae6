"""Modules with PyTorch's names, parameters and ``state_dict`` keys, built on :mod:`minirc.nn.functional`."""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "functional": (".functional", None), "init": (".init", None),
    "Module": ".module", "Parameter": ".module", "Sequential": ".containers", "ModuleList": ".containers",
    "Conv2d": ".layers", "ConvTranspose2d": ".layers", "Linear": ".layers", "ReLU": ".layers",
    "MaxPool2d": ".layers", "FrozenBatchNorm2d": ".layers", "BatchNorm2d": ".layers",
})
