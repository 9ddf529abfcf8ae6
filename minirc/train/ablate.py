"""The Mask R-CNN paper's Table 2 ablations at toy scale: ``minirc ablate STUDY``.

He et al. 2017 (arXiv 1703.06870), Table 2, measured on COCO minival what the RoI pooling and the
mask loss do to a trained detector. Each study here trains the same shapes model several times,
changing one setting (a *variant*, a set of ``--set`` overrides), for a fixed number of iterations
and several seeds, and scores every run on the same held-out images:

* ``pooling`` -- the FPN shapes model with each RoI pooling (Table 2c);
* ``pooling_stride32`` -- the single-level model that pools every RoI from the stride-32 map
  (the ``shapes_stride32`` preset; Table 2d, where quantization costs most);
* ``mask_loss`` -- per-class sigmoid vs softmax over classes (Table 2b).

A run is deterministic on the cpu backend: ``minirc ablate STUDY --variants V --seeds S --iters N``
gives the same numbers bit for bit on any machine and thread count. Results accumulate in
``OUT/results.json`` (a run of the same study, variant, seed and length replaces the old one) and
are summarised in ``OUT/results.md``: mean and spread over seeds, the delta against the study's
baseline, and the paper's numbers beside them. ``OUT/objects/STUDY/VARIANT/<N>it_seed<S>.npz`` keeps each
run's per-object mask IoUs and a few predicted masks (small: these three are what docs/ablations/
commits); ``OUT/STUDY/VARIANT/seedS/`` holds its checkpoint, loss log and metrics.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import time

import numpy as np

from minirc.evaluation.object_iou import best_mask_ious
from minirc.train.demo import DemoConfig, demo_config, set_length, train_and_evaluate
from minirc.train.settings import apply_sets

# Table 2 of He et al. 2017, mask AP / AP50 / AP75 (box AP / AP50 / AP75 where the paper gives it)
PAPER = {
    ("pooling", "roi_pool"): {"segm": (26.9, 48.8, 26.4)},
    ("pooling", "roi_warp"): {"segm": (27.1, 48.9, 27.1)},
    ("pooling", "roi_align"): {"segm": (30.3, 51.2, 31.5)},
    ("pooling", "roi_align_max"): {"segm": (30.2, 51.0, 31.8)},
    ("pooling_stride32", "roi_pool"): {"segm": (23.6, 46.5, 21.6), "bbox": (28.2, 52.7, 26.9)},
    ("pooling_stride32", "roi_align"): {"segm": (30.9, 51.8, 32.1), "bbox": (34.0, 55.3, 36.4)},
    ("mask_loss", "softmax"): {"segm": (24.8, 44.1, 25.1)},
    ("mask_loss", "sigmoid"): {"segm": (30.3, 51.2, 31.5)},
}
PAPER_ROWS = {
    ("pooling", "roi_pool"): "2c RoIPool (max)", ("pooling", "roi_warp"): "2c RoIWarp, bilinear, avg",
    ("pooling", "roi_align"): "2c RoIAlign, bilinear, avg", ("pooling", "roi_align_max"): "2c RoIAlign, bilinear, max",
    ("pooling_stride32", "roi_pool"): "2d C5 RoIPool", ("pooling_stride32", "roi_align"): "2d C5 RoIAlign",
    ("mask_loss", "softmax"): "2b softmax", ("mask_loss", "sigmoid"): "2b sigmoid",
}


@dataclasses.dataclass(frozen=True)
class Study:
    """One ablation: the model preset, its variants (name -> ``--set`` overrides), the baseline."""
    model: str
    base_sets: dict
    variants: dict
    baseline: str
    iters: int
    description: str


def _pooler(name):
    return {"roi_heads.pooler_type": name}


# The ablation data: the demo's shapes with a wider size range, so that more objects are small
# (COCO's "small": area < 32^2 px), where quantizing an RoI to the feature grid moves a mask most.
# The solver is written out in full, so that a change of the demo's recipe leaves every recorded
# run reproducible: lr 0.04, warm-up 100, steps at 92 / 97 %, batch 4, every positive in the mask loss.
ABLATION_DATA = {"data.size_range": "0.05,0.22", "train.lr": "0.04", "train.warmup_iters": "100",
                 "train.steps": "0.92,0.97", "train.batch_size": "4", "train.momentum": "0.9",
                 "train.weight_decay": "0.0001", "roi_heads.mask_rois_per_image": "none"}

STUDIES = {
    "pooling": Study(
        "shapes_demo", ABLATION_DATA,
        {v: _pooler(v) for v in ("roi_pool", "roi_warp", "roi_align", "roi_align_aligned", "roi_align_max")},
        baseline="roi_align", iters=1500,
        description="FPN shapes model (P2-P5, level assignment), each RoI pooling (Table 2c)"),
    "pooling_stride32": Study(
        "shapes_stride32", ABLATION_DATA,
        {v: _pooler(v) for v in ("roi_pool", "roi_warp", "roi_align", "roi_align_aligned")},
        baseline="roi_align", iters=1500,
        description="every RoI pooled from the stride-32 map, no level assignment (Table 2d)"),
    "mask_loss": Study(
        "shapes_demo", ABLATION_DATA, {v: {"mask_head.loss": v} for v in ("sigmoid", "softmax")},
        baseline="sigmoid", iters=1500,
        description="per-class sigmoid BCE vs softmax over classes, FPN shapes model (Table 2b)"),
}


def study(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"study: expected one of {sorted(STUDIES)}, got {name!r}")
    return STUDIES[name]


def run_config(study_name: str, variant: str, iters: int | None = None, sets: dict | None = None) -> DemoConfig:
    """The run config of one variant: the study's preset, its base and variant overrides, then ``sets``."""
    s = study(study_name)
    if variant not in s.variants:
        raise ValueError(f"variants: study {study_name!r} has {sorted(s.variants)}, got {variant!r}")
    cfg = dataclasses.replace(demo_config("shapes_demo"), model=s.model, model_overrides={})  # the demo's data
    cfg = apply_sets(cfg, {**s.base_sets, **s.variants[variant], **(sets or {})})
    return set_length(cfg, iters or s.iters)


def _commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=root, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _command(study_name, variant, seed, iters, out, sets) -> str:
    words = ["minirc", "ablate", study_name, "--variants", variant, "--seeds", str(seed), "--iters", str(iters),
             "--out", out] + [w for k, v in sets.items() for w in ("--set", f"{k}={v}")]
    return " ".join(shlex.quote(w) for w in words)


def run_one(study_name: str, variant: str, seed: int, iters: int | None, out: str, sets: dict | None = None,
            backend: str | None = None, progress: bool = False, echo=print) -> dict:
    """Train and score one (study, variant, seed); return its ``results.json`` record."""
    cfg = run_config(study_name, variant, iters, sets)
    run_dir = os.path.join(out, study_name, variant, f"seed{seed}")
    started = time.perf_counter()
    result = train_and_evaluate(cfg, seed, run_dir, backend, progress, echo)
    m = result.metrics
    with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump(m, f, indent=2)
    objects = objects_path(out, study_name, variant, cfg.train.iters, seed)
    os.makedirs(os.path.dirname(objects), exist_ok=True)
    save_objects(objects, result.test_ds, result.predictions)
    return {"study": study_name, "variant": variant, "seed": seed, "iters": cfg.train.iters,
            "seconds": round(time.perf_counter() - started, 1),
            "command": _command(study_name, variant, seed, cfg.train.iters, out, sets or {}),
            "commit": _commit(), "sets": dict(sets or {}),
            "segm": {k: m["segm"][k] for k in ("AP", "AP50", "AP75", "APs")},
            "bbox": {k: m["bbox"][k] for k in ("AP", "AP50", "AP75")}}


def objects_path(out: str, study_name: str, variant: str, iters: int, seed: int) -> str:
    """Where a run's per-object file goes: ``OUT/objects/STUDY/VARIANT/<iters>it_seed<S>.npz``."""
    return os.path.join(out, "objects", study_name, variant, f"{iters}it_seed{seed}.npz")


PREVIEW_IMAGES = 8  # held-out images whose predicted masks each run keeps (its objects file) for figures


def save_objects(path: str, test_ds, predictions, score_threshold: float = 0.5) -> None:
    """A run's objects file: one row per held-out object (``image``, ``label``, ``area`` in pixels, ``iou``
    of its best same-class mask, minirc/evaluation/object_iou.py), and the binarised masks
    (bit-packed), labels and scores of the detections scoring >= ``score_threshold`` on the first
    :data:`PREVIEW_IMAGES` images, so figures can be drawn without the checkpoint."""
    rows, preview = [], {}
    for i, prediction in enumerate(predictions):
        target = test_ds[i][1]
        ious = best_mask_ious(target, prediction, score_threshold)
        areas = np.asarray(target["masks"], bool).sum(axis=(1, 2))
        rows += [(i, int(lab), int(a), float(v)) for lab, a, v in zip(target["labels"], areas, ious)]
        if i < PREVIEW_IMAGES:
            keep = np.asarray(prediction["scores"]) >= score_threshold
            masks = np.asarray(prediction["masks"])[keep]
            masks = masks.reshape(len(masks), *np.shape(target["masks"])[1:]) >= 0.5
            preview[f"masks_{i}"] = np.packbits(masks, axis=-1)
            preview[f"labels_{i}"] = np.asarray(prediction["labels"])[keep].astype(np.int16)
            preview[f"scores_{i}"] = np.asarray(prediction["scores"])[keep].astype(np.float32)
    table = np.array(rows, dtype=[("image", "i4"), ("label", "i2"), ("area", "i4"), ("iou", "f4")])
    np.savez_compressed(path, objects=table, **preview)


def merge(runs: list, new: dict) -> list:
    """``runs`` with ``new`` in place of any earlier run of the same study, variant, seed, length and sets."""
    key = ("study", "variant", "seed", "iters", "sets")
    return [r for r in runs if tuple(r.get(k) for k in key) != tuple(new.get(k) for k in key)] + [new]


def read_results(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise ValueError(f"--out: {path!r} is not a results.json written by 'minirc ablate' (no 'runs' list)")
    return data["runs"]


def ablate(study_name: str, variants=None, seeds=(0, 1, 2), iters: int | None = None, out: str = "runs/ablate",
           sets: dict | None = None, backend: str | None = None, progress: bool = False, echo=print) -> list:
    """Run every (variant, seed) of a study; update ``out/results.json`` and ``out/results.md`` after each."""
    s = study(study_name)
    variants = list(variants or s.variants)
    for v in variants:
        run_config(study_name, v, iters, sets)  # every name checked before the first run trains
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "results.json")
    runs = read_results(path)
    for variant in variants:
        for seed in seeds:
            echo(f"[ablate] {study_name} / {variant} / seed {seed}")
            record = run_one(study_name, variant, seed, iters, out, sets, backend, progress, echo)
            echo(f"[ablate] {study_name} / {variant} / seed {seed}: mask AP {record['segm']['AP']:.3f} "
                 f"AP50 {record['segm']['AP50']:.3f} AP75 {record['segm']['AP75']:.3f} ({record['seconds']:.0f} s)")
            runs = merge(runs, record)
            write_results(runs, out)
    return runs


def write_results(runs: list, out: str) -> None:
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"runs": runs}, f, indent=1)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(results_table(runs))


# ---- the summary table ----------------------------------------------------------------------------
METRICS = (("segm", "AP"), ("segm", "AP50"), ("segm", "AP75"), ("segm", "APs"), ("bbox", "AP"))


def summarise(runs: list) -> dict:
    """``{(study, variant, iters, sets): {"seeds": [...], ("segm", "AP"): (mean, min, max), ...}}``
    (``sets``: the runs' extra ``--set`` overrides as sorted ``key=value`` text, "" for none)."""
    groups = {}
    for r in runs:
        sets = " ".join(f"{k}={v}" for k, v in sorted((r.get("sets") or {}).items()))
        groups.setdefault((r["study"], r["variant"], r["iters"], sets), []).append(r)
    out = {}
    for key, rs in groups.items():
        row = {"seeds": sorted(r["seed"] for r in rs)}
        for kind, name in METRICS:
            values = [r[kind][name] for r in rs]
            row[(kind, name)] = (statistics.fmean(values), min(values), max(values))
        out[key] = row
    return out


def results_table(runs: list) -> str:
    """Markdown: one table per study, mean [min-max] over seeds, delta vs the baseline, the paper."""
    rows = summarise(runs)
    lines = []
    order = list(STUDIES)
    for (study_name, iters, sets) in sorted({(k[0], k[2], k[3]) for k in rows},
                                            key=lambda g: (order.index(g[0]) if g[0] in order else len(order), g)):
        s = STUDIES.get(study_name)
        base = rows.get((study_name, s.baseline, iters, sets)) if s else None
        extra = f", --set {sets}" if sets else ""
        lines += [f"### {study_name} ({iters} iterations{extra}){': ' + s.description if s else ''}", "",
                  "| variant | seeds | mask AP | mask AP50 | mask AP75 | mask APs | box AP | "
                  "Δ mask AP vs baseline | paper (Table 2) mask AP / AP50 / AP75 | paper Δ mask AP |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        order = list(s.variants) if s else sorted(k[1] for k in rows if k[0] == study_name)
        for variant in order:
            r = rows.get((study_name, variant, iters, sets))
            if r is None:
                continue
            cells = [f"{m:.3f} [{lo:.3f}-{hi:.3f}]" for m, lo, hi in (r[k] for k in METRICS)]
            delta = f"{r[('segm', 'AP')][0] - base[('segm', 'AP')][0]:+.3f}" if base else "-"
            paper = PAPER.get((study_name, variant), {}).get("segm")
            paper_base = PAPER.get((study_name, s.baseline), {}).get("segm") if s else None
            paper_cell = f"{PAPER_ROWS[(study_name, variant)]}: {' / '.join(f'{x:.1f}' for x in paper)}" if paper else "-"
            paper_delta = f"{paper[0] - paper_base[0]:+.1f}" if paper and paper_base else "-"
            name = f"**{variant}** (baseline)" if s and variant == s.baseline else variant
            lines.append(f"| {name} | {','.join(map(str, r['seeds']))} | " + " | ".join(cells)
                         + f" | {delta} | {paper_cell} | {paper_delta} |")
        lines.append("")
    return "\n".join(lines) + "\n"
