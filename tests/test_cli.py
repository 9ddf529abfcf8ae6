"""The command line: the demo end to end (tiny and short), predict, eval, train + resume, errors."""
import json
import os
import subprocess
import sys

import pytest

from minirc.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    """``python -m minirc demo`` as the README runs it, shrunk: 2 iterations, 3 held-out images."""
    out = tmp_path_factory.mktemp("demo")
    env = dict(os.environ, MPLBACKEND="Agg")
    res = subprocess.run([sys.executable, "-m", "minirc", "demo", "--config", "tiny", "--iters", "2",
                          "--test-images", "3", "--no-progress", "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[demo] bbox" in res.stdout and "[demo] segm" in res.stdout
    return out


def test_demo_writes_metrics_and_figures(demo_dir):
    with open(demo_dir / "metrics.json") as f:
        metrics = json.load(f)
    for t in ("bbox", "segm"):
        assert {"AP", "AP50", "AP75"} <= set(metrics[t]) and all(0 <= metrics[t][k] <= 1 or metrics[t][k] == -1
                                                               for k in ("AP", "AP50", "AP75"))
    assert metrics["iterations"] == 2 and metrics["train_seconds"] > 0
    for name in ("predictions.png", "losses.png", "losses.csv", "checkpoint.npz"):
        assert (demo_dir / name).is_file(), name


def test_predict_and_coco_results(demo_dir, tmp_path, capsys):
    ckpt = str(demo_dir / "checkpoint.npz")
    results = tmp_path / "results.json"
    assert main(["predict", ckpt, "--shapes", "2", "--out", str(tmp_path / "figs"),
                 "--coco-results", str(results)]) == 0
    assert sorted(os.listdir(tmp_path / "figs")) == ["shapes_0_pred.png", "shapes_1_pred.png"]
    with open(results) as f:
        assert isinstance(json.load(f), list)
    # an image file in, one figure out
    import matplotlib.pyplot as plt
    from minirc.data import ShapesDataset

    plt.imsave(tmp_path / "in.png", ShapesDataset(1, image_size=64)[0][0].transpose(1, 2, 0))
    assert main(["predict", ckpt, str(tmp_path / "in.png"), "--out", str(tmp_path / "in_pred.png")]) == 0
    assert (tmp_path / "in_pred.png").is_file()
    assert "in: " in capsys.readouterr().out


def test_eval(demo_dir, tmp_path):
    out = tmp_path / "m.json"
    assert main(["eval", str(demo_dir / "checkpoint.npz"), "--num-images", "2", "--no-progress",
                 "--out", str(out)]) == 0
    with open(out) as f:
        assert set(json.load(f)) >= {"bbox", "segm"}


def test_eval_on_a_coco_file(demo_dir, tmp_path, capsys):
    import matplotlib.pyplot as plt
    from minirc.data import ShapesDataset
    from minirc.evaluation import dataset_to_coco

    ds = ShapesDataset(2, image_size=64, seed=11)
    gt = dataset_to_coco(ds)
    for info, i in zip(gt["images"], range(len(ds))):
        plt.imsave(tmp_path / info["file_name"], ds[i][0].transpose(1, 2, 0))
    with open(tmp_path / "gt.json", "w") as f:
        json.dump(gt, f)
    assert main(["eval", str(demo_dir / "checkpoint.npz"), "--coco", str(tmp_path / "gt.json"),
                 "--no-progress"]) == 0
    assert "(images: 2)" in capsys.readouterr().out


def test_train_and_resume(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--config", "tiny", "--iters", "2", "--batch-size", "2", "--checkpoint-every", "1", "--no-progress",
                 "--out", out]) == 0
    assert main(["train", "--resume", os.path.join(out, "checkpoint_000001.npz"), "--no-progress",
                 "--out", str(tmp_path / "resumed")]) == 0
    assert "resuming at iteration 1 of 2" in capsys.readouterr().out
    assert main(["train", "--resume", os.path.join(out, "checkpoint.npz"), "--iters", "5", "--out", out]) == 2
    assert "--iters" in capsys.readouterr().err


def test_clear_errors(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "missing.npz")]) == 2
    assert "no file" in capsys.readouterr().err
    assert main(["demo", "--iters", "0"]) == 2
    assert "--iters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["demo", "--config", "huge"])
    with pytest.raises(SystemExit):
        main([])


def test_demo_draws_training_and_held_out_images_with_their_own_object_counts():
    import dataclasses

    from minirc.train.demo import TEST_SEED_OFFSET, build, demo_config

    cfg = dataclasses.replace(demo_config("shapes_demo"), train_max_objects=12)
    _, train, test = build(cfg, seed=3)
    assert (train.max_objects, train.seed) == (12, 3)
    assert (test.max_objects, test.seed) == (cfg.max_objects, 3 + TEST_SEED_OFFSET)
