"""minirc: Mask R-CNN from scratch in NumPy and Numba, right down to the last half pixel.

Layers of the library (see docs/architecture.md):

* :mod:`minirc.ops` -- array kernels (NumPy reference, Numba CPU, Numba CUDA side by side), no autograd;
* :mod:`minirc.autograd`, :mod:`minirc.nn.functional` -- the tape and the differentiable ops;
* :mod:`minirc.nn`, :mod:`minirc.detection`, :mod:`minirc.model` -- modules and the detector;
* :mod:`minirc.data`, :mod:`minirc.evaluation` -- data sets and COCO-style evaluation.

Submodules load on first use (``minirc.ops``, ``minirc.nn``, ...), so ``import minirc`` is quick.
"""
from minirc._threads import configure as _configure_threads

_configure_threads()  # Numba threading layer and BLAS threads: see minirc/_threads.py

from minirc import tensor_math as _tensor_math  # noqa: E402,F401  (attaches Tensor's operators)
from minirc._lazy import lazy_exports  # noqa: E402
from minirc.autograd import Function, Tensor, is_grad_enabled, no_grad  # noqa: E402
from minirc.backend import cuda_available, get_backend, use_backend  # noqa: E402
from minirc.tensor_math import cat, stack  # noqa: E402

__version__ = "0.1.0"

_SUBMODULES = ("ops", "nn", "optim", "random", "detection", "data", "evaluation", "testing", "model",
               "train", "visualize", "io")
__getattr__, __dir__ = lazy_exports(__name__, {name: (f".{name}", None) for name in _SUBMODULES})

__all__ = ["Tensor", "Function", "no_grad", "is_grad_enabled", "cat", "stack",
           "use_backend", "get_backend", "cuda_available", "__version__"]
