"""The backbone with trainable BatchNorm2d (BackboneConfig.norm="bn", torchvision's from-scratch choice)."""
import dataclasses

import numpy as np
import pytest

from minirc.autograd import Tensor
from minirc.model import config as C
from minirc.model.backbone import BackboneWithFPN, ResNet
from minirc.nn import BatchNorm2d, FrozenBatchNorm2d


def _images(n=2, size=64, seed=0):
    return Tensor(np.random.default_rng(seed).random((n, 3, size, size)).astype(np.float32))


def _bns(module):
    return [m for m in module.modules() if isinstance(m, BatchNorm2d)]


def test_presets_use_bn_and_keys_match_the_frozen_layout():
    assert C.shapes_demo().backbone.norm == "bn" and C.tiny().backbone.norm == "bn"
    assert C.MaskRCNNConfig().backbone.norm == "frozen_bn"  # torchvision's pretrained-weights model
    cfg = C.shapes_demo().backbone
    body = ResNet(cfg)
    assert len(_bns(body)) == 1 + 8 * 2 + 3  # stem, two per BasicBlock, three downsample shortcuts
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in body.modules())
    frozen = ResNet(dataclasses.replace(cfg, norm="frozen_bn"))
    keys = list(body.state_dict())
    assert [k for k in keys if not k.endswith("num_batches_tracked")] == list(frozen.state_dict())
    assert "layer2.0.downsample.1.num_batches_tracked" in keys and "bn1.num_batches_tracked" in keys
    assert "bn1.weight" in dict(body.named_parameters())  # a trainable parameter, not a buffer


def test_bad_norm_name_is_rejected():
    with pytest.raises(ValueError, match="norm"):
        C.override(C.tiny(), {"backbone.norm": "group"})


def test_forward_backward_trains_bn_and_updates_statistics():
    cfg = C.shapes_demo()
    bb = BackboneWithFPN(cfg.backbone, cfg.fpn)
    feats = bb(_images())
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]
    sum((f * f).sum() for f in feats).backward()
    assert all(p.grad is not None for p in bb.parameters())
    assert all(int(m.num_batches_tracked) == 1 for m in _bns(bb))
    assert not np.allclose(bb.body.bn1.running_mean, 0.0)


def test_eval_uses_running_statistics():
    cfg = C.shapes_demo().backbone
    body = ResNet(cfg)
    body(_images(seed=1))  # one training batch moves the running statistics
    body.eval()
    before = {k: v.copy() for k, v in body.state_dict().items()}
    x = _images(seed=2)
    both = body(x)
    for k, v in body.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    alone = body(Tensor(x.data[1:]))  # eval: an image's features do not depend on its batch mates
    for b, a in zip(both, alone):
        np.testing.assert_allclose(a.numpy(), b.numpy()[1:], rtol=1e-4, atol=1e-5)


def test_model_eval_reaches_every_bn_and_checkpoint_keeps_counters(tmp_path):
    from minirc.model import MaskRCNN
    from minirc.train.checkpoint import load_model, save_checkpoint

    model = MaskRCNN(C.tiny())
    model.train()
    for seed in range(2):
        model.backbone(_images(1, 64, seed))
    model.eval()
    assert _bns(model) and not any(m.training for m in _bns(model))
    path = save_checkpoint(tmp_path / "bn.npz", model)
    loaded, _ = load_model(path)
    assert loaded.config.backbone.norm == "bn"
    saved, back = model.state_dict(), loaded.state_dict()
    assert list(saved) == list(back)
    for k, v in saved.items():
        assert back[k].dtype == v.dtype, k
        np.testing.assert_array_equal(back[k], v, err_msg=k)
    assert back["backbone.body.bn1.num_batches_tracked"].dtype == np.int64
    assert int(back["backbone.body.bn1.num_batches_tracked"]) == 2


def test_torchvision_resnet_with_batchnorm_parity():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.models.resnet")
    torch.manual_seed(0)
    ref = tv.ResNet(tv.BasicBlock, [1, 1, 1, 1], norm_layer=torch.nn.BatchNorm2d)  # no weights: plain BN
    ours = ResNet(C.BackboneConfig(block="basic", layers=(1, 1, 1, 1), norm="bn", trainable_layers=5))
    state = {k: v.numpy() for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    ours.load_state_dict(state)
    x = np.random.default_rng(0).random((2, 3, 64, 64)).astype(np.float32)
    xt = torch.tensor(x)
    t = ref.maxpool(ref.relu(ref.bn1(ref.conv1(xt))))
    expected = []
    for layer in (ref.layer1, ref.layer2, ref.layer3, ref.layer4):
        t = layer(t)
        expected.append(t)
    got = ours(Tensor(x))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g.numpy(), e.detach().numpy(), rtol=1e-4, atol=1e-4)
    weights = [np.random.default_rng(i).standard_normal(g.shape).astype(np.float32) for i, g in enumerate(got)]
    sum((g * w).sum() for g, w in zip(got, weights)).backward()
    sum((e * torch.tensor(w)).sum() for e, w in zip(expected, weights)).backward()
    for name, p in ours.named_parameters():
        if ".bn" in name or name.startswith("bn") or "downsample.1" in name:
            ref_grad = dict(ref.named_parameters())[name].grad.numpy()
            np.testing.assert_allclose(p.grad, ref_grad, rtol=1e-3, atol=1e-3 * np.abs(ref_grad).max(), err_msg=name)
    for k, v in ref.state_dict().items():
        if "running" in k or "num_batches" in k:
            np.testing.assert_allclose(ours.state_dict()[k], v.numpy(), rtol=1e-4, atol=1e-5, err_msg=k)
