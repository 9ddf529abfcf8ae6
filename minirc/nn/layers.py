"""The layers of Mask R-CNN as Modules, with torch's constructor arguments, parameter shapes and keys.

| layer | parameters (float32) | buffers | input -> output |
|---|---|---|---|
| ``Conv2d(in, out, k, stride, padding, dilation, bias)`` | weight (out, in, kh, kw), bias (out,) | | (N, in, H, W) -> (N, out, OH, OW) |
| ``ConvTranspose2d(in, out, k, stride, padding, bias)`` | weight (in, out, kh, kw), bias (out,) | | (N, in, H, W) -> (N, out, (H-1)s - 2p + k, ...) |
| ``Linear(in, out, bias)`` | weight (out, in), bias (out,) | | (R, in) -> (R, out), ``x W^T + b`` |
| ``ReLU()`` | | | any -> same |
| ``MaxPool2d(k, stride, padding)`` | | | (N, C, H, W) -> (N, C, OH, OW) |
| ``FrozenBatchNorm2d(C, eps)`` | | weight, bias, running_mean, running_var (C,) | (N, C, H, W) -> same |
| ``BatchNorm2d(C, eps, momentum)`` | weight (C,), bias (C,) | running_mean, running_var (C,), num_batches_tracked () int64 | (N, C, H, W) -> same |

Initialisation is torch's default (:func:`minirc.nn.init.default_init_`), drawn from
:func:`minirc.random.generator` at construction, weight before bias.
"""
from __future__ import annotations

import importlib

import numpy as np

from minirc import _checks
from minirc.cuda_utils import copy_into
from minirc.nn import init
from minirc.nn.functional.activation import relu
from minirc.nn.functional.batch_norm import batch_norm
from minirc.nn.functional.norm import frozen_batch_norm2d
from minirc.nn.functional.pooling import max_pool2d
from minirc.nn.module import Module, Parameter
from minirc.ops.max_pool2d import _pool_args


def _functional(module: str, name: str):
    """``minirc.nn.functional.<name>`` read from its own file, imported at first call (conv and linear
    live in files another part of the library provides)."""
    return getattr(importlib.import_module(f"minirc.nn.functional.{module}"), name)


def _empty_parameter(*shape):
    return Parameter(np.zeros(shape, dtype=np.float32))


class _ConvNd(Module):
    """What Conv2d and ConvTranspose2d share (torch's ``_ConvNd``): checked sizes, the weight and the
    optional bias, torch's default initialisation and the repr."""

    def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, bias, transposed):
        super().__init__()
        self.in_channels = _checks.positive_int(in_channels, "in_channels")
        self.out_channels = _checks.positive_int(out_channels, "out_channels")
        self.kernel_size = _checks.pair(kernel_size, "kernel_size", minimum=1)
        self.stride = _checks.pair(stride, "stride", minimum=1)
        self.padding = _checks.pair(padding, "padding", minimum=0)
        self.dilation = _checks.pair(dilation, "dilation", minimum=1)
        # torch's weight layouts: (out, in, kh, kw) for a conv, (in, out, kh, kw) for a transposed conv
        pair = (self.in_channels, self.out_channels) if transposed else (self.out_channels, self.in_channels)
        self.weight = _empty_parameter(*pair, *self.kernel_size)
        self.register_parameter("bias", _empty_parameter(self.out_channels) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        # for the transposed (in, out, kh, kw) weight torch computes the fans with the Conv rule too:
        # fan_in = out*kh*kw
        init.default_init_(self.weight, self.bias)

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        return s + ("" if self.bias is not None else ", bias=False")


class Conv2d(_ConvNd):
    """2-D convolution, ``torch.nn.Conv2d`` without groups: weight (out, in, kh, kw), optional bias (out,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, *,
                 bias=True, groups=1):
        if groups != 1:
            raise ValueError(f"groups: only groups=1 is implemented (Mask R-CNN uses no grouped conv), got {groups!r}")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, bias, transposed=False)

    def forward(self, x):
        conv2d = _functional("conv", "conv2d")
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)


class ConvTranspose2d(_ConvNd):
    """Transposed 2-D convolution (``torch.nn.ConvTranspose2d``, no output_padding/groups/dilation):
    weight (in, out, kh, kw), optional bias (out,)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *, bias=True):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, 1, bias, transposed=True)

    def forward(self, x):
        conv_transpose2d = _functional("conv", "conv_transpose2d")
        return conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding)


class Linear(Module):
    """``y = x W^T + b`` (``torch.nn.Linear``): weight (out_features, in_features), bias (out_features,)."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _checks.positive_int(in_features, "in_features")
        self.out_features = _checks.positive_int(out_features, "out_features")
        self.weight = _empty_parameter(self.out_features, self.in_features)
        self.register_parameter("bias", _empty_parameter(self.out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        init.default_init_(self.weight, self.bias)

    def forward(self, x):
        return _functional("linear", "linear")(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class ReLU(Module):
    """``max(x, 0)``. ``inplace`` is accepted (torchvision passes ``inplace=True``) and ignored."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, x):
        return relu(x)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class MaxPool2d(Module):
    """Max pooling (``torch.nn.MaxPool2d``); the ResNet stem uses ``MaxPool2d(3, 2, 1)``."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride
        self.dilation, self.ceil_mode = dilation, bool(ceil_mode)
        _pool_args(kernel_size, stride, padding, dilation)  # bad arguments fail here, not at the first call

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self):
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class FrozenBatchNorm2d(Module):
    """Batch norm with fixed statistics and affine (torchvision's ``FrozenBatchNorm2d``).

    Buffers (not parameters, never trained): weight = 1, bias = 0, running_mean = 0, running_var = 1,
    each (num_features,) float32. ``load_state_dict`` drops ``num_batches_tracked``, which plain
    BatchNorm2d checkpoints carry, as torchvision does.
    """

    def __init__(self, num_features, eps=1e-5):
        super().__init__()
        self.num_features = _checks.positive_int(num_features, "num_features")
        self.eps = _checks.number(eps, "eps", low=0.0)
        self.register_buffer("weight", np.ones(self.num_features, dtype=np.float32))
        self.register_buffer("bias", np.zeros(self.num_features, dtype=np.float32))
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))

    def _load_from_state_dict_hook(self, state_dict, prefix):
        state_dict.pop(prefix + "num_batches_tracked", None)

    def forward(self, x):
        return frozen_batch_norm2d(x, self.weight, self.bias, self.running_mean, self.running_var, self.eps)

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}"


class BatchNorm2d(Module):
    """Trainable batch norm (``torch.nn.BatchNorm2d``, affine and tracking running statistics).

    Parameters weight = 1 and bias = 0, then buffers running_mean = 0, running_var = 1 (float32, (C,))
    and num_batches_tracked = 0 (an int64 scalar): torch's ``state_dict`` keys in torch's order.
    ``self.training`` picks the statistics: the batch's (and the running buffers are updated with
    ``momentum``; ``momentum=None`` is torch's cumulative average, factor 1 / num_batches_tracked)
    or, after ``eval()``, the running ones. torchvision's ResNet uses this layer when it is built
    without pretrained weights, FrozenBatchNorm2d otherwise (docs/autograd_and_layers.md).
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features = _checks.positive_int(num_features, "num_features")
        self.eps = _checks.number(eps, "eps", low=0.0)
        self.momentum = None if momentum is None else _checks.number(momentum, "momentum", low=0.0, high=1.0)
        self.weight = Parameter(np.ones(self.num_features, dtype=np.float32))
        self.bias = Parameter(np.zeros(self.num_features, dtype=np.float32))
        self.register_buffer("running_mean", np.zeros(self.num_features, dtype=np.float32))
        self.register_buffer("running_var", np.ones(self.num_features, dtype=np.float32))
        self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))

    def reset_running_stats(self):
        for name, value in (("running_mean", 0), ("running_var", 1), ("num_batches_tracked", 0)):
            buf = getattr(self, name)  # a host array, or a device array after Module.to_device
            copy_into(buf, np.full(tuple(buf.shape), value, dtype=buf.dtype))

    def _load_from_state_dict_hook(self, state_dict, prefix):
        # torch's _BatchNorm: a state dict without num_batches_tracked (saved before the buffer existed,
        # or by a FrozenBatchNorm2d model) keeps the current count instead of failing to load
        state_dict.setdefault(prefix + "num_batches_tracked", self.num_batches_tracked.copy())

    def forward(self, x):
        factor = self.momentum
        if self.training and self.momentum is None:
            factor = 1.0 / float(self.num_batches_tracked + 1)
        out = batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training,
                         0.0 if factor is None else factor, self.eps)
        if self.training:  # counted after a successful call (torch counts first; same numbers)
            self.num_batches_tracked += 1
        return out

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine=True, bias=True, "
                f"track_running_stats=True")  # torch 2.14's text
