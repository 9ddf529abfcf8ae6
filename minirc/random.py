"""The one seeded random-number generator of minirc: same seed -> same numbers.

Layer initialisation (:mod:`minirc.nn.init`), the samplers of the detector and the data pipeline
all draw from :func:`generator`, so ``minirc.random.manual_seed(0)`` at the top of a script makes a
run repeatable, as ``torch.manual_seed`` does. The numbers are NumPy's (PCG64), not PyTorch's:
the same seed gives the same minirc model every time, never the same weights as torch.

Like torch, the generator starts from a fixed default seed (:data:`DEFAULT_SEED`), so even an
unseeded run is repeatable. For a bit-identical resume, save :func:`get_state` in the checkpoint
and restore it with :func:`set_state`.

>>> g = manual_seed(3); a = generator().random()
>>> _ = manual_seed(3); a == generator().random()
True
"""
from __future__ import annotations

import numbers

import numpy as np

DEFAULT_SEED = 0

_seed = DEFAULT_SEED
_generator = np.random.Generator(np.random.PCG64(DEFAULT_SEED))


def manual_seed(seed: int) -> np.random.Generator:
    """Reset the global generator to ``seed`` (a non-negative int) and return it."""
    global _generator, _seed
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"manual_seed(seed): expected an int, got {seed!r}")
    if seed < 0:
        raise ValueError(f"manual_seed(seed): expected an int >= 0, got {seed!r}")
    _seed = int(seed)
    _generator = np.random.Generator(np.random.PCG64(_seed))
    return _generator


def generator() -> np.random.Generator:
    """The global ``np.random.Generator``; call it at each use (``manual_seed`` replaces the object)."""
    return _generator


def initial_seed() -> int:
    """The seed last given to :func:`manual_seed` (or :data:`DEFAULT_SEED`)."""
    return _seed


def get_state() -> dict:
    """A copy of the generator's full state (a plain dict, picklable): save it to resume exactly."""
    return dict(_generator.bit_generator.state)


def set_state(state: dict) -> None:
    """Restore a state returned by :func:`get_state`; the next draws repeat the saved run's."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError(f"set_state(state): expected a PCG64 state dict from get_state(), got {state!r:.80}")
    _generator.bit_generator.state = state
