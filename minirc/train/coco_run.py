"""Train on your own COCO-JSON data: ``minirc train --coco TRAIN.json --image-dir DIR [--val-coco VAL.json]``.

The run preset (``--config``, :data:`minirc.train.demo.DEMO_PRESETS`) gives the model and the
solver; the data comes from the JSON files:

* classes: the file's categories, sorted by id, become the contiguous training labels 1..K-1
  (0 is background; :class:`minirc.data.COCODataset`); the checkpoint keeps the category ids and
  names in label order (``extra["coco"]["categories"]``), so ``predict`` and ``eval`` label figures
  with the names and write results with the file's ids;
* images of any size, resized and padded by the model's transform (``transform.min_size``,
  ``transform.max_size``: ``--set transform.min_size=256``); horizontal flips with probability
  ``train.hflip`` (:class:`minirc.data.loader.RandomHorizontalFlip`);
* crowd regions (``iscrowd=1``) are left out of the training targets and images left with no object
  are skipped, as torchvision's ``references/detection`` does; the evaluator sees the original
  annotations, crowds included, and ignores detections matched to a crowd (COCO's rule);
* with a validation file, the model is scored every ``eval_every`` iterations and after the last one:
  ``val_bbox_AP``, ``val_bbox_AP50``, ``val_segm_AP``, ``val_segm_AP50`` join the loss log's record of
  that iteration (``losses.json``, ``losses.csv``) and a panel of ``losses.png``. Evaluation runs in
  eval mode without touching the random generator or any batch-norm statistics, so the weights
  are the same bit for bit with or without it; its time counts in the run's seconds.

Deterministic on the cpu backend like the shapes path: the model is seeded, the batch order and the
flips are functions of ``(seed, epoch, position)`` (minirc/data/loader.py), reading the files is pure.
"""
from __future__ import annotations

import dataclasses
import os

from minirc.data.coco import COCODataset
from minirc.train.trainer import Trainer

AP_KEYS = tuple(f"val_{t}_{k}" for t in ("bbox", "segm") for k in ("AP", "AP50"))


# ---- data and categories ------------------------------------------------------------------------
def categories(ds) -> list:
    """``[{"id": category id, "name": name}, ...]`` in training-label order (label k is entry k-1)."""
    return [{"id": int(ds.label_to_category_id[k]), "name": str(ds.class_names[k])}
            for k in range(1, ds.num_classes)]


def check_categories(want: list, ds, where: str) -> None:
    """Raise a ValueError unless ``ds`` has exactly the categories ``want`` (ids and names)."""
    got = categories(ds)
    if got != want:
        raise ValueError(f"{where}: {ds.source!r} has the categories {_fmt(got)}; the model was trained on "
                         f"{_fmt(want)} (ids and names must match)")


def _fmt(cats) -> str:
    return "[" + ", ".join(f"{c['id']}: {c['name']!r}" for c in cats) + "]"


def load_datasets(train, image_dir=None, val=None, val_image_dir=None):
    """``(train_ds, val_ds or None)``: the training file without images that hold no kept object,
    the validation file whole (an image without objects can still hold false positives)."""
    train_ds = COCODataset(train, image_dir, remove_images_without_annotations=True)
    if len(train_ds) == 0:
        raise ValueError(f"--coco: {train_ds.source!r} has no image with a non-crowd annotation to train on")
    train_ds.check()  # every file and box, before the first iteration
    val_ds = None
    if val is not None:
        val_ds = COCODataset(val, val_image_dir)
        check_categories(categories(train_ds), val_ds, "--val-coco")
        val_ds.check()
    return train_ds, val_ds


def coco_info(extra) -> dict | None:
    """The ``extra["coco"]`` record of a checkpoint trained on COCO files, else None."""
    info = (extra or {}).get("coco")
    return info if isinstance(info, dict) and "categories" in info else None


def label_to_category_id(extra) -> dict | None:
    """Training label -> COCO category id of a COCO checkpoint (None for the shapes)."""
    info = coco_info(extra)
    return None if info is None else {k + 1: int(c["id"]) for k, c in enumerate(info["categories"])}


# ---- the trainer --------------------------------------------------------------------------------
class COCOTrainer(Trainer):
    """:class:`Trainer` that scores ``val_dataset`` every ``eval_every`` iterations and at the end.

    The scores go into the loss-log record of the iteration that was just trained.
    """

    def __init__(self, model, dataset, config, val_dataset=None, eval_every: int = 0, **kwargs):
        super().__init__(model, dataset, config, **kwargs)
        if eval_every is None or int(eval_every) < 0:
            raise ValueError(f"eval_every: expected an int >= 0 (0: only after the last iteration), got {eval_every!r}")
        self.val_dataset, self.eval_every = val_dataset, int(eval_every)
        self.last_eval_iteration = 0

    def step(self, images, targets) -> dict:
        values = super().step(images, targets)
        done = self.iteration + 1   # the iteration this step trained (the loop counts it next)
        if self.val_dataset is not None and (done == self.iters or (self.eval_every and done % self.eval_every == 0)):
            values.update(self.evaluate(done))
        return values

    def evaluate(self, iteration: int) -> dict:
        """``{val_bbox_AP, val_bbox_AP50, val_segm_AP, val_segm_AP50}`` of the model now."""
        from minirc.train.evaluate import evaluate_predictions, predict_dataset

        predictions, ids, _ = predict_dataset(self.model, self.val_dataset, self.config.batch_size, self.backend)
        metrics = evaluate_predictions(self.val_dataset, predictions, ids)
        self.model.train()
        self.last_eval_iteration = iteration
        return {f"val_{t}_{k}": metrics[t][k] for t in ("bbox", "segm") for k in ("AP", "AP50")}

    def train(self):
        log = super().train()
        if self.val_dataset is not None and self.last_eval_iteration != self.iteration and len(log):
            log.records[-1].update(self.evaluate(self.iteration))   # stopped by the time budget
            if self.out_dir is not None:
                self.save(self._path("checkpoint.npz"))
                self.write_logs()
        return log

    def write_logs(self):
        """``losses.json``, ``losses.csv`` (with the AP columns) and ``losses.png`` (with an AP panel)."""
        import matplotlib.pyplot as plt

        from minirc.train.plots import plot_losses

        self.log.write_json(self._path("losses.json"))
        write_csv(self.log, self._path("losses.csv"))
        if len(self.log):
            fig = plot_losses(self.log)
            add_ap_panel(fig, self.log)
            fig.savefig(self._path("losses.png"), dpi=100)
            plt.close(fig)


def write_csv(log, path) -> str:
    """The loss log as CSV: ``iter, lr, seconds``, the losses, then the AP columns present."""
    import csv

    present = [k for k in AP_KEYS if any(k in r for r in log.records)]
    fields = ["iter", "lr", "seconds"] + log.keys() + present
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in log.records:
            w.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in r.items()})
    return os.fspath(path)


def add_ap_panel(fig, log) -> None:
    """Draw the validation AP points in the first free panel of a :func:`plot_losses` figure."""
    import numpy as np

    present = [k for k in AP_KEYS if any(k in r for r in log.records)]
    free = [ax for ax in fig.axes if not ax.axison]
    if not present or not free:
        return
    ax = free[0]
    ax.axis("on")
    it = log.column("iter")
    for key, style in zip(present, ("o-", "o--", "s-", "s--")):
        y = log.column(key)
        keep = ~np.isnan(y)
        ax.plot(it[keep], y[keep], style, ms=3, label=key[len("val_"):])
    ax.set_ylim(0, 1)
    ax.set_title("validation AP")
    ax.set_xlabel("iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


# ---- a run --------------------------------------------------------------------------------------
@dataclasses.dataclass
class COCOFiles:
    """Where a run's data lives (kept in the checkpoint so that ``--resume`` finds it again)."""
    train: str
    image_dir: str | None = None
    val: str | None = None
    val_image_dir: str | None = None
    eval_every: int = 0


def make_trainer(files: COCOFiles, cfg, seed: int = 0, out=None, backend=None, progress=True) -> COCOTrainer:
    """The seeded model of the run config ``cfg`` (a DemoConfig) and its trainer on ``files``."""
    from minirc.train.demo import build

    train_ds, val_ds = load_datasets(files.train, files.image_dir, files.val, files.val_image_dir)
    cats = categories(train_ds)
    cfg = dataclasses.replace(cfg, classes=tuple(c["name"] for c in cats))
    cfg.train.seed = seed
    model, _, _ = build(cfg, seed, data=(train_ds, val_ds))
    extra = {"demo": cfg.to_dict(), "class_names": list(train_ds.class_names),
             "coco": {**dataclasses.asdict(files), "categories": cats}}
    return COCOTrainer(model, train_ds, cfg.train, val_dataset=val_ds, eval_every=files.eval_every,
                       out_dir=out, progress=progress, backend=backend, extra=extra)


def train_coco(files: COCOFiles, config="tiny", seed: int = 0, out=None, sets=None, iters=None,
               budget_seconds=None, solver=None, backend=None, progress=True, echo=print) -> COCOTrainer:
    """Train a run preset (name or DemoConfig) on COCO files; returns the finished trainer.

    sets: ``--set`` strings by dotted name (minirc/train/settings.py); iters / budget_seconds: the
    run's length (:func:`minirc.train.demo.set_length`); solver: TrainConfig fields to replace
    (``{"batch_size": 2, "lr": 0.01}``).
    """
    from minirc.train.demo import demo_config, set_length
    from minirc.train.settings import apply_sets

    cfg = demo_config(config) if isinstance(config, str) else config
    cfg = set_length(apply_sets(cfg, sets or {}), iters, budget_seconds)
    for name, value in (solver or {}).items():
        if value is not None:
            setattr(cfg.train, name, value)
    trainer = make_trainer(files, cfg, seed, out, backend, progress)
    train_ds, val_ds = trainer.dataset, trainer.val_dataset
    names = ", ".join(f"{c['name']} (id {c['id']})" for c in trainer.extra["coco"]["categories"])
    val = f", validation {len(val_ds)} images" if val_ds is not None else ""
    echo(f"[train] COCO data: {len(train_ds)} training images{val}; classes {names}; model '{cfg.model}', "
         f"{cfg.train.iters} iterations, batch {cfg.train.batch_size}")
    trainer.train()
    return trainer


def report(trainer, echo=print) -> None:
    """The run's last line(s): its length and, with a validation file, the last AP."""
    last = trainer.log.records[-1] if len(trainer.log) else {}
    if "val_segm_AP" in last:
        echo(f"[train] validation at iteration {trainer.iteration}: bbox AP {last['val_bbox_AP']:.3f} "
             f"AP50 {last['val_bbox_AP50']:.3f}; segm AP {last['val_segm_AP']:.3f} AP50 {last['val_segm_AP50']:.3f}")


def train_from_args(args) -> COCOTrainer:
    """``minirc train --coco ...`` (the parsed arguments of minirc/cli.py)."""
    from minirc.train.settings import parse_sets

    if not args.coco:
        raise ValueError("--val-coco: give the training file too (--coco TRAIN.json)")
    for name in ("image_dir", "val_image_dir"):
        folder = getattr(args, name)
        if folder is not None and not os.path.isdir(folder):
            raise FileNotFoundError(f"--{name.replace('_', '-')}: no folder {folder!r}")
    if args.val_image_dir and not args.val_coco:
        raise ValueError("--val-image-dir: give the validation file too (--val-coco VAL.json)")
    if args.eval_every and not args.val_coco:
        raise ValueError("--eval-every: give a validation file (--val-coco VAL.json) to evaluate on")
    if args.eval_every is not None and args.eval_every < 0:
        raise ValueError(f"--eval-every: expected an int >= 0, got {args.eval_every}")
    files = COCOFiles(args.coco, args.image_dir, args.val_coco, args.val_image_dir, args.eval_every or 0)
    solver = {name: getattr(args, name) for name in ("batch_size", "lr", "checkpoint_every")}
    trainer = train_coco(files, args.config, args.seed, args.out, parse_sets(args.sets), args.iters,
                         args.budget_seconds, solver, args.backend, progress=not args.no_progress)
    report(trainer)
    print(f"[train] {trainer.iteration} iterations in {trainer.seconds:.1f} s; wrote {args.out}/checkpoint.npz")
    return trainer


def resume(args, extra) -> COCOTrainer:
    """``minirc train --resume CKPT`` for a checkpoint of a COCO run (same files, same settings)."""
    from minirc.train.demo import DemoConfig

    info = coco_info(extra)
    files = COCOFiles(**{f.name: info[f.name] for f in dataclasses.fields(COCOFiles)})
    trainer = make_trainer(files, DemoConfig.from_dict(extra["demo"]), extra["demo"]["train"]["seed"],
                           args.out, args.backend, progress=not args.no_progress)
    check_categories(info["categories"], trainer.dataset, "--resume")
    trainer.load(args.resume)
    print(f"[train] resuming at iteration {trainer.iteration} of {trainer.iters}")
    trainer.train()
    report(trainer)
    print(f"[train] {trainer.iteration} iterations in {trainer.seconds:.1f} s; wrote {args.out}/checkpoint.npz")
    return trainer


# ---- predict / eval inputs ----------------------------------------------------------------------
def images_of(annotations, image_dir=None):
    """``(images, names, image_ids)`` of every image listed in a COCO file (for ``minirc predict``)."""
    ds = COCODataset(annotations, image_dir)
    images, names, ids = [], [], []
    for i in range(len(ds)):
        image, target = ds[i]
        images.append(image)
        ids.append(int(target["image_id"]))
        names.append(os.path.splitext(os.path.basename(ds.image_info(ids[-1])["file_name"]))[0])
    return images, names, ids
