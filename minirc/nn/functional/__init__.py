"""Differentiable ops with ``torch.nn.functional``'s names and argument orders.

Each op is an autograd :class:`~minirc.autograd.Function` (forward and backward side by side) that
calls the array kernels of :mod:`minirc.ops` on the current backend.
"""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "conv2d": ".conv", "conv_transpose2d": ".conv",
    "linear": ".linear",
    "relu": ".activation", "sigmoid": ".activation",
    "max_pool2d": ".pooling", "interpolate": ".upsampling",
    "frozen_batch_norm2d": ".norm", "batch_norm": ".batch_norm",
    "smooth_l1_loss": ".loss", "binary_cross_entropy_with_logits": ".loss", "cross_entropy": ".loss",
    "roi_align": ".roi", "roi_pool": ".roi", "roi_warp": ".roi", "roi_align_max": ".roi",
})
