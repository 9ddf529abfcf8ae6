"""Runs of fixed length: the presets' iteration counts, a progress bar whose total never moves,
and the same bits from two processes with different thread counts."""
import os
import subprocess
import sys

import numpy as np
import pytest

from minirc.train import TrainConfig, Trainer
from minirc.train.demo import DEMO_PRESETS, demo_config, set_length
from tests.train.test_trainer import _Quadratic, _ds

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("name", sorted(DEMO_PRESETS))
def test_every_preset_trains_a_fixed_number_of_iterations(name):
    cfg = demo_config(name)
    assert isinstance(cfg.train.iters, int) and cfg.train.iters >= 1 and cfg.train.budget_seconds is None


def test_the_demo_preset_length_is_pinned():
    # the README's numbers were measured with this many iterations: change both together
    assert demo_config("shapes_demo").train.iters == 1800


def test_set_length_overrides():
    assert set_length(demo_config("tiny"), iters=5).train.iters == 5
    cfg = set_length(demo_config("tiny"), budget_seconds=9.0)
    assert (cfg.train.iters, cfg.train.budget_seconds) == (None, 9.0)


class _Bar:
    """Records every total a progress bar is given."""

    def __init__(self, bar):
        self.bar, self.totals = bar, [bar.total]

    def __getattr__(self, name):
        return getattr(self.bar, name)

    def __setattr__(self, name, value):
        if name in ("bar", "totals"):
            return object.__setattr__(self, name, value)
        if name == "total":
            self.totals.append(value)
        setattr(self.bar, name, value)


@pytest.mark.parametrize("config", [TrainConfig(iters=25, batch_size=2),
                                    TrainConfig(iters=None, budget_seconds=0.3, batch_size=2)])
def test_the_progress_bar_total_never_changes(config, monkeypatch):
    bars = []
    trainer = Trainer(_Quadratic(), _ds(), config, progress=True)
    make = trainer._progress_bar
    monkeypatch.setattr(trainer, "_progress_bar", lambda started: bars.append(_Bar(make(started))) or bars[-1])
    trainer.train()
    assert len(bars) == 1 and len(set(bars[0].totals)) == 1
    assert bars[0].totals[0] == (25 if config.iters else 0.3)


def _train_in_subprocess(out, threads):
    env = dict(os.environ, MPLBACKEND="Agg", NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, "-m", "minirc", "train", "--config", "tiny", "--iters", "3",
                          "--batch-size", "2", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    with np.load(os.path.join(out, "checkpoint.npz")) as z:
        return {k: z[k] for k in z.files if k.startswith("model/")}


@pytest.mark.slow
def test_a_short_run_is_bit_identical_across_processes_and_thread_counts(tmp_path):
    one = _train_in_subprocess(tmp_path / "one", threads=1)
    two = _train_in_subprocess(tmp_path / "two", threads=2)
    assert one.keys() == two.keys() and len(one) > 10
    for k in one:
        assert one[k].tobytes() == two[k].tobytes(), k

