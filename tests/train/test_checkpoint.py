import json

import numpy as np
import pytest

import minirc
from minirc import random as mrandom
from minirc.train.checkpoint import decode_state, encode_state, load_checkpoint, save_checkpoint


class _Stateful:
    """Anything with state_dict/load_state_dict: stands in for a model, an optimizer, a loader."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = state


def test_encode_decode_round_trip_is_exact():
    state = {"state": {0: {"momentum_buffer": np.arange(6, dtype=np.float32).reshape(2, 3)}},
             "param_groups": [{"lr": 0.1 * 3, "milestones": (10, 20), "params": [0, 1]}],
             "name": "sgd", "flag": True, "none": None, "scalar": np.float32(0.5)}
    arrays = {}
    tree = json.loads(json.dumps(encode_state(state, arrays)))  # what the file stores
    back = decode_state(tree, arrays)
    np.testing.assert_array_equal(back["state"][0]["momentum_buffer"], state["state"][0]["momentum_buffer"])
    assert back["param_groups"][0]["lr"] == 0.1 * 3  # 0.30000000000000004: floats survive JSON exactly
    assert back["param_groups"][0]["milestones"] == (10, 20) and back["scalar"] == 0.5
    assert back["name"] == "sgd" and back["flag"] is True and back["none"] is None
    with pytest.raises(TypeError, match="cannot store"):
        encode_state({"f": object()}, {})


def test_save_load_restores_everything(tmp_path):
    rng = np.random.default_rng(0)
    weights = {"conv1.weight": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
               "fc.bias": minirc.Tensor(rng.standard_normal(5).astype(np.float32))}
    model = _Stateful(weights)
    opt = _Stateful({"state": {0: {"momentum_buffer": np.ones(3, np.float32)}}, "param_groups": [{"lr": 0.02}]})
    loader = _Stateful({"epoch": 2, "position": 5})
    mrandom.manual_seed(123)
    mrandom.generator().random(7)
    path = save_checkpoint(tmp_path / "ck.npz", model, opt, None, loader,
                           extra={"iteration": 9, "log": [{"loss": 1.5}]}, config={"num_classes": 4})
    expected_next = mrandom.generator().random(3)
    mrandom.manual_seed(0)  # scramble the global generator

    ck = load_checkpoint(path)
    assert ck["config"] == {"num_classes": 4} and ck["extra"]["iteration"] == 9 and ck["scheduler"] is None
    m2, o2, l2 = _Stateful({}), _Stateful({}), _Stateful({})
    ck.restore(m2, o2, None, l2)
    np.testing.assert_array_equal(m2.state["conv1.weight"], weights["conv1.weight"])
    np.testing.assert_array_equal(m2.state["fc.bias"], weights["fc.bias"].data)
    np.testing.assert_array_equal(o2.state["state"][0]["momentum_buffer"], np.ones(3))
    assert l2.state == {"epoch": 2, "position": 5}
    np.testing.assert_array_equal(mrandom.generator().random(3), expected_next)
    with pytest.raises(ValueError, match="scheduler"):
        ck.restore(scheduler=_Stateful({}))
    assert np.load(path, allow_pickle=False)["model/conv1.weight"].shape == (4, 3, 3, 3)  # plain npz


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_checkpoint(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a minirc checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_saved_model_predicts_identically(tmp_path):
    from minirc.model import MaskRCNN, override, tiny
    from minirc.train import load_model
    from minirc.train.evaluate import predict_images

    mrandom.manual_seed(0)
    cfg = override(tiny(), {"transform.min_size": (48,), "transform.max_size": 48, "roi_heads.score_thresh": 0.0})
    model = MaskRCNN(cfg)
    for p in model.parameters():  # move away from the initial weights, so loading really matters
        p.data += np.float32(0.01) * mrandom.generator().standard_normal(p.shape).astype(np.float32)
    images = [minirc.data.ShapesDataset(2, image_size=48, seed=5)[i][0] for i in range(2)]
    before = predict_images(model, images)
    path = save_checkpoint(tmp_path / "m.npz", model)

    loaded, ck = load_model(path)
    assert loaded.config == cfg and not loaded.training
    after = predict_images(loaded, images)
    assert sum(len(p["scores"]) for p in before) > 0
    for a, b in zip(before, after):
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
