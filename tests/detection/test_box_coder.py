import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minirc.detection import BoxCoder
from minirc.detection.box_coder import BBOX_XFORM_CLIP

PROPOSAL = np.array([[10, 20, 50, 100]], np.float32)
GT = np.array([[15, 25, 45, 110]], np.float32)


def test_verified_encode_decode_with_box_head_weights():
    # docs/semantics.md section 6 [verified with torchvision 0.29.1]
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    deltas = coder.encode(GT, PROPOSAL)
    assert deltas.dtype == np.float32
    np.testing.assert_allclose(deltas, [[0.0, 0.9375, -1.438410, 0.303123]], atol=1e-6)
    np.testing.assert_array_equal(coder.decode(deltas, PROPOSAL), GT)  # exact round trip here


def test_verified_log_space_clamp():
    # dw = dh = 100 / 5 = 20 -> clamped to log(1000/16) = 4.1352 -> the box is 62.5 x the proposal
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    assert coder.bbox_xform_clip == BBOX_XFORM_CLIP == pytest.approx(4.135166556742356)
    boxes = coder.decode(np.array([[0, 0, 100, 100]], np.float32), PROPOSAL)
    np.testing.assert_allclose(boxes, [[-1220.0001, -2440.0002, 1280.0001, 2560.0002]], rtol=1e-7)


def test_hand_computed_unit_weights():
    # anchor (0, 0, 10, 20): centre (5, 10), size 10 x 20; gt (2, 4, 22, 24): centre (12, 14), size 20 x 20
    d = BoxCoder((1, 1, 1, 1)).encode(np.array([[2.0, 4, 22, 24]]), np.array([[0.0, 0, 10, 20]]))
    np.testing.assert_allclose(d, [[0.7, 0.2, math.log(2.0), 0.0]], rtol=1e-12)


def test_weights_scale_the_deltas():
    rng = np.random.default_rng(0)
    anchors, gt = _boxes(rng, 20), _boxes(rng, 20)
    unit = BoxCoder((1, 1, 1, 1)).encode(gt, anchors)
    np.testing.assert_allclose(BoxCoder((10, 10, 5, 5)).encode(gt, anchors), unit * [10, 10, 5, 5], rtol=1e-12)


def test_clamp_is_upper_only():
    anchor = np.array([[0.0, 0, 10, 10]])
    tiny = BoxCoder((1, 1, 1, 1)).decode(np.array([[0, 0, -10.0, -10.0]]), anchor)
    np.testing.assert_allclose(tiny[0, 2] - tiny[0, 0], 10 * math.exp(-10.0), rtol=1e-9)
    huge = BoxCoder((1, 1, 1, 1)).decode(np.array([[0, 0, 50.0, 0]]), anchor)
    assert huge[0, 2] - huge[0, 0] == pytest.approx(10 * 1000 / 16)


def test_per_class_deltas_decode_like_k_separate_decodes():
    rng = np.random.default_rng(1)
    anchors = _boxes(rng, 6).astype(np.float32)
    deltas = rng.normal(0, 1, (6, 12)).astype(np.float32)  # K = 3 classes
    coder = BoxCoder((10, 10, 5, 5))
    boxes = coder.decode(deltas, anchors)
    assert boxes.shape == (6, 12) and boxes.dtype == np.float32
    for k in range(3):
        np.testing.assert_array_equal(boxes[:, 4 * k:4 * k + 4], coder.decode(deltas[:, 4 * k:4 * k + 4], anchors))


def test_lists_per_image_and_empty_inputs():
    rng = np.random.default_rng(2)
    a1, a2, g1, g2 = _boxes(rng, 3), _boxes(rng, 0), _boxes(rng, 3), _boxes(rng, 0)
    coder = BoxCoder((1, 1, 1, 1))
    e1, e2 = coder.encode([g1, g2], [a1, a2])
    assert e1.shape == (3, 4) and e2.shape == (0, 4)
    np.testing.assert_array_equal(e1, coder.encode(g1, a1))
    assert coder.decode(np.zeros((3, 4)), [a1, a2]).shape == (3, 4)
    assert coder.decode(np.zeros((0, 8), np.float32), np.zeros((0, 4), np.float32)).shape == (0, 8)
    assert coder.encode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)


def test_dtype_follows_the_inputs():
    coder = BoxCoder((1, 1, 1, 1))
    assert coder.encode(GT.astype(np.float64), PROPOSAL).dtype == np.float64
    assert coder.decode(np.zeros((1, 4), np.float64), PROPOSAL).dtype == np.float64
    assert coder.decode(np.zeros((1, 4), np.float32), PROPOSAL.astype(np.float64)).dtype == np.float32


def test_clear_errors():
    with pytest.raises(ValueError, match="weights"):
        BoxCoder((1, 1, 1))
    coder = BoxCoder((1, 1, 1, 1))
    with pytest.raises(ValueError, match="anchors"):
        coder.encode(GT, np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="matched_gt_boxes"):
        coder.encode(np.zeros((1, 5), np.float32), PROPOSAL)
    with pytest.raises(ValueError, match="deltas"):
        coder.decode(np.zeros((1, 6), np.float32), PROPOSAL)
    with pytest.raises(TypeError, match="deltas"):
        coder.decode(np.zeros((1, 4), np.int64), PROPOSAL)


def _boxes(rng, n):
    xy = rng.uniform(-100, 500, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(1, 300, (n, 2))], axis=1)


corners = hnp.arrays(np.float64, (5, 2), elements=st.floats(-1000, 1000))
sizes = hnp.arrays(np.float64, (5, 2), elements=st.floats(0.5, 800))


@settings(max_examples=80, deadline=None)
@given(a_xy=corners, a_wh=sizes, g_xy=corners, g_wh=sizes,
       weights=st.sampled_from([(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (2.0, 3.0, 0.5, 7.0)]))
def test_property_decode_inverts_encode(a_xy, a_wh, g_xy, g_wh, weights):
    anchors = np.concatenate([a_xy, a_xy + a_wh], axis=1)
    gt = np.concatenate([g_xy, g_xy + g_wh], axis=1)
    coder = BoxCoder(weights)
    deltas = coder.encode(gt, anchors)
    ok = np.all(deltas[:, 2:] / np.array(weights[2:]) <= BBOX_XFORM_CLIP, axis=1)  # beyond the clamp: no inverse
    np.testing.assert_allclose(coder.decode(deltas, anchors)[ok], gt[ok], rtol=1e-9, atol=1e-9)


@settings(max_examples=50, deadline=None)
@given(deltas=hnp.arrays(np.float64, (4, 4), elements=st.floats(-3, 3)), a_xy=corners, a_wh=sizes)
def test_property_encode_inverts_decode(deltas, a_xy, a_wh):
    anchors = np.concatenate([a_xy, a_xy + a_wh], axis=1)[:4]
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(coder.encode(coder.decode(deltas, anchors), anchors), deltas, atol=1e-9)


def test_matches_torchvision_when_available():
    torch = pytest.importorskip("torch")
    from torchvision.models.detection._utils import BoxCoder as TVBoxCoder

    rng = np.random.default_rng(3)
    anchors, gt = _boxes(rng, 500).astype(np.float32), _boxes(rng, 500).astype(np.float32)
    deltas = rng.normal(0, 2, (500, 8)).astype(np.float32)
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        ours, theirs = BoxCoder(w), TVBoxCoder(w)
        # NumPy's and PyTorch's float32 exp/log may differ in the last bit, hence the tolerance
        np.testing.assert_allclose(ours.encode(gt, anchors),
                                   theirs.encode_single(torch.from_numpy(gt), torch.from_numpy(anchors)).numpy(),
                                   rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(ours.decode(deltas, anchors),
                                   theirs.decode_single(torch.from_numpy(deltas), torch.from_numpy(anchors)).numpy(),
                                   rtol=1e-6, atol=1e-4)
