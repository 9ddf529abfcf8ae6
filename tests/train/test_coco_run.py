"""Training on COCO files (minirc/train/coco_run.py): categories, crowds, validation AP, determinism, resume."""
import copy
import csv

import pytest

from coco_files import IN_LABEL_ORDER, coco_dict, write_coco
from minirc.train.checkpoint import load_checkpoint, load_model
from minirc.train.coco_run import (COCOFiles, label_to_category_id, load_datasets, make_trainer, train_coco)
from minirc.train.demo import demo_config


@pytest.fixture
def coco_json(tmp_path):
    return write_coco(tmp_path)


def _files(path, **kw):
    return COCOFiles(path, val=kw.pop("val", path), **kw)


def _weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_data_categories_crowds_and_empty_images(coco_json):
    train_ds, val_ds = load_datasets(coco_json, val=coco_json)
    assert train_ds.image_ids == [11, 12] and val_ds.image_ids == [11, 12, 13]   # training skips the empty image
    assert train_ds.class_names == ("__background__", "disc", "bar")
    assert train_ds.label_to_category_id == {1: 3, 2: 7}
    _, t = train_ds[0]
    assert t["labels"].tolist() == [1, 2] and t["iscrowd"].tolist() == [0, 0]   # the crowd is not a target
    gt = val_ds.coco_ground_truth()
    assert [a["iscrowd"] for a in gt["annotations"]] == [0, 0, 1, 0]          # the evaluator still sees it


def test_two_iterations_log_ap_and_keep_the_categories(coco_json, tmp_path):
    out = tmp_path / "run"
    trainer = train_coco(_files(coco_json, eval_every=1), "tiny", seed=0, out=str(out), iters=2,
                         solver={"batch_size": 2}, progress=False, echo=lambda *a: None)
    assert trainer.iteration == 2 and trainer.model.config.num_classes == 3
    for record in trainer.log.records:
        for key in ("val_bbox_AP", "val_bbox_AP50", "val_segm_AP", "val_segm_AP50"):
            assert 0.0 <= record[key] <= 1.0, (key, record)
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["val_segm_AP50"]) == trainer.log.records[1]["val_segm_AP50"]
    assert (out / "losses.png").is_file()
    extra = load_checkpoint(out / "checkpoint.npz")["extra"]
    assert extra["coco"]["categories"] == IN_LABEL_ORDER
    assert extra["class_names"] == ["__background__", "disc", "bar"]
    assert label_to_category_id(extra) == {1: 3, 2: 7}
    model, _ = load_model(out / "checkpoint.npz")
    assert model.config.num_classes == 3


def test_evaluation_only_at_the_end_by_default(coco_json):
    trainer = train_coco(_files(coco_json), "tiny", iters=2, solver={"batch_size": 2}, progress=False,
                         echo=lambda *a: None)
    assert "val_segm_AP" not in trainer.log.records[0] and "val_segm_AP" in trainer.log.records[1]


def test_deterministic_and_evaluation_changes_nothing(coco_json):
    """Two runs give the same weights bit for bit; scoring the validation file in between does not move them."""
    runs = []
    for eval_every in (0, 0, 1):
        files = COCOFiles(coco_json, val=coco_json if eval_every else None, eval_every=eval_every)
        trainer = train_coco(files, "tiny", seed=3, iters=2, solver={"batch_size": 2}, backend="cpu",
                             progress=False, echo=lambda *a: None)
        runs.append(_weights(trainer.model))
    for other in runs[1:]:
        assert runs[0].keys() == other.keys()
        for k in runs[0]:
            assert runs[0][k].tobytes() == other[k].tobytes(), k
    # and a different seed gives different weights (the comparison can fail)
    other = train_coco(COCOFiles(coco_json), "tiny", seed=4, iters=2, solver={"batch_size": 2}, backend="cpu",
                       progress=False, echo=lambda *a: None)
    assert any(v.tobytes() != runs[0][k].tobytes() for k, v in other.model.state_dict().items())


def test_resume_is_bit_identical(coco_json, tmp_path):
    from minirc.cli import main

    common = ["--coco", coco_json, "--val-coco", coco_json, "--config", "tiny", "--iters", "3", "--batch-size", "2",
              "--no-progress", "--backend", "cpu"]
    assert main(["train", *common, "--out", str(tmp_path / "a"), "--checkpoint-every", "1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "a" / "checkpoint_000002.npz"), "--out", str(tmp_path / "b"),
                 "--no-progress", "--backend", "cpu"]) == 0
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.npz") for d in ("a", "b"))
    assert b["extra"]["iteration"] == 3 and b["extra"]["coco"]["categories"] == IN_LABEL_ORDER
    for k in a["model"]:
        assert a["model"][k].tobytes() == b["model"][k].tobytes(), k


def test_any_preset_and_sets(coco_json):
    cfg = demo_config("shapes_demo")
    trainer = make_trainer(COCOFiles(coco_json), cfg, seed=0)
    assert trainer.model.config.num_classes == 3 and trainer.model.config.transform.min_size == (128,)
    trainer = train_coco(COCOFiles(coco_json), "tiny", iters=1, sets={"transform.min_size": "96"},
                         solver={"batch_size": 1}, progress=False, echo=lambda *a: None)
    assert trainer.model.config.transform.min_size == (96,)


def test_bad_files_fail_before_training(tmp_path):
    only_crowd = coco_dict()
    for a in only_crowd["annotations"]:
        a["iscrowd"] = 1
    path = write_coco(tmp_path, only_crowd, "crowd.json")
    with pytest.raises(ValueError, match="no image with a non-crowd annotation"):
        load_datasets(path)
    other = copy.deepcopy(coco_dict())
    other["categories"][0]["name"] = "rod"
    val = write_coco(tmp_path, other, "val.json")
    with pytest.raises(ValueError, match=r"--val-coco: .*'rod'.*trained on \[3: 'disc', 7: 'bar'\]"):
        load_datasets(write_coco(tmp_path), val=val)
    with pytest.raises(ValueError, match="eval_every"):
        make_trainer(COCOFiles(write_coco(tmp_path), eval_every=-1), demo_config("tiny"))
