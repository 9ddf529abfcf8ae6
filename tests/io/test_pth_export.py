"""Export: MaskRCNN.torchvision_state_dict() -> save_pth -> load_pth / torchvision, and `minirc export`."""
import numpy as np
import pytest

from minirc.cli import main
from minirc.io import load_pth, save_pth
from minirc.model import config as C
from minirc.model.mask_rcnn import MaskRCNN, load_torchvision_state_dict
from minirc.train.checkpoint import save_checkpoint
from randomised_models import randomised


def _randomised(cfg, seed):
    return randomised(cfg, seed, noise=0.01)


def test_torchvision_state_dict_round_trip(tmp_path):
    model = _randomised(C.tiny(), 0)
    state = model.torchvision_state_dict()
    assert list(state) == list(model.state_dict())
    bn = [k for k in state if k.endswith("num_batches_tracked")]
    assert bn and all(state[k].dtype == np.int64 and state[k].shape == () for k in bn)
    assert all(v.dtype == np.float32 for k, v in state.items() if k not in bn)
    save_pth(state, tmp_path / "tiny.pth")
    other = load_torchvision_state_dict(MaskRCNN(C.tiny()), str(tmp_path / "tiny.pth"))  # a path: load_pth
    for k, v in model.state_dict().items():
        assert other.state_dict()[k].tobytes() == v.tobytes(), k


def test_export_command(tmp_path, capsys):
    model = _randomised(C.tiny(num_classes=3), 1)
    ckpt = save_checkpoint(tmp_path / "checkpoint.npz", model)
    assert main(["export", ckpt, str(tmp_path / "out.pth")]) == 0
    assert "under torchvision's keys" in capsys.readouterr().out
    got = load_pth(tmp_path / "out.pth")
    want = model.torchvision_state_dict()
    assert list(got) == list(want)
    for k in want:
        assert got[k].tobytes() == want[k].tobytes(), k
    assert main(["export", str(tmp_path / "missing.npz"), str(tmp_path / "x.pth")]) == 2


def test_torchvision_loads_an_export_strictly(tmp_path):
    """The parity test's ResNet-18-like detector: torchvision's MaskRCNN loads our file with strict=True."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.models.detection.mask_rcnn import MaskRCNN as TorchMaskRCNN
    from torchvision.models.resnet import BasicBlock, ResNet
    from torchvision.ops.misc import FrozenBatchNorm2d

    cfg = C.MaskRCNNConfig(num_classes=4, transform=C.TransformConfig(min_size=(128,), max_size=128),
                           backbone=C.BackboneConfig(block="basic", layers=(1, 1, 1, 1), frozen_bn_eps=1e-5,
                                                     trainable_layers=5),
                           roi_heads=C.RoIHeadsConfig(score_thresh=0.0, detections_per_img=20))
    model = _randomised(cfg, 2)
    save_pth(model.torchvision_state_dict(), tmp_path / "ours.pth")
    body = ResNet(BasicBlock, [1, 1, 1, 1], norm_layer=FrozenBatchNorm2d)
    ref = TorchMaskRCNN(_resnet_fpn_extractor(body, 5), num_classes=4, min_size=128, max_size=128, box_score_thresh=0.0,
                        box_detections_per_img=20)
    ref.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True), strict=True)
    for k, v in ref.state_dict().items():
        assert v.numpy().tobytes() == model.state_dict()[k].tobytes(), k
    ref.eval()
    model.eval()
    image = np.random.default_rng(0).random((3, 100, 120)).astype(np.float32)
    with torch.no_grad():
        want = ref([torch.from_numpy(image)])[0]
    got = model([image])[0]
    assert len(want["boxes"]) > 0 and len(got["boxes"]) == len(want["boxes"])
    np.testing.assert_allclose(got["boxes"], want["boxes"].numpy(), atol=1e-3)
    np.testing.assert_allclose(got["scores"], want["scores"].numpy(), atol=1e-4)
