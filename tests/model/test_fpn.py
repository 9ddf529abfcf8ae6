"""Feature pyramid: key names, the top-down pathway with nearest upsampling to exact sizes, P6."""
import numpy as np

from minirc.autograd import Tensor
from minirc.model.fpn import FeaturePyramidNetwork
from minirc.model.transform import interpolate_nearest


def _identity_fpn(ch):
    fpn = FeaturePyramidNetwork([ch] * 4, ch)
    for i in range(4):  # laterals and output convs become identities: P_i = C_i + up(P_{i+1} before conv)
        inner, layer = fpn.inner_blocks[i][0], fpn.layer_blocks[i][0]
        inner.weight.data[...] = np.eye(ch, dtype=np.float32)[:, :, None, None]
        layer.weight.data[...] = 0
        layer.weight.data[:, :, 1, 1] = np.eye(ch, dtype=np.float32)
        inner.bias.data[...] = 0
        layer.bias.data[...] = 0
    return fpn


def test_keys_and_shapes():
    fpn = FeaturePyramidNetwork([4, 8, 16, 32], 6)
    s = {k: tuple(v.shape) for k, v in fpn.state_dict().items()}
    assert s["inner_blocks.0.0.weight"] == (6, 4, 1, 1) and s["inner_blocks.3.0.weight"] == (6, 32, 1, 1)
    assert s["layer_blocks.2.0.weight"] == (6, 6, 3, 3) and s["layer_blocks.2.0.bias"] == (6,)
    assert len(s) == 16
    assert (fpn.inner_blocks[1][0].bias.data == 0).all()  # torchvision init: zero bias


def test_top_down_with_odd_sizes_by_numpy():
    rng = np.random.default_rng(0)
    sizes = [(9, 11), (5, 6), (3, 3), (2, 2)]  # not exact halves: nearest goes to the lateral's size
    c = [rng.standard_normal((1, 2) + s).astype(np.float32) for s in sizes]
    out = _identity_fpn(2)([Tensor(x) for x in c])
    expected = [None] * 4
    expected[3] = c[3]
    for i in (2, 1, 0):
        expected[i] = c[i] + interpolate_nearest(expected[i + 1], sizes[i])
    for got, exp in zip(out[:4], expected):
        np.testing.assert_allclose(got.numpy(), exp, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[4].numpy(), out[3].numpy()[:, :, ::2, ::2])  # P6: kernel 1, stride 2
    assert out[4].shape == (1, 2, 1, 1)


def test_without_extra_pool_and_gradients():
    fpn = FeaturePyramidNetwork([3, 3, 3, 3], 4, extra_pool=False)
    feats = [Tensor(np.ones((1, 3, n, n), np.float32), requires_grad=True) for n in (8, 4, 2, 1)]
    out = fpn(feats)
    assert len(out) == 4
    sum(o.sum() for o in out).backward()
    assert all(f.grad is not None and f.grad.shape == f.shape for f in feats)
