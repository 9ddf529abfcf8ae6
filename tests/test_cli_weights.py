"""``minirc predict --weights FILE.pth``: a torchvision state-dict file instead of a checkpoint (tiny
synthetic files written by minirc.io.save_pth from randomly initialised models; nothing is downloaded)."""
import hashlib
import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest

import minirc.random
from minirc.cli import main
from minirc.data.coco_names import COCO_CATEGORY_NAMES
from minirc.io import save_pth
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN


def _weights(path, config):
    minirc.random.manual_seed(0)
    save_pth(MaskRCNN(config).torchvision_state_dict(), path)
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    plt.imsave(d / "photo.png", np.random.default_rng(0).random((48, 64, 3)))
    plain = _weights(d / "tiny.pth", C.tiny())
    with open(plain, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    hashed = str(d / f"tiny-{digest[:8]}.pth")
    shutil.copy(plain, hashed)
    wrong = str(d / f"tiny-{'0' if digest[0] != '0' else '1'}{digest[1:8]}.pth")
    shutil.copy(plain, wrong)
    return {"photo": str(d / "photo.png"), "plain": plain, "hashed": hashed, "wrong": wrong, "dir": d}


def test_predict_with_weights_draws_one_figure(files, tmp_path, capsys):
    out = tmp_path / "photo_pred.png"
    assert main(["predict", "--weights", files["hashed"], "--preset", "tiny", files["photo"],
                 "--out", str(out), "--min-size", "64", "--score-threshold", "0"]) == 0
    assert out.is_file()
    text = capsys.readouterr().out
    assert "SHA-256 starts with" in text and "as its name says" in text
    assert "tiny: backbone BatchNorm2d eps 1e-05, from the model's config" in text
    assert "[predict] photo:" in text


def test_predict_with_weights_without_a_hash_in_the_name(files, tmp_path, capsys):
    assert main(["predict", files["photo"], "--weights", files["plain"], "--preset", "tiny",
                 "--out", str(tmp_path / "figs")]) == 0  # the image before --weights is an image too
    assert os.listdir(tmp_path / "figs") == ["photo_pred.png"]
    assert "no hash in the name" in capsys.readouterr().out


def test_a_91_class_model_draws_coco_names(files, tmp_path, monkeypatch):
    """A 91-class model labels its detections with COCO's names (label k = category id k)."""
    monkeypatch.setitem(C.PRESETS, "tiny_coco", lambda: C.override(C.tiny(91), {"roi_heads.score_thresh": 0.0}))
    path = _weights(tmp_path / "tiny_coco.pth", C.tiny(91))
    seen = {}

    def spy(image, prediction, class_names=None, score_threshold=0.5, path=None, title=None):
        seen.update(class_names=class_names, labels=prediction["labels"])
        return plt.figure()

    monkeypatch.setattr("minirc.visualize.show_prediction", spy)
    assert main(["predict", "--weights", path, "--preset", "tiny_coco", files["photo"],
                 "--out", str(tmp_path / "p.png")]) == 0
    assert seen["class_names"] is COCO_CATEGORY_NAMES and len(seen["labels"]) > 0
    assert all(1 <= lab <= 90 for lab in seen["labels"])


def test_clear_errors(files, capsys):
    photo, plain = files["photo"], files["plain"]
    cases = [
        (["predict"], "checkpoint: give a checkpoint.npz (written by train or demo) or --weights FILE.pth"),
        (["predict", "run/checkpoint.npz", photo, "--weights", plain, "--preset", "tiny"], "not both"),
        (["predict", "run/checkpoint.npz", "--preset", "tiny"], "--preset: goes with --weights"),
        (["predict", "--weights", plain, "--preset", "tiny"], "give the image files"),
        (["predict", "--weights", plain, photo], "--preset: 'tiny.pth' is not one of torchvision's files"),
        (["predict", "--weights", files["wrong"], "--preset", "tiny", photo], "its SHA-256 starts with"),
        (["predict", "--weights", str(files["dir"] / "missing.pth"), "--preset", "tiny", photo], "no file"),
        (["predict", "--weights", plain, "--preset", "tiny", photo, "--min-size", "0"], "--min-size"),
        (["predict", "--weights", plain, "--preset", "torchvision_resnet50", photo], "missing"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err, (argv, err)


def test_a_known_file_name_into_the_wrong_preset_is_refused(files, tmp_path, capsys, monkeypatch):
    """torchvision's COCO_V1 v1 file name with a model of another eps: refused before reading it."""
    path = tmp_path / "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
    shutil.copy(files["plain"], path)
    assert main(["predict", "--weights", str(path), "--preset", "tiny", files["photo"]]) == 2
    err = capsys.readouterr().err
    assert "SHA-256 starts with" in err  # the hash in the real file's name does not fit this file
    os.rename(path, tmp_path / "maskrcnn_resnet50_fpn_coco.pth")  # no hash: the eps check speaks
    from minirc.model import torchvision_weights as W

    monkeypatch.setitem(W.WEIGHTS, "maskrcnn_resnet50_fpn_coco.pth",
                        W.WEIGHTS["maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"])
    assert main(["predict", "--weights", str(tmp_path / "maskrcnn_resnet50_fpn_coco.pth"), "--preset", "tiny",
                 files["photo"]]) == 2
    assert "build it with the 'torchvision_resnet50' preset" in capsys.readouterr().err
