"""LevelMapper (FPN Eqn. 1, torchvision's float32 floor + eps) and MultiScaleRoIAlign (scale
inference and caching, rois order, pooler types, a fixed level, gradients into every level, empty inputs)."""
import importlib

import numpy as np
import pytest

from minirc import Tensor
from minirc.detection import poolers
from minirc.detection.poolers import LevelMapper, MultiScaleRoIAlign, infer_scale
from minirc.model.config import POOLER_TYPES
from minirc.nn import functional as F

ra = importlib.import_module("minirc.ops.roi_align")  # the module (minirc.ops.roi_align is the function)
SHAPES = [(32, 40), (16, 20), (8, 10), (4, 5)]  # P2..P5 of a 128 x 160 image


@pytest.mark.parametrize("w, h, level", [(224, 224, 2), (112, 112, 1), (111.9, 111.9, 0), (447.9, 448, 2),
                                         (448, 448, 3), (10, 10, 0), (2000, 2000, 3), (0, 5, 0)])
def test_level_mapper_golden_sides(w, h, level):
    # docs/semantics.md section 11 [verified against torchvision]; 224 -> P4 (index 2 when P2 is index 0)
    assert LevelMapper(2, 5)([np.array([[10, 20, 10 + w, 20 + h]], np.float32)]).tolist() == [level]


def test_level_mapper_eps_puts_exact_powers_on_the_upper_level():
    sides = np.array([56, 112, 224, 448], np.float32)
    boxes = np.stack([np.zeros(4), np.zeros(4), sides, sides], 1).astype(np.float32)
    assert LevelMapper(2, 5, eps=1e-6)(boxes).tolist() == [0, 1, 2, 3]
    # 4 float32 ulps below a power of two: eps = 1e-6, added after the log, still lifts the box to
    # the upper level (the boundary moves down by 112 * (1 - 2**-1e-6) ~ 8e-5 px at side 112);
    # without eps it falls one level down.
    below = boxes.copy()
    for _ in range(4):
        below[:, 2:] = np.nextafter(below[:, 2:], np.float32(0))
    assert LevelMapper(2, 5)(below).tolist() == [0, 1, 2, 3]
    assert LevelMapper(2, 5, eps=0.0)(below).tolist() == [0, 0, 1, 2]
    far_below = boxes * np.float32(0.9999)
    assert LevelMapper(2, 5)(far_below).tolist() == [0, 0, 1, 2]


@pytest.mark.parametrize("feat, image, scale", [(200, 800, 0.25), (100, 800, 0.125), (25, 800, 1 / 32),
                                                (26, 800, 1 / 32), (13, 400, 1 / 32), (334, 1333, 0.25)])
def test_infer_scale(feat, image, scale):
    assert infer_scale(feat, image) == scale


def _features(rng, n=2, c=3, requires_grad=False):
    return [Tensor(rng.standard_normal((n, c, h, w)).astype(np.float32), requires_grad=requires_grad)
            for h, w in SHAPES]


def _boxes(rng, n=2, k=9):
    out = []
    for _ in range(n):
        xy = rng.uniform(0, 100, (k, 2))
        side = np.exp(rng.uniform(np.log(3), np.log(300), (k, 1)))
        out.append(np.concatenate([xy, xy + side * rng.uniform(0.5, 1.5, (k, 2))], 1).astype(np.float32))
    return out


def _pool_one(pooler_type, f, rois, size, scale, sr):
    """What MultiScaleRoIAlign should call for each pooler type."""
    if pooler_type == "roi_pool":
        return F.roi_pool(f, rois, size, scale)
    if pooler_type == "roi_warp":
        return F.roi_warp(f, rois, size, scale, sr)
    if pooler_type == "roi_align_max":
        return F.roi_align_max(f, rois, size, scale, sr, aligned=False)
    return F.roi_align(f, rois, size, scale, sr, aligned=pooler_type == "roi_align_aligned")


@pytest.mark.parametrize("pooler_type", POOLER_TYPES)
def test_each_roi_is_pooled_from_its_level_in_box_order(rng, pooler_type):
    feats, boxes, sizes = _features(rng), _boxes(rng), [(128, 160), (120, 150)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 3, 2, pooler_type=pooler_type)
    out = pooler(feats, boxes, sizes)
    assert pooler.scales == [0.25, 0.125, 0.0625, 0.03125]
    levels = pooler.map_levels(boxes)
    assert len(set(levels.tolist())) >= 3  # the case exercises the reordering
    rois = np.concatenate([np.concatenate([np.full((len(b), 1), i, np.float32), b], 1) for i, b in enumerate(boxes)])
    for k, (roi, lvl) in enumerate(zip(rois, levels)):
        expected = _pool_one(pooler_type, feats[lvl], roi[None], 3, pooler.scales[lvl], 2)
        np.testing.assert_array_equal(out.numpy()[k], expected.numpy()[0])


def test_pooler_types_are_defined_once():
    assert poolers.POOLER_TYPES is POOLER_TYPES
    assert set(POOLER_TYPES) == {"roi_pool", "roi_warp", "roi_align", "roi_align_aligned", "roi_align_max"}


@pytest.mark.parametrize("level, index", [(4, 2), (5, 3), (2, 0)])
def test_fixed_level_pools_every_roi_from_one_map(rng, level, index):
    feats, boxes, sizes = _features(rng, requires_grad=True), _boxes(rng), [(128, 160), (120, 150)]
    pooler = MultiScaleRoIAlign(["0", "1", "2", "3"], 3, 2, pooler_type="roi_warp", level=level)
    out = pooler(feats, boxes, sizes)
    rois = np.concatenate([np.concatenate([np.full((len(b), 1), i, np.float32), b], 1) for i, b in enumerate(boxes)])
    expected = F.roi_warp(feats[index], rois, 3, 2.0 ** -level, 2)
    np.testing.assert_array_equal(out.numpy(), expected.numpy())
    out.sum().backward()
    assert all((f.grad is not None and f.grad.any()) == (i == index) for i, f in enumerate(feats))
    assert "level=" in repr(pooler)


def test_fixed_level_errors(rng):
    feats, boxes = _features(rng), _boxes(rng)
    with pytest.raises(ValueError, match=r"level: expected the level of one of the feature maps.*got 6"):
        MultiScaleRoIAlign(None, 2, 2, level=6)(feats, boxes, [(128, 160)] * 2)
    with pytest.raises(ValueError, match="level"):
        MultiScaleRoIAlign(None, 2, 2, level=0)
    with pytest.raises(TypeError, match="level"):
        MultiScaleRoIAlign(None, 2, 2, level=4.5)


def test_gradient_reaches_every_level(rng):
    feats, boxes, sizes = _features(rng, requires_grad=True), _boxes(rng, k=12), [(128, 160)] * 2
    pooler = MultiScaleRoIAlign(None, 2, 2)
    out = pooler(feats, boxes, sizes)
    g = rng.standard_normal(out.shape).astype(np.float32)
    out.backward(g)
    levels = pooler.map_levels(boxes)
    rois = np.concatenate([np.concatenate([np.full((len(b), 1), i, np.float32), b], 1) for i, b in enumerate(boxes)])
    for lvl, f in enumerate(feats):
        idx = np.flatnonzero(levels == lvl)
        expected = ra.roi_align_backward(g[idx], rois[idx], f.shape, pooler.scales[lvl], 2, False)
        if idx.size:
            np.testing.assert_allclose(f.grad, expected, rtol=1e-6, atol=1e-7)
        else:
            assert f.grad is None


def test_scales_are_cached_after_the_first_call(rng):
    feats, boxes = _features(rng), _boxes(rng)
    pooler = MultiScaleRoIAlign(None, 2, 2)
    pooler(feats, boxes, [(128, 160), (100, 100)])
    pooler(feats, boxes, [(64, 80), (64, 80)])  # torchvision keeps the first batch's scales
    assert pooler.scales == [0.25, 0.125, 0.0625, 0.03125]
    pooler.scales = None
    pooler(feats, boxes, [(64, 80), (64, 80)])
    assert pooler.scales == [0.5, 0.25, 0.125, 0.0625]


def test_empty_boxes_and_single_level(rng):
    feats = _features(rng, requires_grad=True)
    pooler = MultiScaleRoIAlign(None, 7, 2)
    out = pooler(feats, [np.zeros((0, 4), np.float32)] * 2, [(128, 160)] * 2)
    assert out.shape == (0, 3, 7, 7)
    single = MultiScaleRoIAlign(None, 2, 2)
    boxes = _boxes(rng)
    out = single(feats[:1], boxes, [(128, 160)] * 2)
    np.testing.assert_array_equal(out.numpy(), F.roi_align(feats[0], boxes, 2, 0.25, 2).numpy())


def test_inverted_boxes_get_no_level_and_zero_features(rng):
    feats = _features(rng, requires_grad=True)
    boxes = [np.array([[10, 10, 50, 50], [50, 10, 10, 50], [3, 3, 3, 9]], np.float32), np.zeros((0, 4), np.float32)]
    pooler = MultiScaleRoIAlign(None, 2, 2)
    assert pooler.map_levels is None
    out = pooler(feats, boxes, [(128, 160)] * 2)
    assert pooler.map_levels(boxes).tolist() == [0, -1, 0]  # x2 < x1: no level; zero area: finest
    assert not out.numpy()[1].any() and out.numpy()[0].any()
    out.sum().backward()  # the zero rows are constants: the gradient still reaches the used level
    assert feats[0].grad is not None


def test_dict_features_and_errors(rng):
    feats, boxes = _features(rng), _boxes(rng)
    named = {"0": feats[0], "1": feats[1], "2": feats[2], "3": feats[3], "pool": feats[3]}
    a = MultiScaleRoIAlign(["0", "1", "2", "3"], 2, 2)(named, boxes, [(128, 160)] * 2)
    b = MultiScaleRoIAlign(None, 2, 2)(feats, boxes, [(128, 160)] * 2)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="pooler_type"):
        MultiScaleRoIAlign(None, 2, 2, pooler_type="roi_warp_max")
    with pytest.raises(ValueError, match="boxes, image_sizes"):
        MultiScaleRoIAlign(None, 2, 2)(feats, boxes[:1], [(128, 160)])
    with pytest.raises(ValueError, match="features"):
        MultiScaleRoIAlign(["0", "9"], 2, 2)(named, boxes, [(128, 160)] * 2)


def test_matches_torchvision(rng):
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision")
    feats, boxes, sizes = _features(rng), _boxes(rng, k=20), [(128, 160), (120, 150)]
    boxes[0][3] = boxes[0][3, [2, 1, 0, 3]]  # an inverted box: torchvision pools it to zeros
    ref = tv.ops.MultiScaleRoIAlign(["0", "1", "2", "3"], 5, 2)(
        {str(i): torch.tensor(f.numpy()) for i, f in enumerate(feats)}, [torch.tensor(b) for b in boxes], sizes)
    np.testing.assert_array_equal(MultiScaleRoIAlign(["0", "1", "2", "3"], 5, 2)(feats, boxes, sizes).numpy(),
                                  ref.numpy())
