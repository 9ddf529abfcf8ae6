"""Learning-rate schedules stepped once per iteration: linear warm-up, then step decay.

The detection recipe of torchvision's references (``references/detection/train.py``) and of
maskrcnn-benchmark / detectron2's ``WarmupMultiStepLR``: over the first ``warmup_iters``
iterations the learning rate climbs linearly from ``warmup_factor * base_lr`` to ``base_lr``,

    factor(it) = warmup_factor * (1 - it / warmup_iters) + it / warmup_iters      for it < warmup_iters

and it is multiplied by ``gamma`` at every milestone passed (``bisect_right``: the decay applies *from*
the milestone iteration on):

    lr(it) = base_lr * factor(it) * gamma ** (number of milestones <= it)

Every value is computed in closed form from the iteration counter (never by repeated multiplication),
so a schedule restored with ``load_state_dict`` continues with exactly the same numbers.

Protocol (torch's ``LRScheduler``): building a scheduler records each group's ``initial_lr`` and sets
the lr of iteration 0; call ``optimizer.step()`` then ``scheduler.step()`` once per iteration;
``get_last_lr()`` returns the current lrs.
"""
from __future__ import annotations

import abc
from bisect import bisect_right

from minirc import _checks


class _Schedule(abc.ABC):
    """Base: subclasses define ``factor(it)``, the multiplier of every group's base lr at iteration ``it``."""

    def __init__(self, optimizer, last_epoch: int = -1):
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(f"optimizer: expected an optimizer with param_groups, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            if last_epoch == -1:
                group.setdefault("initial_lr", group["lr"])
            elif "initial_lr" not in group:
                raise KeyError("optimizer: resuming with last_epoch >= 0 needs 'initial_lr' in every param group")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    @abc.abstractmethod
    def factor(self, it: int) -> float:
        """The multiplier of every group's base lr at iteration ``it`` (``it = 0`` is the first)."""

    def get_lr(self) -> list:
        f = self.factor(self.last_epoch)
        return [base * f for base in self.base_lrs]

    def step(self) -> None:
        """Advance one iteration and write the new learning rates into the optimizer."""
        self.last_epoch += 1
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr

    def get_last_lr(self) -> list:
        return list(self._last_lr)

    def state_dict(self) -> dict:
        """Everything but the optimizer (torch's convention): the counter, base lrs and settings."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict) -> None:
        unknown = set(state_dict) - set(self.state_dict())
        if unknown:
            raise ValueError(f"state_dict: unexpected keys {sorted(unknown)} for {type(self).__name__}")
        self.__dict__.update({k: (list(v) if isinstance(v, list) else v) for k, v in state_dict.items()})
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            group["lr"] = lr


def _warmup_factor(it, warmup_iters, warmup_factor):
    if it >= warmup_iters:
        return 1.0
    alpha = it / warmup_iters
    return warmup_factor * (1 - alpha) + alpha


def _milestones(milestones):
    ms = list(milestones)
    if not all(isinstance(m, int) and not isinstance(m, bool) and m >= 0 for m in ms):
        raise TypeError(f"milestones: expected non-negative ints (iterations), got {milestones!r}")
    if ms != sorted(ms):
        raise ValueError(f"milestones: expected an increasing list, got {milestones!r}")
    return ms


class LinearWarmup(_Schedule):
    """``factor = warmup_factor * (1 - it/warmup_iters) + it/warmup_iters`` for ``it < warmup_iters``, then 1."""

    def __init__(self, optimizer, warmup_iters=1000, warmup_factor=1.0 / 1000, last_epoch=-1):
        self.warmup_iters = _checks.positive_int(warmup_iters, "warmup_iters", minimum=0)
        self.warmup_factor = _checks.number(warmup_factor, "warmup_factor", low=0.0, high=1.0)
        super().__init__(optimizer, last_epoch)

    def factor(self, it):
        return _warmup_factor(it, self.warmup_iters, self.warmup_factor)


class MultiStepLR(_Schedule):
    """``factor = gamma ** (number of milestones <= it)`` (``torch.optim.lr_scheduler.MultiStepLR``)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = _milestones(milestones)
        self.gamma = _checks.number(gamma, "gamma", low=0.0)
        super().__init__(optimizer, last_epoch)

    def factor(self, it):
        return self.gamma ** bisect_right(self.milestones, it)


class WarmupMultiStepLR(_Schedule):
    """Linear warm-up then step decay, per iteration (the detection recipe; see the module docstring).

    optimizer: an optimizer with ``param_groups``; milestones: increasing iteration numbers;
    gamma: the decay per milestone; warmup_iters: length of the warm-up (0: none);
    warmup_factor: the lr multiplier at iteration 0 (torchvision's references use 1/1000).
    """

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_iters=1000, warmup_factor=1.0 / 1000,
                 last_epoch=-1):
        self.milestones = _milestones(milestones)
        self.gamma = _checks.number(gamma, "gamma", low=0.0)
        self.warmup_iters = _checks.positive_int(warmup_iters, "warmup_iters", minimum=0)
        self.warmup_factor = _checks.number(warmup_factor, "warmup_factor", low=0.0, high=1.0)
        super().__init__(optimizer, last_epoch)

    def factor(self, it):
        return _warmup_factor(it, self.warmup_iters, self.warmup_factor) * self.gamma ** bisect_right(
            self.milestones, it)
