"""Weight initialisation with ``torch.nn.init``'s names and formulas, drawing from minirc's seeded RNG.

Every function fills a Tensor (or a NumPy array) **in place**, keeps its dtype, and returns it. The
numbers come from :func:`minirc.random.generator`, so ``minirc.random.manual_seed(s)`` fixes them
(they are NumPy's PCG64 draws, not torch's).

Fans, for a weight of shape (out, in, *kernel) (``torch.nn.init._calculate_fan_in_and_fan_out``):
``fan_in = shape[1] * prod(kernel)``, ``fan_out = shape[0] * prod(kernel)``. For a ConvTranspose2d
weight (in, out, kh, kw) torch applies the same rule, so there "fan_in" is ``out * kh * kw``.

Defaults of torch's layers (``reset_parameters`` of Linear and ConvNd):
weight ``kaiming_uniform_(w, a=sqrt(5))``, i.e. ``U(-b, b)`` with ``b = gain * sqrt(3 / fan_in)``,
``gain = sqrt(2 / (1 + a^2)) = sqrt(1/3)``, hence ``b = 1 / sqrt(fan_in)``; bias ``U(-1/sqrt(fan_in),
1/sqrt(fan_in))`` with the weight's fan_in (see :func:`default_init_`).
"""
from __future__ import annotations

import math

import numpy as np

from minirc.autograd import Tensor
from minirc.random import generator

NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                  "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")


def _array(tensor, name="tensor"):
    data = tensor.data if isinstance(tensor, Tensor) else tensor
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{name}: expected a Tensor or a NumPy array (on the host), got {type(tensor).__name__}")
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"{name}: expected a float array, got {data.dtype}")
    return data


def _fill(tensor, values):
    data = _array(tensor)
    data[...] = values  # in place, cast to the tensor's dtype
    return tensor


def calculate_gain(nonlinearity: str, param=None) -> float:
    """torch's recommended gain: 1 for linear/conv/sigmoid, 5/3 tanh, sqrt(2) relu,
    sqrt(2 / (1 + a^2)) leaky_relu (a = param, default 0.01), 3/4 selu."""
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity: expected one of {NONLINEARITIES}, got {nonlinearity!r}")
    if nonlinearity in ("linear", "sigmoid") or nonlinearity.startswith("conv"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    slope = 0.01 if param is None else param
    if isinstance(slope, bool) or not isinstance(slope, (int, float)):
        raise ValueError(f"param: expected a number (the negative slope), got {param!r}")
    return math.sqrt(2.0 / (1 + slope ** 2))


def calculate_fan_in_and_fan_out(tensor) -> tuple:
    """(fan_in, fan_out) of a weight with at least 2 dimensions, torch's rule."""
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError(f"tensor: fan in and fan out need at least 2 dimensions, got shape {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a: float = 0.0, b: float = 1.0):
    """Fill with U(a, b)."""
    return _fill(tensor, generator().uniform(a, b, size=_array(tensor).shape))


def normal_(tensor, mean: float = 0.0, std: float = 1.0):
    """Fill with N(mean, std^2) (torch: ``normal_(t, mean=0, std=1)``; heads use ``std=0.01``)."""
    if std < 0:
        raise ValueError(f"std: expected >= 0, got {std!r}")
    return _fill(tensor, generator().normal(mean, std, size=_array(tensor).shape))


def constant_(tensor, val: float):
    return _fill(tensor, val)


def zeros_(tensor):
    return _fill(tensor, 0.0)


def ones_(tensor):
    return _fill(tensor, 1.0)


def kaiming_uniform_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He et al. 2015, uniform: ``U(-b, b)``, ``b = gain * sqrt(3 / fan)`` (torch's defaults)."""
    fan = _fan(tensor, mode)
    if fan == 0:  # torch warns and leaves the (empty) tensor alone
        return tensor
    bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(fan)
    return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"):
    """He et al. 2015, normal: ``N(0, std^2)``, ``std = gain / sqrt(fan)`` (torchvision's ResNet uses
    ``mode="fan_out", nonlinearity="relu"``)."""
    fan = _fan(tensor, mode)
    if fan == 0:
        return tensor
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan))


def xavier_uniform_(tensor, gain: float = 1.0):
    """Glorot & Bengio 2010: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / max(fan_in + fan_out, 1))
    return uniform_(tensor, -bound, bound)


def default_init_(weight, bias=None):
    """torch's default for Linear, Conv2d and ConvTranspose2d: the weight first, then the bias.

    weight: ``kaiming_uniform_(a=sqrt(5))`` = U(-1/sqrt(fan_in), 1/sqrt(fan_in));
    bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with the weight's fan_in (0 bound if fan_in is 0).
    """
    kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = calculate_fan_in_and_fan_out(weight)
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound)
    return weight
