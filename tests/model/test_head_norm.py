"""norm="bn" on the FPN and the mask head (torchvision's v2 layout) and RoIBatchNorm2d's small batches."""
import numpy as np
import pytest

import minirc
from minirc.model import config as C
from minirc.model.fpn import FeaturePyramidNetwork
from minirc.model.head_norm import RoIBatchNorm2d, conv_norm
from minirc.model.mask_head import MaskRCNNHeads
from minirc.nn import Sequential
from minirc.testing import gradcheck

BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(z):  # batch statistics per channel over (N, H, W), biased variance; weight 1, bias 0 at init
    return (z - z.mean(axis=(0, 2, 3), keepdims=True)) / np.sqrt(z.var(axis=(0, 2, 3), keepdims=True) + 1e-5)


def _conv3x3(x, w):  # plain loops over the taps: the golden value, padding 1
    n, c, h, wd = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    return sum(np.einsum("oc,nchw->nohw", w[:, :, i, j], xp[:, :, i:i + h, j:j + wd])
               for i in range(3) for j in range(3))


def test_conv_norm_is_torchvisions_conv2d_norm_activation():
    plain = Sequential(*conv_norm(3, 4, 3, padding=1))
    assert list(plain.state_dict()) == ["0.weight", "0.bias"]
    normed = Sequential(*conv_norm(3, 4, 3, padding=1, norm="bn", relu=True))
    assert list(normed.state_dict()) == ["0.weight"] + [f"1.{k}" for k in BN_KEYS]  # no conv bias before a norm
    with pytest.raises(ValueError, match="norm: expected one of"):
        conv_norm(3, 4, 3, norm="gn")


def test_mask_head_bn_golden():
    heads = MaskRCNNHeads(3, (4, 5), norm="bn")
    assert [k for k in heads.state_dict() if k.startswith("0.")] == ["0.0.weight"] + [f"0.1.{k}" for k in BN_KEYS]
    x = np.random.default_rng(0).standard_normal((3, 3, 5, 5))
    sd = heads.state_dict()
    h = np.maximum(_bn(_conv3x3(x, sd["0.0.weight"].astype(np.float64))), 0)
    want = np.maximum(_bn(_conv3x3(h, sd["1.0.weight"].astype(np.float64))), 0)
    np.testing.assert_allclose(heads(minirc.Tensor(x.astype(np.float32))).numpy(), want, rtol=1e-4, atol=1e-4)
    assert int(heads[0][1].num_batches_tracked) == 1


def test_fpn_bn_keys_and_golden_top_level():
    fpn = FeaturePyramidNetwork([2, 3], 4, extra_pool=False, norm="bn")
    keys = list(fpn.state_dict())
    assert "inner_blocks.0.0.weight" in keys and "inner_blocks.0.0.bias" not in keys
    assert all(f"layer_blocks.1.1.{k}" in keys for k in BN_KEYS)
    rng = np.random.default_rng(1)
    c2, c3 = rng.standard_normal((2, 2, 8, 8)), rng.standard_normal((2, 3, 4, 4))
    sd = {k: v.astype(np.float64) for k, v in fpn.state_dict().items()}
    last = _bn(np.einsum("oc,nchw->nohw", sd["inner_blocks.1.0.weight"][:, :, 0, 0], c3))
    p3 = _bn(_conv3x3(last, sd["layer_blocks.1.0.weight"]))
    out = fpn([minirc.Tensor(c2.astype(np.float32)), minirc.Tensor(c3.astype(np.float32))])
    assert [o.shape for o in out] == [(2, 4, 8, 8), (2, 4, 4, 4)]
    np.testing.assert_allclose(out[1].numpy(), p3, rtol=1e-4, atol=1e-4)


def test_mask_head_bn_gradcheck():
    heads = MaskRCNNHeads(2, (3,), norm="bn")
    for p in heads.parameters():
        p.data = p.data.astype(np.float64)
    bn = heads[0][1]
    bn.running_mean, bn.running_var = bn.running_mean.astype(np.float64), bn.running_var.astype(np.float64)
    gradcheck(lambda t: heads(t), [np.random.default_rng(2).standard_normal((2, 2, 3, 3))])


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (1, 3, 1, 1)])
def test_roi_batch_norm_falls_back_to_running_stats(shape):
    # no positive RoI for the mask head, or a single (1x1) value per channel: torch would raise
    bn = RoIBatchNorm2d(3)
    copy = np.array([0.5, -1.0, 2.0], np.float32)
    bn.running_mean[...] = copy
    x = minirc.Tensor(np.ones(shape, np.float32), requires_grad=True)
    out = bn(x)
    out.sum().backward()
    assert out.shape == shape and bn.training and int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.running_mean, copy)
    if shape[0]:
        np.testing.assert_allclose(out.numpy()[0, :, 0, 0], (1 - copy) / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_configs_switch_the_norm_on_and_reject_bad_values():
    cfg = C.override(C.preset("tiny", num_classes=3), {"fpn.norm": "bn", "mask_head.norm": "bn"})
    model = minirc.model.MaskRCNN(cfg)
    keys = set(model.state_dict())
    assert "backbone.fpn.layer_blocks.0.1.running_var" in keys and "roi_heads.mask_head.0.1.weight" in keys
    with pytest.raises(ValueError, match="FPNConfig.norm"):
        C.FPNConfig(norm="batch")
    with pytest.raises(ValueError, match="MaskHeadConfig.norm"):
        C.MaskHeadConfig(norm="group")
