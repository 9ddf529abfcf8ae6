"""The command line on COCO files: train --coco, eval --coco (names, AP per class), predict --coco (names,
the file's category and image ids), and the errors for mixing COCO checkpoints with shapes."""
import copy
import json

import pytest

from coco_files import coco_dict, write_coco
from minirc.cli import main


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two iterations of the tiny preset on the test's COCO file, scored on it after each iteration.

    ``roi_heads.score_thresh=0`` keeps every detection of the barely trained model, so that the
    results hold both classes."""
    folder = tmp_path_factory.mktemp("coco")
    path = write_coco(folder)
    out = folder / "run"
    assert main(["train", "--coco", path, "--image-dir", str(folder), "--val-coco", path, "--val-image-dir",
                 str(folder), "--config", "tiny", "--iters", "2", "--batch-size", "2", "--eval-every", "1",
                 "--set", "roi_heads.score_thresh=0", "--no-progress", "--out", str(out)]) == 0
    return folder, path, str(out / "checkpoint.npz")


def test_train_prints_the_classes_and_validation_ap(run, capsys, tmp_path):
    folder, path, _ = run
    assert main(["train", "--coco", path, "--config", "tiny", "--iters", "1", "--batch-size", "1",
                 "--val-coco", path, "--no-progress", "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "classes disc (id 3), bar (id 7)" in out
    assert "validation at iteration 1: bbox AP" in out


def test_eval_by_category_name(run, tmp_path, capsys):
    folder, path, ckpt = run
    capsys.readouterr()
    assert main(["eval", ckpt, "--coco", path, "--no-progress", "--out", str(tmp_path / "m.json")]) == 0
    out = capsys.readouterr().out
    assert "[eval] segm AP by class: disc " in out and ", bar " in out
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics["bbox"]["per_class"]) == {"disc", "bar"}


def test_predict_with_names_and_the_files_ids(run, tmp_path, monkeypatch):
    import minirc.visualize as vis

    folder, path, ckpt = run
    seen = []
    real = vis.show_prediction

    def spy(image, prediction, class_names=None, *args, **kwargs):
        seen.append(class_names)
        return real(image, prediction, class_names, *args, **kwargs)

    monkeypatch.setattr(vis, "show_prediction", spy)
    results = tmp_path / "results.json"
    assert main(["predict", ckpt, "--coco", path, "--out", str(tmp_path / "figs"), "--score-threshold", "0",
                 "--coco-results", str(results)]) == 0
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["a_pred.png", "b_pred.png", "empty_pred.png"]
    assert seen == [["__background__", "disc", "bar"]] * 3
    res = json.loads(results.read_text())
    assert res and {r["category_id"] for r in res} == {3, 7}          # the file's ids, not labels 1, 2
    assert {r["image_id"] for r in res} == {11, 12, 13}
    # image files: ids are their order, categories still the file's
    assert main(["predict", ckpt, str(folder / "a.png"), "--out", str(tmp_path / "a.png"),
                 "--coco-results", str(results)]) == 0
    assert {r["category_id"] for r in json.loads(results.read_text())} <= {3, 7}


def test_errors(run, tmp_path):
    folder, path, ckpt = run
    other = copy.deepcopy(coco_dict())
    other["categories"][1]["id"] = 4                                      # disc: 3 -> 4
    for a in other["annotations"]:
        a["category_id"] = 4 if a["category_id"] == 3 else a["category_id"]
    mismatch = write_coco(tmp_path, other, "other.json")
    assert main(["eval", ckpt, "--coco", mismatch, "--no-progress"]) == 2      # other category ids
    assert main(["eval", ckpt, "--no-progress"]) == 2                           # a COCO model on shapes
    assert main(["predict", ckpt, "--out", str(tmp_path / "p")]) == 2           # no images given
    assert main(["predict", ckpt, "--coco", path, "--shapes", "2"]) == 2
    common = ["--config", "tiny", "--iters", "1", "--no-progress", "--out", str(tmp_path / "x")]
    assert main(["train", "--val-coco", path, *common]) == 2                    # no training file
    assert main(["train", "--coco", path, "--eval-every", "5", *common]) == 2   # nothing to evaluate on
    assert main(["train", "--coco", path, "--image-dir", str(tmp_path / "nope"), *common]) == 2
    assert main(["train", "--coco", str(tmp_path / "missing.json"), *common]) == 2


def test_error_messages(run, tmp_path, capsys):
    folder, path, ckpt = run
    capsys.readouterr()
    main(["eval", ckpt, "--no-progress"])
    assert "trained on COCO files, not shapes: give --coco JSON" in capsys.readouterr().err
    main(["train", "--coco", path, "--eval-every", "5", "--config", "tiny", "--iters", "1", "--out", str(tmp_path)])
    assert "--eval-every: give a validation file" in capsys.readouterr().err
