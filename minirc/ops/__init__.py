"""Array kernels, with ``torchvision.ops`` names and signatures; no autograd here.

Each file holds one op three times, side by side: a NumPy reference (the spec), a Numba ``@njit``
CPU kernel and a Numba ``@cuda.jit`` kernel; the public function picks one with ``backend=``
(see :mod:`minirc.backend`). Differentiable wrappers live in :mod:`minirc.nn.functional`.
"""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    # boxes (x1, y1, x2, y2) in continuous pixel coordinates
    "box_area": ".boxes", "clip_boxes_to_image": ".boxes", "remove_small_boxes": ".boxes",
    "box_iou": ".box_iou",
    "nms": ".nms", "batched_nms": ".nms",
    # region pooling
    "roi_align": ".roi_align", "roi_pool": ".roi_pool", "roi_warp": ".roi_warp", "roi_align_max": ".roi_align_max",
    # convolution and matrix products, forward and backward kernels (autograd: minirc.nn.functional)
    "matmul": ".matmul", "conv2d_forward": ".conv2d", "conv2d_backward": ".conv2d",
    "conv_transpose2d_forward": ".conv_transpose2d", "conv_transpose2d_backward": ".conv_transpose2d",
})
