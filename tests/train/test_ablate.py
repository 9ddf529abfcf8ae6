"""``minirc ablate``: studies, variants, results.json and its table (minirc/train/ablate.py)."""
import json

import pytest

from minirc.cli import main
from minirc.train.ablate import STUDIES, merge, results_table, run_config

FAST = ["--set", "data.test_images=2", "--set", "train.warmup_iters=1", "--no-progress"]


def test_two_variants_two_iterations_write_a_valid_results_json(tmp_path, capsys):
    out = str(tmp_path / "abl")
    assert main(["ablate", "mask_loss", "--variants", "sigmoid,softmax", "--seeds", "0", "--iters", "2",
                 "--out", out, *FAST]) == 0
    with open(tmp_path / "abl" / "results.json") as f:
        runs = json.load(f)["runs"]
    assert [(r["study"], r["variant"], r["seed"], r["iters"]) for r in runs] == [
        ("mask_loss", "sigmoid", 0, 2), ("mask_loss", "softmax", 0, 2)]
    for r in runs:
        assert set(r) >= {"study", "variant", "seed", "iters", "seconds", "command", "commit", "segm", "bbox"}
        assert set(r["segm"]) == {"AP", "AP50", "AP75", "APs"} and set(r["bbox"]) == {"AP", "AP50", "AP75"}
        assert r["command"].startswith(f"minirc ablate mask_loss --variants {r['variant']} --seeds 0 --iters 2")
        assert (tmp_path / "abl" / "mask_loss" / r["variant"] / "seed0" / "checkpoint.npz").is_file()
        assert (tmp_path / "abl" / "objects" / "mask_loss" / r["variant"] / "2it_seed0.npz").is_file()
    table = (tmp_path / "abl" / "results.md").read_text()
    assert "**sigmoid** (baseline)" in table and "2b softmax: 24.8 / 44.1 / 25.1" in table


def test_variants_set_the_model():
    assert run_config("pooling", "roi_pool").model_overrides["roi_heads.pooler_type"] == "roi_pool"
    assert run_config("mask_loss", "softmax").model_overrides["mask_head.loss"] == "softmax"
    cfg = run_config("pooling", "roi_align", iters=7, sets={"train.lr": "0.01"})
    assert (cfg.train.iters, cfg.train.budget_seconds, cfg.train.lr) == (7, None, 0.01)
    assert all(s.baseline in s.variants for s in STUDIES.values())


def test_unknown_study_or_variant_names_the_choices(tmp_path, capsys):
    assert main(["ablate", "nope", "--out", str(tmp_path)]) == 2
    assert "expected one of ['mask_loss', 'pooling', 'pooling_stride32']" in capsys.readouterr().err
    assert main(["ablate", "mask_loss", "--variants", "hinge", "--out", str(tmp_path)]) == 2
    assert "has ['sigmoid', 'softmax'], got 'hinge'" in capsys.readouterr().err
    assert main(["ablate", "mask_loss", "--seeds", "a", "--out", str(tmp_path)]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_a_rerun_replaces_the_same_run_and_the_table_summarises_seeds():
    def run(variant, seed, ap):
        return {"study": "mask_loss", "variant": variant, "seed": seed, "iters": 5, "sets": {},
                "segm": {"AP": ap, "AP50": ap, "AP75": ap, "APs": ap}, "bbox": {"AP": ap}}
    runs = merge(merge(merge([], run("sigmoid", 0, 0.5)), run("sigmoid", 1, 0.7)), run("softmax", 0, 0.4))
    assert len(merge(runs, run("sigmoid", 1, 0.6))) == 3
    table = results_table(runs)
    assert "| **sigmoid** (baseline) | 0,1 | 0.600 [0.500-0.700]" in table
    assert "| softmax | 0 | 0.400 [0.400-0.400]" in table and "| -0.200 |" in table


def test_objects_npz_holds_one_row_per_held_out_object(tmp_path):
    import numpy as np

    from minirc.data import ShapesDataset
    from minirc.train.ablate import save_objects

    ds = ShapesDataset(3, image_size=32, seed=5, empty_fraction=0.0)
    targets = [ds[i][1] for i in range(3)]
    # a perfect prediction for image 0 (its gt masks and labels), nothing for the others
    t0 = targets[0]
    preds = [{"masks": t0["masks"][:, None].astype(np.float32), "labels": t0["labels"],
              "scores": np.ones(len(t0["labels"]), np.float32)}] + \
            [{"masks": np.zeros((0, 1, 32, 32), np.float32), "labels": np.zeros(0, np.int64),
              "scores": np.zeros(0, np.float32)} for _ in range(2)]
    save_objects(tmp_path / "o.npz", ds, preds)
    with np.load(tmp_path / "o.npz") as z:
        rows = z["objects"]
        assert len(rows) == sum(len(t["labels"]) for t in targets)
        np.testing.assert_array_equal(rows["iou"][rows["image"] == 0], 1.0)
        np.testing.assert_array_equal(rows["iou"][rows["image"] > 0], 0.0)
        assert z["masks_0"].shape[0] == len(t0["labels"]) and z["masks_1"].shape[0] == 0
