"""The training loop: a fast stand-in model for the loop's logic, the tiny detector for the real thing."""
import numpy as np
import pytest

from minirc import random as mrandom
from minirc.data import ShapesDataset
from minirc.nn import Module, Parameter
from minirc.train import LossLog, TrainConfig, Trainer
from minirc.train.logs import LOSS_KEYS


class _Quadratic(Module):
    """losses = c_k * sum(w^2): five scalar losses that SGD can drive to zero in a few steps."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(np.array([1.0, -2.0, 0.5], np.float32))

    def forward(self, images, targets=None):
        assert len(images) == len(targets)
        s = (self.w * self.w).sum()
        return {k: s * c for k, c in zip(LOSS_KEYS, (1.0, 0.5, 0.25, 0.2, 0.1))}


def _ds(n=5, size=32):
    return ShapesDataset(n, image_size=size, seed=3)


def test_loop_schedule_log_and_outputs(tmp_path):
    cfg = TrainConfig(iters=16, batch_size=2, lr=0.1, warmup_iters=4, warmup_factor=0.1, steps=(0.5,), gamma=0.1,
                      checkpoint_every=4)
    trainer = Trainer(_Quadratic(), _ds(), cfg, out_dir=tmp_path, progress=False)
    log = trainer.train()
    lrs = log.column("lr")
    # linear warm-up from 0.1 * lr over 4 iterations, then lr, then lr * gamma from iteration 8 (0-based)
    np.testing.assert_allclose(lrs[:4], 0.1 * np.array([0.1, 0.325, 0.55, 0.775]), rtol=1e-12)
    np.testing.assert_allclose(lrs[4:8], 0.1, rtol=1e-12)
    np.testing.assert_allclose(lrs[8:], 0.01, rtol=1e-12)
    assert trainer.warmup_iters(6) == 1  # a warm-up never takes more than a quarter of the run
    loss = log.column("loss")
    assert loss[-1] < loss[0] and list(log.column("iter")) == list(range(1, 17))
    for name in ("checkpoint.npz", "checkpoint_000004.npz", "checkpoint_000012.npz", "losses.csv",
                 "losses.json", "losses.png"):
        assert (tmp_path / name).is_file(), name
    back = LossLog.read(tmp_path / "losses.csv")
    np.testing.assert_array_equal(back.column("loss"), loss)  # repr() in the CSV: exact floats
    assert LossLog.read(tmp_path / "losses.json").records == log.records


def test_budget_sets_the_length_and_stops():
    trainer = Trainer(_Quadratic(), _ds(), TrainConfig(iters=None, budget_seconds=0.5, batch_size=2),
                      progress=False)
    trainer.train()
    assert trainer.iters >= 1 and 1 <= trainer.iteration <= trainer.iters
    assert trainer.seconds < 5.0
    with pytest.raises(ValueError, match="iters"):
        Trainer(_Quadratic(), _ds(), TrainConfig(iters=None, budget_seconds=None))


def test_non_finite_loss_is_reported():
    model = _Quadratic()
    model.w.data[:] = np.inf
    with pytest.raises(FloatingPointError, match="not finite"):
        Trainer(model, _ds(), TrainConfig(iters=2, batch_size=1), progress=False).train()


def _tiny_setup(seed=0, size=48, n=3):
    from minirc.model import MaskRCNN, override, tiny

    mrandom.manual_seed(seed)
    model = MaskRCNN(override(tiny(), {"transform.min_size": (size,), "transform.max_size": size}))
    return model, ShapesDataset(n, image_size=size, seed=1, empty_fraction=0.0, max_objects=2)


def test_overfit_two_images():
    model, ds = _tiny_setup(n=2)
    cfg = TrainConfig(iters=12, batch_size=2, lr=0.02, warmup_iters=3, hflip=0.0, steps=())
    log = Trainer(model, ds, cfg, progress=False).train()
    first, last = log.records[0], log.running_mean(window=3)
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert last["loss_classifier"] < 0.5 * first["loss_classifier"]
    assert last["loss_mask"] < 0.6 * first["loss_mask"]


def test_resume_continues_bit_identically(tmp_path):
    cfg = TrainConfig(iters=4, batch_size=2, lr=0.02, warmup_iters=2, steps=(0.5,), hflip=0.5, checkpoint_every=2)
    model, ds = _tiny_setup()
    straight = Trainer(model, ds, cfg, out_dir=tmp_path, progress=False)
    straight.train()

    other, _ = _tiny_setup(seed=99)  # different initial weights: everything must come from the checkpoint
    mrandom.manual_seed(12345)       # and a scrambled global generator
    resumed = Trainer(other, ds, cfg, progress=False).load(tmp_path / "checkpoint_000002.npz")
    assert resumed.iteration == 2 and len(resumed.log) == 2
    resumed.train()
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b, err_msg=k)
    strip = lambda log: [{k: v for k, v in r.items() if k != "seconds"} for r in log.records]  # noqa: E731
    assert strip(resumed.log) == strip(straight.log)
    sa, sb = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        np.testing.assert_array_equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"])
