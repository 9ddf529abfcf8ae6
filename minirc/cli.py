"""Command line: ``python -m minirc {demo,train,ablate,predict,eval}`` (also installed as ``minirc``).

    python -m minirc demo --out runs/demo                       # train on shapes, evaluate, figures
    python -m minirc train --config tiny --iters 200 --out runs/tiny
    python -m minirc train --resume runs/tiny/checkpoint_000100.npz --out runs/tiny
    python -m minirc ablate pooling --seeds 0,1,2 --out runs/ablate     # Table 2c at toy scale
    python -m minirc demo --set roi_heads.pooler_type=roi_pool          # any setting by dotted name
    python -m minirc predict runs/demo/checkpoint.npz photo.png --out photo_pred.png
    python -m minirc predict runs/demo/checkpoint.npz --shapes 8 --coco-results results.json
    python -m minirc predict --weights maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth photo.jpg   # torchvision's COCO model
    python -m minirc eval runs/demo/checkpoint.npz --num-images 200
    python -m minirc data nuclei --out data/nuclei                     # a real data set as COCO files
    python -m minirc train --coco data/nuclei/train.json --val-coco data/nuclei/val.json --config tiny

Errors in the arguments or the files print one line (``minirc <command>: error: ...``) and exit
with status 2; set ``MINIRC_DEBUG=1`` to see the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys


def _add_common(p, progress=True):
    p.add_argument("--backend", choices=("numpy", "cpu", "cuda"), default=None,
                   help="kernel backend (default: $MINIRC_BACKEND or cpu)")
    if progress:
        p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _add_set(p):
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="change a setting by dotted name, e.g. roi_heads.pooler_type=roi_pool, train.lr=0.02, "
                        "data.train_max_objects=12 (repeatable; see minirc/train/settings.py)")


def _presets():
    from minirc.model.config import PRESETS

    return PRESETS


def build_parser() -> argparse.ArgumentParser:
    from minirc.train.demo import DEMO_PRESETS

    parser = argparse.ArgumentParser(prog="minirc", description="Mask R-CNN from scratch in NumPy and Numba.")
    sub = parser.add_subparsers(dest="command", metavar="{demo,train,ablate,predict,eval,export,data}")
    sub.required = True

    p = sub.add_parser("demo", help="train a small model on synthetic shapes, evaluate, write metrics and figures")
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--config", default="shapes_demo", choices=sorted(DEMO_PRESETS), help="preset (default: shapes_demo)")
    p.add_argument("--iters", type=int, default=None,
                   help="train exactly this many iterations (default: the preset's fixed length)")
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="train for this many seconds instead (compilation included; the result then "
                        "depends on the machine's speed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the model, the data and the batch order")
    _add_set(p)
    p.add_argument("--test-images", type=int, default=None,
                   help="held-out images to evaluate on (default: the preset's, 100 for shapes_demo)")
    _add_common(p)

    p = sub.add_parser("train", help="train on synthetic shapes or on COCO files (--coco); checkpoints, loss log "
                                     "and plot in --out")
    p.add_argument("--out", default="runs/train", help="output directory (default: runs/train)")
    p.add_argument("--config", default=None, choices=sorted(DEMO_PRESETS),
                   help="model + data + solver preset (default: shapes_demo)")
    p.add_argument("--iters", type=int, default=None, help="iterations (default: the preset's fixed length)")
    p.add_argument("--budget-seconds", type=float, default=None, help="stop after this many seconds of training")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="base learning rate")
    p.add_argument("--seed", type=int, default=None, help="seed of the model, the data and the batch order (default: 0)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N iterations")
    p.add_argument("--resume", default=None, metavar="CKPT", help="continue a run from its checkpoint")
    _add_coco_train(p)
    _add_set(p)
    _add_common(p)

    p = sub.add_parser("ablate", help="the Mask R-CNN paper's Table 2 ablations at toy scale (several variants "
                                      "and seeds; results.json and results.md in --out)")
    p.add_argument("study", help="pooling, pooling_stride32 or mask_loss (see minirc/train/ablate.py)")
    p.add_argument("--variants", default=None, help="comma-separated variants (default: all of the study's)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    p.add_argument("--iters", type=int, default=None, help="iterations per run (default: the study's)")
    p.add_argument("--out", default="runs/ablate", help="output directory (default: runs/ablate)")
    _add_set(p)
    _add_common(p)

    p = sub.add_parser("predict", help="draw a checkpoint's (or a torchvision .pth file's) detections on images "
                                        "(or write COCO results)")
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="a checkpoint.npz written by train or demo (or --weights instead)")
    p.add_argument("images", nargs="*", help="PNG/JPEG files (default: --shapes held-out shapes images)")
    p.add_argument("--weights", default=None, metavar="FILE.pth",
                   help="a torchvision state-dict file instead of a checkpoint, e.g. torchvision's COCO-trained "
                        "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth (docs/torchvision_weights.md); the SHA-256 "
                        "prefix in its name is checked")
    p.add_argument("--preset", default=None, choices=sorted(_presets()),
                   help="with --weights: the model the file fills (default: the preset of torchvision's file name)")
    p.add_argument("--min-size", type=int, default=None, metavar="N",
                   help="resize each image's shorter side to N pixels (default: the model's; 800 for torchvision's)")
    p.add_argument("--shapes", type=int, default=None, metavar="N",
                   help="predict N held-out shapes images (the default when no image is given: 4)")
    p.add_argument("--out", default=None,
                   help="a .png file (one image) or a directory for the figures (default: predictions/)")
    p.add_argument("--score-threshold", type=float, default=0.5, help="draw detections scoring at least this")
    p.add_argument("--coco-results", default=None, metavar="FILE", help="also write COCO results JSON to FILE")
    p.add_argument("--coco", default=None, metavar="JSON",
                   help="predict every image listed in this COCO file (results carry its image ids)")
    p.add_argument("--image-dir", default=None, help="folder of the --coco images (default: the JSON's folder)")
    _add_common(p, progress=False)

    p = sub.add_parser("eval", help="COCO-style AP of a checkpoint (held-out shapes, or a COCO JSON data set)")
    p.add_argument("checkpoint")
    p.add_argument("--coco", default=None, metavar="JSON",
                   help="evaluate on this COCO instances file instead of shapes (images in --image-dir)")
    p.add_argument("--image-dir", default=None, help="folder of the --coco images (default: the JSON's folder)")
    p.add_argument("--num-images", type=int, default=100, help="held-out shapes images (default: 100)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the held-out data (default: the training seed + 1000003, as the demo)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--out", default=None, help="write the metrics JSON here")
    _add_common(p)

    p = sub.add_parser("export", help="write a checkpoint's weights as a torch .pth file under torchvision's keys")
    p.add_argument("checkpoint", help="a checkpoint.npz written by train or demo")
    p.add_argument("out", metavar="OUT.pth", help="the file to write; torch.load(OUT, weights_only=True) reads it")

    p = sub.add_parser("data", help="write a bundled data set as COCO JSON + PNG files")
    p.add_argument("name", choices=("nuclei",), help="nuclei: stardist's fluorescence nuclei sample as tiles")
    p.add_argument("--out", default="data/nuclei", help="output folder (default: data/nuclei)")
    p.add_argument("--tile-size", type=int, default=128, help="side of the square tiles (default: 128)")
    p.add_argument("--min-area", type=int, default=20,
                   help="smallest visible part (pixels) of a nucleus cut by a tile border (default: 20)")
    return parser


def _add_coco_train(p):
    p.add_argument("--coco", default=None, metavar="TRAIN.json",
                   help="train on this COCO instances file instead of shapes (see minirc/train/coco_run.py)")
    p.add_argument("--image-dir", default=None, help="folder of the --coco images (default: the JSON's folder)")
    p.add_argument("--val-coco", default=None, metavar="VAL.json", help="validation file, scored during training")
    p.add_argument("--val-image-dir", default=None, help="folder of the --val-coco images (default: its folder)")
    p.add_argument("--eval-every", type=int, default=None, metavar="N",
                   help="score --val-coco every N iterations (always after the last one)")


# ---- commands -----------------------------------------------------------------------------------
def cmd_demo(args):
    from minirc.train.demo import run_demo

    _positive(args.iters, "--iters")
    _positive(args.test_images, "--test-images")
    _writable_dir(args.out, "--out")
    from minirc.train.settings import parse_sets

    run_demo(args.out, args.config, budget_seconds=args.budget_seconds, iters=args.iters, seed=args.seed,
             backend=args.backend, progress=not args.no_progress, test_images=args.test_images,
             sets=parse_sets(args.sets))


def cmd_train(args):
    from minirc.train.demo import build, demo_config, set_length
    from minirc.train.settings import apply_sets, parse_sets
    from minirc.train.trainer import Trainer

    _positive(args.iters, "--iters")
    _positive(args.batch_size, "--batch-size")
    given = {flag: getattr(args, name) for flag, name in _RESUME_KEEPS if getattr(args, name) is not None}
    args.seed = 0 if args.seed is None else args.seed
    args.config = "shapes_demo" if args.config is None else args.config
    _writable_dir(args.out, "--out")  # before any work: an unwritable --out would lose the whole run
    if args.resume:
        return _resume(args, given)
    if args.coco or args.val_coco:
        from minirc.train.coco_run import train_from_args

        return train_from_args(args)
    cfg = set_length(apply_sets(demo_config(args.config), parse_sets(args.sets)), args.iters, args.budget_seconds)
    for name in ("batch_size", "lr", "seed", "checkpoint_every"):
        if getattr(args, name) is not None:
            setattr(cfg.train, name, getattr(args, name))
    model, train_ds, _ = build(cfg, args.seed)
    trainer = Trainer(model, train_ds, cfg.train, out_dir=args.out, progress=not args.no_progress,
                      backend=args.backend, extra={"demo": cfg.to_dict(), "class_names": list(train_ds.class_names)})
    trainer.train()
    print(f"[train] {trainer.iteration} iterations in {trainer.seconds:.1f} s; wrote {args.out}/checkpoint.npz")


# flags a resumed run cannot honour (it keeps the settings it was started with) -> TrainConfig field
_RESUME_KEEPS = (("--lr", "lr"), ("--batch-size", "batch_size"), ("--seed", "seed"), ("--config", "config"))


def _refuse_changed_settings(given, extra):
    """ValueError for a --lr/--batch-size/--seed/--config that differs from the checkpoint's run."""
    train = extra.get("train_config") or {}
    saved = {"--lr": train.get("lr"), "--batch-size": train.get("batch_size"), "--seed": train.get("seed"),
             "--config": (extra.get("demo") or {}).get("model")}
    for flag, value in given.items():
        if saved[flag] is None or value != saved[flag]:
            raise ValueError(f"{flag}: a resumed run keeps the settings it was started with ({flag} "
                             f"{saved[flag]} in the checkpoint), got {value}; start a new run to change it")


def _writable_dir(path, flag):
    """Create the folder ``path`` and check that a file can be written in it, before any work starts."""
    import tempfile

    folder = os.path.abspath(path)
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"{flag}: cannot write to the folder {folder!r} ({e.strerror or e})") from None


def _resume(args, given=None):
    from minirc.train.checkpoint import load_checkpoint
    from minirc.train.demo import DemoConfig, build
    from minirc.train.trainer import Trainer

    extra = load_checkpoint(args.resume)["extra"]
    if "demo" not in extra or "iteration" not in extra:
        raise ValueError(f"--resume: {args.resume!r} was not written by 'minirc train' or 'minirc demo'")
    _refuse_changed_settings(given or {}, extra)
    if args.sets:
        raise ValueError(f"--set: a resumed run keeps the settings it was started with, got {args.sets}")
    if args.iters is not None and args.iters != extra["iters"]:
        raise ValueError(f"--iters: a resumed run keeps its length ({extra['iters']} iterations: the LR "
                         f"schedule depends on it), got {args.iters}")
    if "coco" in extra:
        from minirc.train.coco_run import resume

        return resume(args, extra)
    cfg = DemoConfig.from_dict(extra["demo"])
    model, train_ds, _ = build(cfg, cfg.train.seed)
    trainer = Trainer(model, train_ds, cfg.train, out_dir=args.out, progress=not args.no_progress,
                      backend=args.backend, extra={"demo": extra["demo"], "class_names": extra.get("class_names")})
    trainer.load(args.resume)
    print(f"[train] resuming at iteration {trainer.iteration} of {trainer.iters}")
    trainer.train()
    print(f"[train] {trainer.iteration} iterations in {trainer.seconds:.1f} s; wrote {args.out}/checkpoint.npz")


def _held_out(extra, num_images, seed=None):
    from minirc.data import ShapesDataset
    from minirc.train.demo import TEST_SEED_OFFSET

    data = extra.get("data") or {}
    train_seed = int(data.get("seed", 0))
    return ShapesDataset(num_images, image_size=data.get("image_size", 128),
                         classes=tuple(data.get("classes", ("circle", "square", "triangle"))),
                         max_objects=(extra.get("demo") or {}).get("max_objects", data.get("max_objects", 4)),
                         size_range=tuple(data.get("size_range", (0.08, 0.22))),
                         seed=train_seed + TEST_SEED_OFFSET if seed is None else seed)


def cmd_ablate(args):
    from minirc.train.ablate import ablate
    from minirc.train.settings import parse_sets

    _positive(args.iters, "--iters")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated ints >= 0, got {args.seeds!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds: expected comma-separated ints >= 0, got {args.seeds!r}")
    ablate(args.study, variants, seeds, args.iters, args.out, parse_sets(args.sets), args.backend,
           progress=not args.no_progress)
    print(f"[ablate] wrote {args.out}/results.json and {args.out}/results.md")


def cmd_predict(args):
    import matplotlib.pyplot as plt

    from minirc.train.coco_run import coco_info, images_of, label_to_category_id
    from minirc.train.evaluate import coco_results, predict_images
    from minirc.data import read_image
    from minirc.visualize import show_prediction

    model, ckpt = _predict_model(args)
    # the drawings and the COCO results both read probability > 0.5: bool masks give the same
    # pixels with a quarter of the memory (no full-size float32 image per detection)
    model.transform.mask_threshold = 0.5
    extra = ckpt["extra"]
    class_names = extra.get("class_names")
    if args.images and args.shapes:
        raise ValueError("--shapes: give image files or --shapes N, not both")
    if args.coco and (args.images or args.shapes):
        raise ValueError("--coco: give image files, --shapes N or --coco JSON, one of them")
    if args.coco:
        images, names, ids = images_of(args.coco, args.image_dir)
    elif not args.images and coco_info(extra) is not None:
        raise ValueError(f"images: {args.checkpoint!r} was trained on COCO files, not shapes: give image "
                         f"files or --coco JSON")
    elif args.images:
        for f in args.images:
            if not os.path.isfile(f):
                raise FileNotFoundError(f"images: no file {f!r}")
        images = [_read_image(read_image, f) for f in args.images]
        names = [os.path.splitext(os.path.basename(f))[0] for f in args.images]
        ids = list(range(len(images)))
    else:
        _positive(args.shapes, "--shapes")
        ds = _held_out(extra, args.shapes or 4)
        items = [ds[i] for i in range(len(ds))]
        images = [im for im, _ in items]
        names = [f"shapes_{t['image_id']}" for _, t in items]
        ids = [int(t["image_id"]) for _, t in items]
    single = args.out is not None and args.out.lower().endswith(".png")
    if single and len(images) != 1:
        raise ValueError(f"--out: a .png file takes one image, got {len(images)}; give a directory")
    out_dir = None if single else (args.out or "predictions")
    _writable_dir(os.path.dirname(os.path.abspath(args.out)) if single else out_dir, "--out")
    if args.coco_results:
        _writable_dir(os.path.dirname(os.path.abspath(args.coco_results)), "--coco-results")
    predictions = predict_images(model, images, backend=args.backend)
    for image, p, name in zip(images, predictions, names):
        path = args.out if single else os.path.join(out_dir, f"{name}_pred.png")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        plt.close(show_prediction(image, p, class_names, args.score_threshold, path=path, title=f"{name}: "
                                  f"{int((p['scores'] >= args.score_threshold).sum())} detections with score "
                                  f">= {args.score_threshold:g}"))
        print(f"[predict] {name}: {len(p['scores'])} detections, "
              f"{int((p['scores'] >= args.score_threshold).sum())} with score >= {args.score_threshold:g} -> {path}")
    if args.coco_results:
        results = coco_results(predictions, ids, len(class_names) if class_names else ckpt["config"]["num_classes"],
                               label_to_category_id(extra))
        with open(args.coco_results, "w") as f:
            json.dump(results, f)
        print(f"[predict] wrote {len(results)} COCO results to {args.coco_results}")


def _read_image(read_image, path):
    try:
        return read_image(path)
    except OSError as e:  # Pillow's UnidentifiedImageError, a truncated file, a folder, no permission
        raise ValueError(f"images: cannot read {path!r} as an image ({e})") from None


def _predict_model(args):
    """(model, checkpoint-like dict) from the checkpoint argument or from --weights FILE.pth (--preset)."""
    _positive(args.min_size, "--min-size")
    if args.weights is None:
        if args.checkpoint is None:
            raise ValueError("checkpoint: give a checkpoint.npz (written by train or demo) or --weights FILE.pth")
        if args.preset is not None:
            raise ValueError("--preset: goes with --weights FILE.pth; a checkpoint holds its own config")
        from minirc.train.checkpoint import load_model

        model, ckpt = load_model(args.checkpoint)
    else:
        model, ckpt = _torchvision_model(args)
    if args.min_size is not None:
        model.transform.min_size = (args.min_size,)
    return model, ckpt


def _torchvision_model(args):
    """--weights: check the file's hash and BatchNorm eps, build its preset, load it; COCO names for 91 classes."""
    from minirc.data.coco_names import COCO_CATEGORY_NAMES
    from minirc.model import MaskRCNN, load_torchvision_state_dict, preset
    from minirc.model.torchvision_weights import WEIGHTS, check_batch_norm, check_hash, known_weights

    if args.checkpoint is not None:  # with --weights every positional argument is an image
        if args.checkpoint.lower().endswith(".npz"):
            raise ValueError(f"--weights: give a checkpoint ({args.checkpoint!r}) or --weights, not both")
        args.images = [args.checkpoint] + list(args.images)
    if not args.images and not args.coco:
        raise ValueError("--weights: give the image files to predict on (PNG/JPEG) or --coco JSON")
    name = os.path.basename(args.weights)
    entry = known_weights(args.weights)
    preset_name = args.preset or (entry.preset if entry is not None else None)
    if preset_name is None:
        raise ValueError(f"--preset: {name!r} is not one of torchvision's files ({', '.join(sorted(WEIGHTS))}); "
                         f"name the model it fills, e.g. --preset torchvision_resnet50")
    prefix = check_hash(args.weights)
    print(f"[predict] {name}: " + (f"SHA-256 starts with {prefix}, as its name says" if prefix else
                                   "no hash in the name (torch hub names files <name>-<hash>.pth): not checked"))
    cfg = preset(preset_name)
    print(f"[predict] {preset_name}: {check_batch_norm(cfg, args.weights)}")
    model = load_torchvision_state_dict(MaskRCNN(cfg), args.weights).eval()
    names = COCO_CATEGORY_NAMES if cfg.num_classes == len(COCO_CATEGORY_NAMES) else None
    return model, {"extra": {"class_names": names}, "config": cfg.to_dict()}


def cmd_eval(args):
    from minirc.train.checkpoint import load_model
    from minirc.train.evaluate import evaluate_model

    _positive(args.num_images, "--num-images")
    _positive(args.batch_size, "--batch-size")
    from minirc.train.coco_run import check_categories, coco_info

    if args.out:
        _writable_dir(os.path.dirname(os.path.abspath(args.out)), "--out")
    model, ckpt = load_model(args.checkpoint)
    if args.coco:
        from minirc.data import COCODataset

        ds = COCODataset(args.coco, args.image_dir)
        if coco_info(ckpt["extra"]) is not None:   # the same categories, or the ids would be scored wrongly
            check_categories(coco_info(ckpt["extra"])["categories"], ds, "--coco")
        if ds.num_classes != model.config.num_classes:
            raise ValueError(f"--coco: {args.coco!r} has {ds.num_classes - 1} categories, the model was "
                             f"trained for {model.config.num_classes - 1}")
    elif coco_info(ckpt["extra"]) is not None:
        raise ValueError(f"--coco: {args.checkpoint!r} was trained on COCO files, not shapes: give --coco JSON")
    else:
        ds = _held_out(ckpt["extra"], args.num_images, args.seed)
    metrics = evaluate_model(model, ds, args.batch_size, args.backend, progress=not args.no_progress, per_class=True)
    for t in ("bbox", "segm"):
        m = metrics[t]
        print(f"[eval] {t:4s}: AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  AP75 {m['AP75']:.3f}  (images: {len(ds)})")
        print(f"[eval] {t:4s} AP by class: " + ", ".join(f"{name} {ap:.3f}" for name, ap in m["per_class"].items()))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(metrics, f, indent=2)
        print(f"[eval] wrote {args.out}")


def cmd_export(args):
    from minirc.io import save_pth
    from minirc.train.checkpoint import load_model

    model, _ = load_model(args.checkpoint)
    state = model.torchvision_state_dict()
    save_pth(state, args.out)
    values = sum(int(v.size) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    print(f"[export] {len(state)} tensors ({values:,} values) under torchvision's keys -> {args.out}")


def cmd_data(args):
    from minirc.data.real import write_nuclei_coco

    paths = write_nuclei_coco(args.out, tile_size=args.tile_size, min_area=args.min_area)
    for split in ("train", "val"):
        print(f"[data] nuclei {split}: {paths[split + '_images']} images, {paths[split + '_objects']} nuclei "
              f"-> {paths[split]}")
    print(f"[data] images in {paths['image_dir']}")


def _positive(value, name):
    if value is not None and value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")


COMMANDS = {"demo": cmd_demo, "train": cmd_train, "ablate": cmd_ablate, "predict": cmd_predict, "eval": cmd_eval,
            "export": cmd_export, "data": cmd_data}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if os.environ.get("MINIRC_DEBUG"):
        COMMANDS[args.command](args)
        return 0
    try:
        COMMANDS[args.command](args)
    except (ValueError, TypeError, OSError) as e:  # OSError: files and folders (FileNotFoundError, permissions)
        print(f"minirc {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0
