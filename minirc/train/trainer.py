"""The training loop: sum the five losses, backward, SGD step, LR schedule; log, checkpoint, resume.

One iteration, as in torchvision's references/detection/engine.py::train_one_epoch::

    losses = model(images, targets)          # dict of 5 scalar Tensors (model in train mode)
    loss = sum(losses.values())
    optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()

SGD with momentum and weight decay; the learning rate warms up linearly from
``lr * warmup_factor`` over ``warmup_iters`` iterations, then drops by ``gamma`` at each step
(``steps`` are fractions of the total iterations, so a schedule scales with the run's length).

A run has a length in iterations (``iters``, the default of every preset: the same numbers on
every machine) or a time budget (``budget_seconds``) or both. With a budget only, the trainer first
compiles the kernels on one batch, times two more forward/backward passes (no update), and sets
``iters`` to what fits in the time left; every 10 iterations, until the first LR step, it
re-estimates ``iters`` from the measured speed (a shared machine's speed moves); the budget is also
a hard stop. The progress bar's total never changes: iterations for a run of fixed length, the
budget's seconds for a budgeted one.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np

from minirc.data.loader import DataLoader, RandomHorizontalFlip
from minirc.train.checkpoint import load_checkpoint, save_checkpoint
from minirc.train.logs import LossLog

SHORT_NAMES = {"loss": "loss", "loss_classifier": "cls", "loss_box_reg": "box", "loss_mask": "mask",
               "loss_objectness": "obj", "loss_rpn_box_reg": "rpn"}


@dataclasses.dataclass
class TrainConfig:
    """Solver and loop settings (the model's own settings live in its config)."""

    iters: int | None = 300          # total iterations; None: as many as budget_seconds allows
    budget_seconds: float | None = None  # wall-clock limit of the loop (compilation included)
    batch_size: int = 4              # images per iteration
    lr: float = 0.02                 # base learning rate (torchvision: 0.02 for 16 images)
    momentum: float = 0.9
    weight_decay: float = 1e-4       # L2 on every trainable parameter, as torchvision's references
    warmup_iters: int = 50           # linear warm-up length, capped at iters // 4 (torchvision: min(1000, len(loader) - 1))
    warmup_factor: float = 0.001     # the warm-up starts at lr * warmup_factor
    steps: tuple = (0.75, 0.9)       # multiply lr by gamma after these fractions of iters
    gamma: float = 0.1
    hflip: float = 0.5               # probability of a horizontal flip per training image
    seed: int = 0                    # batch order and augmentation (the model's RNG is separate)
    checkpoint_every: int = 0        # also save every N iterations (0: only at the end)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["steps"] = list(self.steps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"TrainConfig: unknown keys {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if "steps" in d:
            d["steps"] = tuple(d["steps"])
        return cls(**d)

    def milestones(self, iters: int) -> list:
        return sorted({max(1, int(round(f * iters))) for f in self.steps if 0 < f < 1})


def _model_inputs(images):
    """Images as the model takes them: host arrays on every backend. On ``"cuda"`` the model's
    transform copies the normalised, padded batch to the GPU once per iteration (torchvision's
    ``images.to(device)``); targets stay NumPy (matching, sampling, mask targets are host code)."""
    return [np.ascontiguousarray(im) for im in images]


class Trainer:
    """Train ``model`` on ``dataset`` with ``config`` (a :class:`TrainConfig`).

    out_dir: where checkpoints (``checkpoint.npz``, ``checkpoint_<iter>.npz``), the loss log
    (``losses.csv``, ``losses.json``) and the loss plot (``losses.png``) go; None writes nothing.
    backend: the backend the loop runs under (default: the current one).
    extra: JSON-able dict stored in every checkpoint (e.g. the data set's settings).
    """

    def __init__(self, model, dataset, config: TrainConfig | None = None, out_dir=None, progress: bool = True,
                 backend: str | None = None, extra: dict | None = None):
        from minirc.optim import SGD

        self.model, self.dataset = model, dataset
        self.config = config = config or TrainConfig()
        if config.iters is None and config.budget_seconds is None:
            raise ValueError("config: give iters, budget_seconds or both (got neither)")
        if config.iters is not None and config.iters < 1:
            raise ValueError(f"config.iters: expected an int >= 1, got {config.iters!r}")
        self.out_dir, self.progress, self.backend = out_dir, progress, backend
        self.extra = dict(extra or {})
        transform = RandomHorizontalFlip(config.hflip) if config.hflip > 0 else None
        self.loader = DataLoader(dataset, config.batch_size, shuffle=True, seed=config.seed, transform=transform)
        self.optimizer = SGD(list(model.parameters()), lr=config.lr, momentum=config.momentum,
                             weight_decay=config.weight_decay)
        self.iters = config.iters
        self.scheduler = None if self.iters is None else self._make_scheduler(self.iters)
        self.iteration = 0
        self.seconds_before = 0.0  # training time of earlier sessions (resume)
        self.log = LossLog()
        self.stopped_by_budget = False
        self.replan = False  # budget-only runs re-estimate their length as they go (see _replan)
        self.first_iteration_seconds = 0.0  # this session's first iteration (it compiles the kernels)

    def _make_scheduler(self, iters: int):
        from minirc.optim import WarmupMultiStepLR

        c = self.config
        return WarmupMultiStepLR(self.optimizer, milestones=c.milestones(iters), gamma=c.gamma,
                                 warmup_iters=self.warmup_iters(iters), warmup_factor=c.warmup_factor)

    def warmup_iters(self, iters: int) -> int:
        """The warm-up length actually used: at most a quarter of the run, so that a short run (or a
        budget that allows few iterations) still trains at the full rate before its first step."""
        return min(self.config.warmup_iters, max(iters // 4, 1))

    # ---- one iteration --------------------------------------------------------------------
    def _losses(self, images, targets) -> dict:
        self.model.train()
        losses = self.model(_model_inputs(images), targets)
        return losses

    def step(self, images, targets) -> dict:
        """One SGD update on a batch; returns the loss values (floats) and the lr used."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        try:
            losses = self._losses(images, targets)
        except ValueError as e:  # NaN weights surface as non-finite boxes deep in the model
            self._raise_if_diverged(e)
            raise
        total = _sum(losses)
        values = {k: _value(v) for k, v in losses.items()}
        values["loss"] = _value(total)
        if not math.isfinite(values["loss"]):
            raise FloatingPointError(f"iteration {self.iteration + 1}: the loss is not finite ({values}); "
                                     f"lower the learning rate (config.lr={self.config.lr}) or lengthen the warm-up")
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        self.scheduler.step()
        values["lr"] = lr
        return values

    def _raise_if_diverged(self, error):
        """FloatingPointError with the trainer's advice when ``error`` comes from a diverged run: a
        parameter is no longer finite, or the last iteration's loss was not finite or above 1e6."""
        bad = [n for n, p in self.model.named_parameters()
               if not np.all(np.isfinite(np.asarray(p.numpy() if hasattr(p, "numpy") else p.data)))]
        last = self.log.records[-1]["loss"] if len(self.log) else None
        if bad or (last is not None and not abs(last) < 1e6):
            what = (f"{len(bad)} parameter(s) are no longer finite (first: {bad[0]})" if bad
                    else f"the last loss was {last:.4g}")
            raise FloatingPointError(
                f"iteration {self.iteration + 1}: training diverged: {what}; lower the learning rate "
                f"(config.lr={self.config.lr}) or lengthen the warm-up (the model then failed with: {error})"
            ) from error

    def _calibrate(self, started: float) -> int:
        """Budget only: time forward/backward passes (no update) and return the iterations that fit."""
        images, targets = zip(*(self.dataset[i] for i in range(min(self.config.batch_size, len(self.dataset)))))
        times = []
        for _ in range(3):  # the first pass compiles the kernels and is not counted
            t = time.perf_counter()
            _sum(self._losses(list(images), list(targets))).backward()
            times.append(time.perf_counter() - t)
        self.optimizer.zero_grad()
        per_iter = max(times[1:]) * 1.1  # + the update, and a margin for a busy machine
        left = self.config.budget_seconds - (time.perf_counter() - started)
        return max(1, int(left / per_iter))

    def _replan(self, started: float) -> None:
        """Budget only: re-estimate ``iters`` from the speed of the last iterations, while no LR step
        has happened yet (moving a milestone later would change nothing already done)."""
        recent = np.diff(self.log.column("seconds")[-11:])
        if recent.size < 5:
            return
        left = self.config.budget_seconds - (time.perf_counter() - started)
        iters = self.iteration + max(1, int(left / (np.median(recent) * 1.05)))
        milestones = self.config.milestones(iters)
        if milestones and milestones[0] <= self.iteration + 1:
            return
        self.iters = iters
        self.scheduler.milestones = milestones  # closed-form schedule: only future lrs change

    # ---- the loop ---------------------------------------------------------------------------
    def train(self) -> LossLog:
        """Run until ``iters`` (or the time budget); save the final checkpoint, log and plot."""
        from minirc.backend import use_backend, get_backend

        started = time.perf_counter() - self.seconds_before
        with use_backend(get_backend(self.backend)):
            if self.iters is None:
                self.iters = self._calibrate(started)
                self.scheduler = self._make_scheduler(self.iters)
                self.replan = True
            bar = self._progress_bar(started)
            budget = self.config.budget_seconds
            first = self.iteration
            while self.iteration < self.iters:
                # the budget is checked between iterations; a session always makes at least one
                if budget is not None and self.iteration > first and time.perf_counter() - started > budget:
                    self.stopped_by_budget = True
                    break
                t = time.perf_counter()
                images, targets = self.loader.next_batch()
                values = self.step(images, targets)
                self.iteration += 1
                now = time.perf_counter()
                if self.iteration == first + 1:
                    self.first_iteration_seconds = now - t
                self.log.append({"iter": self.iteration, "lr": values.pop("lr"), "seconds": now - started, **values})
                bar.update(min(now - started, budget) - bar.n if self.replan else 1)
                bar.set_postfix({SHORT_NAMES.get(k, k): f"{v:.3f}" for k, v in self.log.running_mean().items()},
                                refresh=False)
                if self.replan and self.iteration % 10 == 0 and self.iteration < self.iters:
                    self._replan(started)
                every = self.config.checkpoint_every
                if every and self.iteration % every == 0 and self.iteration < self.iters:
                    self.save(self._path(f"checkpoint_{self.iteration:06d}.npz"), started)
            bar.close()
        self.seconds_before = time.perf_counter() - started
        if self.out_dir is not None:
            self.save(self._path("checkpoint.npz"))
            self.write_logs()
        return self.log

    def _progress_bar(self, started: float):
        """A tqdm bar whose total is fixed: the run's iterations, or a budgeted run's seconds."""
        from tqdm import tqdm

        common = dict(disable=not self.progress, desc="train", mininterval=1.0, dynamic_ncols=True)
        if self.replan:
            budget = self.config.budget_seconds
            return tqdm(total=budget, initial=min(time.perf_counter() - started, budget), unit="s",
                        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{postfix}]", **common)
        return tqdm(total=self.iters, initial=self.iteration, unit="it", **common)

    @property
    def seconds(self) -> float:
        """Training seconds so far (all sessions)."""
        return self.seconds_before

    def write_logs(self):
        """``losses.csv``, ``losses.json`` and ``losses.png`` in ``out_dir``."""
        from minirc.train.plots import plot_losses
        import matplotlib.pyplot as plt

        self.log.write(self.out_dir)
        if len(self.log):
            plt.close(plot_losses(self.log, self._path("losses.png")))

    def _path(self, name):
        os.makedirs(self.out_dir, exist_ok=True)
        return os.path.join(self.out_dir, name)

    # ---- checkpoints --------------------------------------------------------------------------
    def save(self, path, started: float | None = None) -> str:
        """Checkpoint everything needed to continue: weights, optimizer, scheduler, loader, RNG, log."""
        seconds = self.seconds_before if started is None else time.perf_counter() - started
        extra = dict(self.extra, iteration=self.iteration, iters=self.iters, seconds=seconds,
                     train_config=self.config.to_dict(), log=self.log.records)
        if hasattr(self.dataset, "config") and "data" not in extra:
            extra["data"] = self.dataset.config()
        return save_checkpoint(path, self.model, self.optimizer, self.scheduler, self.loader, extra=extra)

    def load(self, path) -> "Trainer":
        """Restore a checkpoint written by :meth:`save` into this trainer (and the global RNG)."""
        ckpt = load_checkpoint(path)
        extra = ckpt["extra"]
        if "iteration" not in extra:
            raise ValueError(f"checkpoint: {os.fspath(path)!r} was not written by Trainer.save (no iteration)")
        self.iters = extra["iters"]
        self.scheduler = self._make_scheduler(self.iters)
        ckpt.restore(self.model, self.optimizer, self.scheduler, self.loader)
        self.iteration = int(extra["iteration"])
        self.seconds_before = float(extra.get("seconds", 0.0))
        self.log = LossLog(extra.get("log", []))
        return self


def _value(v) -> float:
    return float(np.asarray(v.numpy() if hasattr(v, "numpy") else v))


def _sum(losses: dict):
    total = None
    for v in losses.values():
        total = v if total is None else total + v
    return total
