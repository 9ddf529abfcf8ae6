"""minirc: Mask R-CNN from scratch in NumPy and Numba, right down to the last half pixel.

Layers of the library (see docs/architecture.md):

* :mod:`minirc.ops` -- array kernels (NumPy reference, Numba CPU, Numba CUDA side by side), no autograd;
* :mod:`minirc.autograd`, :mod:`minirc.nn.functional` -- the tape and the differentiable ops;
* :mod:`minirc.nn`, :mod:`minirc.detection`, :mod:`minirc.model` -- modules and the detector;
* :mod:`minirc.data`, :mod:`minirc.evaluation` -- data sets and COCO-style evaluation.

Submodules load on first use (``minirc.ops``, ``minirc.nn``, ...), so ``import minirc`` is quick.
"""
from minirc import tensor_math as _tensor_math  # noqa: F401  (attaches Tensor's operators)
from minirc._lazy import lazy_exports
from minirc.autograd import Function, Tensor, is_grad_enabled, no_grad
from minirc.backend import cuda_available, get_backend, use_backend
from minirc.tensor_math import cat, stack

__version__ = "0.1.0"

_SUBMODULES = ("ops", "nn", "optim", "random", "detection", "data", "evaluation", "testing", "model",
               "train", "visualize")
__getattr__, __dir__ = lazy_exports(__name__, {name: (f".{name}", None) for name in _SUBMODULES})

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "cat", "stack",
           "use_backend", "get_backend", "cuda_available", "__version__"]
