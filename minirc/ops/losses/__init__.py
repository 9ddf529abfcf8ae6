"""The three losses of Mask R-CNN, per element (or per row), forward and backward, and their reduction.

One file per loss, each an op file (NumPy reference, Numba CPU, Numba CUDA, public entry points):

* :mod:`.smooth_l1` -- ``smooth_l1_loss`` (RPN and box-head regression);
* :mod:`.bce` -- ``binary_cross_entropy_with_logits`` (objectness, masks);
* :mod:`.cross_entropy` -- ``cross_entropy`` over K classes (box-head classification);
* :mod:`.reduction` -- ``reduce_loss``: ``"none"``, ``"mean"`` or ``"sum"``, where the losses live.

Conventions shared by the three (:mod:`._common`): ``input`` is float32 or float64 and the target is
cast to its dtype; backward functions take ``grad_out`` of the per-element shape, or a single value
applied to every element (what a "mean"/"sum" reduction sends back); CUDA device arrays need
``backend="cuda"``, where device inputs give device results. Differentiable wrappers with
reductions: :mod:`minirc.nn.functional.loss`.
"""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "smooth_l1_loss": ".smooth_l1", "smooth_l1_loss_backward": ".smooth_l1",
    "binary_cross_entropy_with_logits": ".bce", "binary_cross_entropy_with_logits_backward": ".bce",
    "cross_entropy": ".cross_entropy", "cross_entropy_backward": ".cross_entropy",
    "reduce_loss": ".reduction", "REDUCTIONS": ".reduction",
})
