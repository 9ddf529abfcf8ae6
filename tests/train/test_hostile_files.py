"""Files and the command line: corrupt checkpoints are one CheckpointError naming the file; the CLI
prints one line for unreadable images and unwritable folders, checks --out before any work, and
refuses the flags a resumed run cannot honour."""
import os
import zipfile

import numpy as np
import pytest

from minirc.cli import main
from minirc.nn import Linear
from minirc.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.fixture
def ckpt(tmp_path):
    return save_checkpoint(tmp_path / "good.npz", Linear(3, 2), extra={"iteration": 1})


def _corruptions(good, tmp_path):
    data = open(good, "rb").read()
    files = {"truncated": data[: len(data) // 2], "empty": b"", "random": os.urandom(256),
             "flipped": data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:]}
    for name, content in files.items():
        (tmp_path / f"{name}.npz").write_bytes(content)
    np.savez(tmp_path / "foreign.npz", a=np.zeros(3))
    np.savez(tmp_path / "badmeta.npz", __meta__=np.array("{not json"))
    np.savez(tmp_path / "listmeta.npz", __meta__=np.array("[1, 2]"))
    np.save(tmp_path / "array.npy", np.zeros(3))
    with zipfile.ZipFile(tmp_path / "nometa_keys.npz", "w") as z:
        z.writestr("__meta__.npy", open(tmp_path / "array.npy", "rb").read())
    names = list(files) + ["foreign", "badmeta", "listmeta", "nometa_keys"]
    return [tmp_path / f"{n}.npz" for n in names] + [tmp_path / "array.npy"]


def test_every_unreadable_checkpoint_is_a_checkpoint_error(ckpt, tmp_path):
    assert load_checkpoint(ckpt)["extra"] == {"iteration": 1}
    for path in _corruptions(ckpt, tmp_path):
        with pytest.raises(CheckpointError, match=r"checkpoint: '.*" + path.name):
            load_checkpoint(path)
    assert issubclass(CheckpointError, ValueError)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = save_checkpoint(tmp_path / "c.npz", Linear(3, 2))
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o640


@pytest.fixture(scope="module")
def model_ckpt(tmp_path_factory):
    from minirc.model import MaskRCNN, tiny

    return save_checkpoint(tmp_path_factory.mktemp("m") / "model.npz", MaskRCNN(tiny()), extra={})


def _one_line(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_unreadable_image_is_one_line(model_ckpt, tmp_path, capsys):
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not a png at all")
    assert main(["predict", model_ckpt, str(bad), "--out", str(tmp_path / "p.png")]) == 2
    assert "images: cannot read" in _one_line(capsys)


def test_cli_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "c.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert main(["predict", str(bad)]) == 2
    assert "is not a readable minirc checkpoint" in _one_line(capsys)


def test_cli_unwritable_output_folders(model_ckpt, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a folder should be")
    out = str(blocker / "sub")
    assert main(["train", "--config", "tiny", "--iters", "1", "--no-progress", "--out", out]) == 2
    assert "--out: cannot write to the folder" in _one_line(capsys)  # before any training
    assert main(["predict", model_ckpt, "--shapes", "1", "--out", out]) == 2
    assert "--out: cannot write" in _one_line(capsys)
    assert main(["predict", model_ckpt, "--shapes", "1", "--out", str(tmp_path / "ok"),
                 "--coco-results", str(blocker / "r.json")]) == 2
    assert "--coco-results: cannot write" in _one_line(capsys)
    assert main(["eval", model_ckpt, "--out", str(blocker / "m.json")]) == 2
    assert "--out: cannot write" in _one_line(capsys)


def test_cli_resume_refuses_settings_it_cannot_honour(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--config", "tiny", "--iters", "1", "--batch-size", "1", "--no-progress",
                 "--out", out]) == 0
    ckpt = os.path.join(out, "checkpoint.npz")
    capsys.readouterr()
    for flag, value in (("--lr", "0.5"), ("--batch-size", "3"), ("--seed", "7"), ("--config", "shapes_demo")):
        assert main(["train", "--resume", ckpt, flag, value, "--out", out]) == 2
        assert f"{flag}: a resumed run keeps the settings it was started with" in _one_line(capsys)
    # the run's own values are no change: accepted
    assert main(["train", "--resume", ckpt, "--seed", "0", "--config", "tiny", "--batch-size", "1",
                 "--no-progress", "--out", out]) == 0
