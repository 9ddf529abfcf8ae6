"""TwoMLPHead: torchvision's keys by default; the optional batch norm after fc6 and fc7."""
import numpy as np
import pytest

import minirc
from minirc.model import config as C
from minirc.model.box_head import TwoMLPHead
from minirc.testing import gradcheck


def test_default_is_torchvisions_two_fc_layers():
    head = TwoMLPHead(12, 5)
    assert list(head.state_dict()) == ["fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"]
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    sd = head.state_dict()
    want = np.maximum(np.maximum(x.reshape(4, 12) @ sd["fc6.weight"].T + sd["fc6.bias"], 0)
                      @ sd["fc7.weight"].T + sd["fc7.bias"], 0)
    np.testing.assert_allclose(head(minirc.Tensor(x)).numpy(), want, rtol=1e-5, atol=1e-6)


def test_bn_normalises_each_feature_over_the_rois():
    head = TwoMLPHead(12, 5, norm="bn")
    assert [k for k in head.state_dict() if k.startswith("bn")] == [
        f"{b}.{k}" for b in ("bn6", "bn7") for k in ("weight", "bias", "running_mean", "running_var",
                                                    "num_batches_tracked")]
    x = np.random.default_rng(1).standard_normal((6, 3, 2, 2)).astype(np.float32)
    sd = {k: v.astype(np.float64) for k, v in head.state_dict().items()}

    def bn(z):  # batch statistics over the RoIs, biased variance; weight 1, bias 0 at initialisation
        return (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)

    h6 = np.maximum(bn(x.reshape(6, 12) @ sd["fc6.weight"].T + sd["fc6.bias"]), 0)
    want = np.maximum(bn(h6 @ sd["fc7.weight"].T + sd["fc7.bias"]), 0)
    np.testing.assert_allclose(head(minirc.Tensor(x)).numpy(), want, rtol=1e-4, atol=1e-4)
    assert int(head.bn6.num_batches_tracked) == 1


def test_bn_head_gradcheck():
    head = TwoMLPHead(6, 3, norm="bn")
    for p in head.parameters():
        p.data = p.data.astype(np.float64)
    for b in (head.bn6, head.bn7):
        b.running_mean, b.running_var = b.running_mean.astype(np.float64), b.running_var.astype(np.float64)
    x = np.random.default_rng(2).standard_normal((5, 6, 1, 1))
    gradcheck(lambda t: head(t), [x])


@pytest.mark.parametrize("rois", [0, 1])
def test_bn_head_trains_on_zero_or_one_roi(rois):
    # batch statistics need two samples: fewer RoIs use the running statistics and leave them alone
    head = TwoMLPHead(12, 5, norm="bn")
    x = minirc.Tensor(np.ones((rois, 3, 2, 2), np.float32), requires_grad=True)
    out = head(x)
    out.sum().backward()
    assert out.shape == (rois, 5) and head.training and head.bn6.training
    assert int(head.bn6.num_batches_tracked) == 0


def test_bad_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="norm: expected one of"):
        TwoMLPHead(12, 5, norm="gn")
    with pytest.raises(ValueError, match="BoxHeadConfig.norm"):
        C.BoxHeadConfig(norm="batch")
