"""torchvision's v2 layout without torch (config options, FastRCNNConvFCHead, the preset's keys and
parameter count), the weights files' hash check, and the BatchNorm eps check of the loader."""
import hashlib
import logging

import numpy as np
import pytest

import minirc.random
from minirc.autograd import Tensor, no_grad
from minirc.io import save_pth
from minirc.model import config as C
from minirc.model import torchvision_weights as W
from minirc.model.box_head import FastRCNNConvFCHead
from minirc.model.mask_rcnn import MaskRCNN, load_torchvision_state_dict

V1_FILE = "maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth"
V2_FILE = "maskrcnn_resnet50_fpn_v2_coco-73cbd019.pth"
V2_STYLE = {"fpn.norm": "bn", "rpn.head_conv_depth": 2, "box_head.head_type": "conv_fc",
            "box_head.conv_layers": (16, 16), "box_head.norm": "bn", "mask_head.norm": "bn"}


# ----- config options ---------------------------------------------------------------------------

@pytest.mark.parametrize("changes, match", [
    ({"box_head.head_type": "cnn"}, r"BoxHeadConfig\.head_type.*'mlp', 'conv_fc'.*'cnn'"),
    ({"box_head.head_type": "conv_fc", "box_head.conv_layers": ()}, r"BoxHeadConfig\.conv_layers"),
    ({"box_head.head_type": "conv_fc", "box_head.conv_layers": (8, 0)}, r"BoxHeadConfig\.conv_layers"),
    ({"rpn.head_conv_depth": 0}, r"RPNConfig\.head_conv_depth.*int >= 1.*0"),
    ({"rpn.head_conv_depth": 1.5}, r"RPNConfig\.head_conv_depth"),
])
def test_bad_options_name_the_field(changes, match):
    with pytest.raises(ValueError, match=match):
        C.override(C.tiny(), changes)


def test_v1_defaults_unchanged():
    cfg = C.torchvision_resnet50()
    assert cfg.rpn.head_conv_depth == 1 and cfg.box_head.head_type == "mlp" and cfg.box_head.norm == "none"
    assert cfg.backbone.norm == "frozen_bn" and cfg.backbone.frozen_bn_eps == 0.0


def test_v2_preset_values():
    cfg = C.preset("torchvision_resnet50_v2")
    assert cfg.backbone.norm == "bn" and cfg.fpn.norm == "bn" and cfg.mask_head.norm == "bn"
    assert cfg.rpn.head_conv_depth == 2
    assert (cfg.box_head.head_type, cfg.box_head.conv_layers, cfg.box_head.representation_size,
            cfg.box_head.norm) == ("conv_fc", (256,) * 4, 1024, "bn")
    # everything else is maskrcnn_resnet50_fpn's (the same MaskRCNN defaults in torchvision)
    v1 = C.torchvision_resnet50()
    assert (cfg.transform, cfg.anchors, cfg.roi_heads) == (v1.transform, v1.anchors, v1.roi_heads)


# ----- FastRCNNConvFCHead -----------------------------------------------------------------------

def _conv3x3_relu(x, w, b):
    """Reference: (R, C, P, P) -> (R, O, P, P), padding 1, as explicit sums."""
    r, c, p, _ = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((r, w.shape[0], p, p))
    for i in range(p):
        for j in range(p):
            out[:, :, i, j] = np.einsum("rcyx,ocyx->ro", xp[:, :, i:i + 3, j:j + 3], w)
    return np.maximum(out + b[None, :, None, None], 0)


def test_conv_fc_head_keys_and_values_without_norm():
    minirc.random.manual_seed(0)
    head = FastRCNNConvFCHead(3, 4, (5, 2), 6, norm="none").eval()
    shapes = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    assert shapes == {"0.0.weight": (5, 3, 3, 3), "0.0.bias": (5,), "1.0.weight": (2, 5, 3, 3), "1.0.bias": (2,),
                      "3.weight": (6, 32), "3.bias": (6,)}  # 2 is the Flatten: torchvision's indices
    sd = head.state_dict()
    x = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
    h = _conv3x3_relu(x.astype(np.float64), sd["0.0.weight"], sd["0.0.bias"])
    h = _conv3x3_relu(h, sd["1.0.weight"], sd["1.0.bias"])
    expected = np.maximum(h.reshape(3, -1) @ sd["3.weight"].T.astype(np.float64) + sd["3.bias"], 0)
    with no_grad():
        got = head(Tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_conv_fc_head_with_batch_norm():
    minirc.random.manual_seed(0)
    head = FastRCNNConvFCHead(4, 3, (8, 8, 8, 8), 16, norm="bn")
    keys = list(head.state_dict())
    assert "0.0.bias" not in keys and "3.1.running_var" in keys and "3.1.num_batches_tracked" in keys
    assert keys[-2:] == ["5.weight", "5.bias"]  # four convs, Flatten at 4: maskrcnn_resnet50_fpn_v2's box_head.5
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    bn = head[0][1]
    bn.running_mean[...] = rng.standard_normal(8).astype(np.float32)
    bn.running_var[...] = rng.uniform(0.5, 2, 8).astype(np.float32)
    head.eval()
    with no_grad():
        conv = head[0][0](Tensor(x)).numpy()
        first = head[0](Tensor(x)).numpy()
        out = head(Tensor(x))
    expected = np.maximum((conv - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + 1e-5)
                          * bn.weight.numpy()[:, None, None] + bn.bias.numpy()[:, None, None], 0)
    np.testing.assert_allclose(first, expected, rtol=1e-5, atol=1e-6)
    assert out.shape == (6, 16)
    with no_grad():
        assert head(Tensor(np.zeros((0, 4, 3, 3), np.float32))).shape == (0, 16)  # no RoIs


def test_v2_style_tiny_model_trains():
    """Every option of the v2 layout on the tiny network: five finite losses, a gradient for every
    trainable parameter (the box head's convs and norms, the second RPN conv)."""
    minirc.random.manual_seed(0)
    model = MaskRCNN(C.override(C.tiny(), V2_STYLE))
    keys = set(model.state_dict())
    assert {"rpn.head.conv.1.0.weight", "roi_heads.box_head.1.1.running_mean", "roi_heads.box_head.3.weight",
            "backbone.fpn.layer_blocks.0.1.weight", "roi_heads.mask_head.0.1.weight"} <= keys
    rng = np.random.default_rng(0)
    image = rng.random((3, 64, 64)).astype(np.float32) * 0.2
    masks = np.zeros((1, 64, 64), np.uint8)
    masks[0, 10:40, 12:50] = 1
    image[:, 10:40, 12:50] += 0.6
    losses = model([image], [{"boxes": np.array([[12, 10, 50, 40]], np.float32), "labels": np.array([2]),
                              "masks": masks}])
    assert all(np.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_v2_preset_layout_without_torch():
    """maskrcnn_resnet50_fpn_v2's state dict (432 entries) and parameter count
    (MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1.meta: 46,359,409)."""
    model = MaskRCNN(C.torchvision_resnet50_v2())
    sd = model.state_dict()
    assert len(sd) == 432
    assert sum(p.size for p in model.parameters()) == 46_359_409
    shapes = {k: tuple(np.shape(v)) for k, v in sd.items()}
    assert shapes["rpn.head.conv.1.0.weight"] == (256, 256, 3, 3) and "rpn.head.conv.2.0.weight" not in shapes
    assert shapes["roi_heads.box_head.5.weight"] == (1024, 256 * 7 * 7)
    assert "roi_heads.box_head.0.0.bias" not in shapes and shapes["roi_heads.box_head.3.1.running_var"] == (256,)
    assert "backbone.fpn.inner_blocks.3.0.bias" not in shapes and shapes["backbone.fpn.inner_blocks.3.0.weight"] \
        == (256, 2048, 1, 1)
    assert shapes["backbone.body.layer4.2.bn3.num_batches_tracked"] == ()
    assert model.backbone.body.bn1.eps == 1e-5 and type(model.backbone.body.bn1).__name__ == "BatchNorm2d"


# ----- the hash in the file name ----------------------------------------------------------------

@pytest.mark.parametrize("name, prefix", [
    (V1_FILE, "bf2d0c1e"), ("dir/" + V2_FILE, "73cbd019"), ("resnet50-0676ba61.pth", "0676ba61"),
    ("model.pth", None), ("my-model.pth", None), ("x-.pth", None),
])
def test_hash_prefix_as_torch_hub_reads_it(name, prefix):
    assert W.hash_prefix(name) == prefix


def test_check_hash(tmp_path):
    data = b"not really weights"
    digest = hashlib.sha256(data).hexdigest()
    good = tmp_path / f"weights-{digest[:8]}.pth"
    good.write_bytes(data)
    assert W.check_hash(good) == digest[:8]
    bad = tmp_path / f"weights-{'0' if digest[0] != '0' else '1'}{digest[1:8]}.pth"
    bad.write_bytes(data)
    with pytest.raises(ValueError, match=rf"weights-.*SHA-256 starts with {digest[:8]}.*download it again"):
        W.check_hash(bad)
    plain = tmp_path / "weights.pth"
    plain.write_bytes(data)
    assert W.check_hash(plain) is None
    with pytest.raises(FileNotFoundError, match="no file"):
        W.check_hash(tmp_path / "missing-abc.pth")


# ----- the BatchNorm eps ------------------------------------------------------------------------

def test_known_files_and_their_eps():
    assert W.known_weights("/some/dir/" + V1_FILE).preset == "torchvision_resnet50"
    assert W.known_weights(V2_FILE).preset == "torchvision_resnet50_v2" and W.known_weights("x.pth") is None
    for name, entry in W.WEIGHTS.items():
        assert entry.url.endswith("/" + name) and W.hash_prefix(name) in name
        assert W.model_batch_norm(C.preset(entry.preset)) == (entry.backbone_norm, entry.eps)


def test_check_batch_norm_messages_and_mismatches():
    line = W.check_batch_norm(C.torchvision_resnet50(), V1_FILE)
    assert "FrozenBatchNorm2d eps 0" in line and "overwrite_eps" in line
    assert "BatchNorm2d eps 1e-05" in W.check_batch_norm(C.torchvision_resnet50_v2(), V2_FILE)
    with pytest.raises(ValueError, match=r"eps 0 .*model uses FrozenBatchNorm2d eps 1e-05.*'torchvision_resnet50'"):
        W.check_batch_norm(C.torchvision_resnet50(frozen_bn_eps=1e-5), V1_FILE)
    with pytest.raises(ValueError, match=r"eps 1e-05 .*model uses FrozenBatchNorm2d eps 0.*torchvision_resnet50_v2"):
        W.check_batch_norm(C.override(C.torchvision_resnet50_v2(), {"backbone.norm": "frozen_bn",
                                                                    "backbone.frozen_bn_eps": 0.0}), V2_FILE)
    other = W.check_batch_norm(C.torchvision_resnet50(), "mine.pth")
    assert "eps 0, from the model's config (backbone.frozen_bn_eps)" in other and "not one of" in other
    assert "a state dict" in W.check_batch_norm(C.tiny())


def test_loader_refuses_a_known_file_for_another_eps_before_reading_it(tmp_path):
    path = tmp_path / V1_FILE
    path.write_bytes(b"never read")
    with pytest.raises(ValueError, match=r"eps 0 .*build it with the 'torchvision_resnet50' preset"):
        load_torchvision_state_dict(MaskRCNN(C.tiny()), path)


def test_loader_logs_the_eps_and_why(tmp_path, caplog):
    minirc.random.manual_seed(0)
    source = MaskRCNN(C.tiny())
    path = tmp_path / "tiny.pth"
    save_pth(source.torchvision_state_dict(), path)
    with caplog.at_level(logging.INFO, logger="minirc.model.torchvision_weights"):
        model = W.from_torchvision_weights(path, preset="tiny")
    assert "backbone BatchNorm2d eps 1e-05, from the model's config" in caplog.text and "'tiny.pth'" in caplog.text
    assert not model.training
    for k, v in source.state_dict().items():
        np.testing.assert_array_equal(model.state_dict()[k], v, err_msg=k)
    with pytest.raises(ValueError, match=r"preset: 'tiny\.pth' is not one of torchvision's files"):
        W.from_torchvision_weights(path)
