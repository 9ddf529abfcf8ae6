"""The demo: train a small Mask R-CNN on synthetic shapes for a fixed number of iterations, evaluate
it on held-out images, and write ``metrics.json`` plus figures. ``python -m minirc demo --out runs/demo``.

A run is a fixed number of iterations, so every machine gets the same numbers (bit for bit on the
cpu backend, for any thread count); ``--budget-seconds`` is an option for a time-boxed run whose
length then depends on the machine's speed.

Outputs in ``out``:

* ``metrics.json`` -- ``{"bbox": {"AP", "AP50", "AP75", ...}, "segm": {...}, "train_seconds",
  "phases": {"environment", "first_iteration", "training", "evaluation", "figures"}, ...}``;
* ``predictions.png`` -- held-out images: ground truth above, predictions below;
* ``losses.png``, ``losses.csv``, ``losses.json`` -- the loss log and its curves;
* ``checkpoint.npz`` -- the trained model (``python -m minirc predict runs/demo/checkpoint.npz ...``).

The training images and the held-out images come from two :class:`ShapesDataset` seeds
(``seed`` and ``seed + TEST_SEED_OFFSET``), so the evaluation never sees a training image.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

from minirc.train.trainer import TrainConfig

TEST_SEED_OFFSET = 1_000_003
DEMO_ITERS = 1800  # the demo's fixed length: README and docs/training.md quote the numbers it gives


@dataclasses.dataclass
class DemoConfig:
    """What the demo trains: a model preset, the shapes data and the solver."""

    model: str = "shapes_demo"       # preset of minirc.model.config (num_classes set from the data)
    # model config fields changed by dotted name (``--set roi_heads.pooler_type=roi_pool``), applied
    # to the preset with minirc.model.config.override; kept in checkpoints so --resume rebuilds them
    model_overrides: dict = dataclasses.field(default_factory=dict)
    image_size: int = 128            # square shapes images
    classes: tuple = ("circle", "square", "triangle")
    # held-out images: up to 8 objects each (occlusion-correct masks, up to 70 % of an object hidden)
    max_objects: int = 8
    # training images: up to this many objects each. Denser images give the classifier more positive
    # RoIs per step: at a fixed 800 iterations, mask AP50 on the 8-object held-out images went from
    # 0.63 (8 objects) to 0.69 (12) to 0.78 (16). But each step costs more (more RoIs through the mask
    # head): in a 480 s budget, 16 objects made 863 iterations and reached 0.85, fewer than the
    # 8-object recipe in the same time (docs/training.md). So the demo trains on what it holds out.
    train_max_objects: int = 8
    size_range: tuple = (0.08, 0.22)  # object radius as a fraction of the image side (ShapesDataset)
    train_images: int = 20000        # generated on demand, so a large number costs nothing
    test_images: int = 100           # held-out images for the metrics
    figure_images: int = 6           # held-out images in predictions.png
    figure_score_threshold: float = 0.5  # detections drawn in predictions.png score at least this
    # The solver (docs/training.md, "The recipe"): lr 0.06 for 4 images, 8x torchvision's per-image
    # rate, which a BatchNorm backbone trained from scratch takes (0.12 diverges); a linear warm-up
    # of 100 iterations; the lr drops late, at 92 % and 97 % of the run, because a short run gains
    # more from time at the full rate than from a long tail (800 iterations, mask AP50: steps at
    # 75/90 % 0.63, 92/97 % 0.78). A fixed length, so that every machine gets the same numbers.
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(
        iters=DEMO_ITERS, budget_seconds=None, batch_size=4, lr=0.06, warmup_iters=100, steps=(0.92, 0.97)))
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        d["train"] = self.train.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DemoConfig":
        """Inverse of :meth:`to_dict` (a checkpoint's ``extra["demo"]``)."""
        d = dict(d)
        d["classes"] = tuple(d["classes"])
        d["size_range"] = tuple(d.get("size_range", (0.08, 0.22)))
        d["train"] = TrainConfig.from_dict(d["train"])
        d.setdefault("train_max_objects", d.get("max_objects", 4))  # older checkpoints trained on their max_objects
        return cls(**d)


DEMO_PRESETS = {
    # the mask branch learns from at most 8 positives per image (torchvision: all of them): 12 % less
    # CPU per late-training step, and the masks are not what limits AP this early (the classifier is)
    "shapes_demo": DemoConfig(model_overrides={"roi_heads.mask_rois_per_image": 8}),
    "tiny": DemoConfig(model="tiny", image_size=64, test_images=50, train_max_objects=8, train=TrainConfig(
        iters=300, budget_seconds=None, batch_size=4, lr=0.02, warmup_iters=50)),
}


def demo_config(name: str) -> DemoConfig:
    """A fresh copy of the run preset ``name`` (see :data:`DEMO_PRESETS`)."""
    if name not in DEMO_PRESETS:
        raise ValueError(f"config: expected one of {sorted(DEMO_PRESETS)}, got {name!r}")
    base = DEMO_PRESETS[name]
    return dataclasses.replace(base, train=dataclasses.replace(base.train), model_overrides=dict(base.model_overrides))


def datasets(cfg: DemoConfig, seed: int):
    """The training and held-out :class:`ShapesDataset` of a run config (two seeds, never shared)."""
    from minirc.data import ShapesDataset

    common = dict(image_size=cfg.image_size, classes=cfg.classes, size_range=tuple(cfg.size_range))
    train_ds = ShapesDataset(cfg.train_images, max_objects=cfg.train_max_objects, seed=seed, **common)
    test_ds = ShapesDataset(cfg.test_images, max_objects=cfg.max_objects, seed=seed + TEST_SEED_OFFSET, **common)
    return train_ds, test_ds


def build(cfg: DemoConfig, seed: int, data=None):
    """The model (seeded) and the training and held-out data sets of a demo config.

    data: ``(train_ds, test_ds)`` to use instead of the config's shapes (any data sets with the
    shapes API, e.g. COCO files: minirc/train/coco_run.py); the model's classes follow ``train_ds``.
    """
    from minirc import random as mrandom
    from minirc.model import MaskRCNN
    from minirc.train.settings import model_config

    train_ds, test_ds = datasets(cfg, seed) if data is None else data
    mrandom.manual_seed(seed)
    model = MaskRCNN(model_config(cfg, train_ds.num_classes))
    return model, train_ds, test_ds


def set_length(cfg: DemoConfig, iters: int | None = None, budget_seconds: float | None = None) -> DemoConfig:
    """Override a run's length in place: ``iters`` alone trains exactly that many iterations,
    ``budget_seconds`` alone trains for that long, both stop at whichever comes first."""
    if iters is not None:
        cfg.train.iters, cfg.train.budget_seconds = iters, budget_seconds
    elif budget_seconds is not None:
        cfg.train.iters, cfg.train.budget_seconds = None, budget_seconds
    return cfg


@dataclasses.dataclass
class RunResult:
    """What :func:`train_and_evaluate` returns: the trained model and its scores on held-out images."""
    model: object
    trainer: object
    train_ds: object
    test_ds: object
    predictions: list
    metrics: dict


def train_and_evaluate(cfg: DemoConfig, seed: int = 0, out=None, backend: str | None = None,
                       progress: bool = True, echo=print) -> RunResult:
    """Train the run config ``cfg`` with ``seed`` (checkpoint and loss log in ``out`` unless None),
    then predict and score the held-out images. ``metrics`` holds the COCO numbers, the run's length
    and ``phases`` (seconds of the first iteration, training, evaluation)."""
    from minirc.train.evaluate import evaluate_predictions, predict_dataset
    from minirc.train.trainer import Trainer

    cfg.train.seed = seed
    model, train_ds, test_ds = build(cfg, seed)
    n_params = sum(int(p.data.size) for p in model.parameters())
    length = " or ".join(x for x in (f"{cfg.train.iters} iterations" if cfg.train.iters else "",
                                     f"{cfg.train.budget_seconds:g} s" if cfg.train.budget_seconds else "") if x)
    changed = "".join(f", {k}={v}" for k, v in cfg.model_overrides.items())
    echo(f"[demo] model '{cfg.model}'{changed} ({n_params:,} parameters), {len(cfg.classes)} shape classes, "
         f"{cfg.image_size}px images, batch {cfg.train.batch_size}; training for {length}")
    trainer = Trainer(model, train_ds, cfg.train, out_dir=out, progress=progress, backend=backend,
                      extra={"demo": cfg.to_dict(), "class_names": list(train_ds.class_names)})
    trainer.train()
    note = " (stopped by the time budget)" if trainer.stopped_by_budget else ""
    echo(f"[demo] trained {trainer.iteration} iterations in {trainer.seconds:.1f} s{note}; "
         f"final losses {_fmt(trainer.log.running_mean())}")

    echo(f"[demo] evaluating on {len(test_ds)} held-out images ...")
    predictions, ids, predict_seconds = predict_dataset(model, test_ds, cfg.train.batch_size, backend, progress)
    started = time.perf_counter()
    metrics = evaluate_predictions(test_ds, predictions, ids)
    score_seconds = time.perf_counter() - started
    first = trainer.first_iteration_seconds
    metrics.update(train_seconds=trainer.seconds, iterations=trainer.iteration,
                   seconds_per_iteration=trainer.seconds / max(trainer.iteration, 1),
                   predict_seconds=predict_seconds, images_per_second=len(ids) / max(predict_seconds, 1e-9),
                   config=cfg.model, model_overrides=dict(cfg.model_overrides), seed=seed,
                   test_images=len(test_ds), evaluator="minirc.evaluation.evaluate_coco",
                   phases={"first_iteration": first, "training": trainer.seconds - first,
                           "evaluation": predict_seconds + score_seconds})
    return RunResult(model, trainer, train_ds, test_ds, predictions, metrics)


def run_demo(out="runs/demo", config: str | DemoConfig = "shapes_demo", budget_seconds: float | None = None,
             iters: int | None = None, seed: int = 0, backend: str | None = None, progress: bool = True,
             test_images: int | None = None, sets: dict | None = None, echo=print) -> dict:
    """Train, evaluate, write outputs into ``out``; return the metrics dict.

    iters / budget_seconds: override the preset's run length (:func:`set_length`).
    test_images: override the number of held-out images (the preset's: 100 for shapes_demo).
    sets: ``--set`` strings by dotted name (:mod:`minirc.train.settings`).
    The environment phase is the time from ``$MINIRC_T0`` (epoch seconds, set by scripts/demo.sh
    before it makes the virtual environment) to the start of this call; absent, it is left out.
    """
    from minirc.train.settings import apply_sets

    entered = time.time()
    cfg = demo_config(config) if isinstance(config, str) else config
    cfg = apply_sets(cfg, sets or {})
    set_length(cfg, iters, budget_seconds)
    if test_images is not None:
        cfg.test_images = test_images
    os.makedirs(out, exist_ok=True)
    started = time.perf_counter()
    run = train_and_evaluate(cfg, seed, out, backend, progress, echo)
    metrics = run.metrics
    t = time.perf_counter()
    _write_figure(run, cfg, os.path.join(out, "predictions.png"))
    phases = {"environment": _environment_seconds(entered), **metrics.pop("phases"),
              "figures": time.perf_counter() - t}
    metrics.update(phases={k: v for k, v in phases.items() if v is not None},
                   total_seconds=time.perf_counter() - started + (phases["environment"] or 0.0))
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    for kind in ("bbox", "segm"):
        m = metrics[kind]
        echo(f"[demo] {kind:4s}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}")
    echo("[demo] time: " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in metrics["phases"].items())
         + f"; {metrics['total_seconds']:.0f} s in all")
    echo(f"[demo] wrote metrics.json, predictions.png, losses.png, losses.csv, checkpoint.npz to {out}")
    return metrics


def _environment_seconds(entered: float) -> float | None:
    t0 = os.environ.get("MINIRC_T0")
    try:
        return max(0.0, entered - float(t0)) if t0 else None
    except ValueError:
        return None


def _write_figure(run: RunResult, cfg: DemoConfig, path: str) -> None:
    """``predictions.png``: the first held-out images, ground truth above the predictions."""
    import matplotlib.pyplot as plt

    from minirc.visualize import show_predictions_vs_ground_truth

    k = min(cfg.figure_images, len(run.test_ds))
    items = [run.test_ds[i] for i in range(k)]
    fig = show_predictions_vs_ground_truth([im for im, _ in items], [t for _, t in items], run.predictions[:k],
                                           run.train_ds.class_names, cfg.figure_score_threshold,
                                           title=f"held-out shapes: ground truth (top) vs predictions (bottom), "
                                                 f"mask AP50 {run.metrics['segm']['AP50']:.3f}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(values: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in values.items())
