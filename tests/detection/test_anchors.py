import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirc.detection import AnchorGenerator

FPN_GRIDS_800x1088 = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]


def test_default_cell_anchors_are_torchvisions_rounded_values():
    # docs/semantics.md section 9 [verified with torchvision 0.29.1]
    expected = {
        32: [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]],
        64: [[-45, -23, 45, 23], [-32, -32, 32, 32], [-23, -45, 23, 45]],
        128: [[-91, -45, 91, 45], [-64, -64, 64, 64], [-45, -91, 45, 91]],
        256: [[-181, -91, 181, 91], [-128, -128, 128, 128], [-91, -181, 91, 181]],
        512: [[-362, -181, 362, 181], [-256, -256, 256, 256], [-181, -362, 181, 362]],
    }
    gen = AnchorGenerator()
    assert gen.num_anchors_per_location() == [3] * 5
    for (size,), cell in zip(gen.sizes, gen.cell_anchors):
        assert cell.dtype == np.float32
        np.testing.assert_array_equal(cell, expected[size])


def test_torchvision_15x15_image_3x3_map():
    # torchvision test_models_detection_anchor_utils.py (docs/semantics.md case T8)
    gen = AnchorGenerator(sizes=((10,),), aspect_ratios=((1.0,),))
    (anchors,) = gen((15, 15), [(3, 3)])
    np.testing.assert_array_equal(anchors, [
        [-5, -5, 5, 5], [0, -5, 10, 5], [5, -5, 15, 5], [-5, 0, 5, 10], [0, 0, 10, 10],
        [5, 0, 15, 10], [-5, 5, 5, 15], [0, 5, 10, 15], [5, 5, 15, 15]])


def test_fpn_800x1088_count_first_anchors_and_pool_stride():
    gen = AnchorGenerator()
    levels = gen((800, 1088), FPN_GRIDS_800x1088)
    assert [len(a) for a in levels] == [3 * h * w for h, w in FPN_GRIDS_800x1088]
    assert sum(len(a) for a in levels) == 217413
    np.testing.assert_array_equal(levels[0][:4], [[-23, -11, 23, 11], [-16, -16, 16, 16],
                                                  [-11, -23, 11, 23], [-19, -11, 27, 11]])
    # the 'pool' level: 800 // 13 = 61 (not 64), 1088 // 17 = 64
    assert gen.strides((800, 1088), FPN_GRIDS_800x1088) == [(4, 4), (8, 8), (16, 16), (32, 32), (61, 64)]
    last = levels[4][-3:]  # location (12, 16): centre (16 * 64, 12 * 61) = (1024, 732)
    np.testing.assert_array_equal((last[:, :2] + last[:, 2:]) / 2, [[1024, 732]] * 3)


def test_detectron2_default_generator_case_in_torchvision_order():
    # docs/semantics.md case T8: detectron2 sizes [32, 64], ratios [0.25, 1, 4], stride 4, 1x2 grid, offset 0.0.
    # detectron2 lists a cell size-major, torchvision (and minirc) ratio-major: same boxes, permuted.
    d2_cell = np.array([[-32, -8, 32, 8], [-16, -16, 16, 16], [-8, -32, 8, 32],
                        [-64, -16, 64, 16], [-32, -32, 32, 32], [-16, -64, 16, 64]], np.float32)
    ratio_major = [0, 3, 1, 4, 2, 5]
    gen = AnchorGenerator(sizes=((32, 64),), aspect_ratios=((0.25, 1.0, 4.0),))
    (anchors,) = gen((4, 8), [(1, 2)])
    np.testing.assert_array_equal(anchors[:6], d2_cell[ratio_major])
    np.testing.assert_array_equal(anchors[6:], d2_cell[ratio_major] + [4, 0, 4, 0])
    assert anchors[6:][ratio_major.index(0)].tolist() == [-28, -8, 36, 8]


def test_rounding_is_half_to_even():
    # size 5: half-extent 2.5 rounds to 2 (half-even, torch.round), not 3 (half away from zero)
    np.testing.assert_array_equal(AnchorGenerator(((5,),), ((1.0,),)).cell_anchors[0], [[-2, -2, 2, 2]])
    np.testing.assert_array_equal(AnchorGenerator(((3,),), ((1.0,),)).cell_anchors[0], [[-2, -2, 2, 2]])
    # rounding makes areas inexact: size 32, ratio 0.5 is 46 x 22 = 1012, not 1024
    cell = AnchorGenerator().cell_anchors[0][0]
    assert (cell[2] - cell[0], cell[3] - cell[1]) == (46, 22)


def test_flat_arguments_and_dtype():
    gen = AnchorGenerator(sizes=(16, 32), aspect_ratios=(1.0, 2.0))
    assert gen.sizes == ((16,), (32,)) and gen.aspect_ratios == ((1.0, 2.0), (1.0, 2.0))
    a32, a64 = gen((16, 16), [(2, 2), (1, 1)], dtype=np.float64)
    assert a32.shape == (8, 4) and a64.shape == (2, 4) and a32.dtype == np.float64


def test_feature_map_smaller_than_an_anchor():
    # a 1x1 grid on a 20x20 image: one location at (0, 0), anchors far outside the image are fine
    (a,) = AnchorGenerator(((512,),), ((0.5, 1.0, 2.0),))((20, 20), [(1, 1)])
    np.testing.assert_array_equal(a, AnchorGenerator(((512,),), ((0.5, 1.0, 2.0),)).cell_anchors[0])


def test_clear_errors():
    gen = AnchorGenerator()
    with pytest.raises(ValueError, match="feature_sizes"):
        gen((800, 800), [(200, 200)])
    with pytest.raises(ValueError, match="feature_sizes"):
        gen((32, 32), [(0, 8)] * 5)
    with pytest.raises(TypeError, match="image_size"):
        gen("800x800", [(1, 1)] * 5)
    with pytest.raises(ValueError, match="sizes"):
        AnchorGenerator(sizes=((0,),), aspect_ratios=((1.0,),))
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=((1.0,), (1.0,), (1.0,)))


@settings(max_examples=60, deadline=None)
@given(grid=st.tuples(st.integers(1, 9), st.integers(1, 9)), mult=st.tuples(st.integers(1, 20), st.integers(1, 20)),
       extra=st.tuples(st.integers(0, 30), st.integers(0, 30)),
       sizes=st.lists(st.integers(2, 300), min_size=1, max_size=3),
       ratios=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0]), min_size=1, max_size=3))
def test_property_anchors_centred_on_the_stride_grid(grid, mult, extra, sizes, ratios):
    image = (grid[0] * mult[0] + extra[0], grid[1] * mult[1] + extra[1])
    gen = AnchorGenerator(sizes=(tuple(sizes),), aspect_ratios=(tuple(ratios),))
    (anchors,) = gen(image, [grid])
    (stride_h, stride_w), = gen.strides(image, [grid])
    assert (stride_h, stride_w) == (image[0] // grid[0], image[1] // grid[1])
    a = len(sizes) * len(ratios)
    per_loc = anchors.reshape(grid[0], grid[1], a, 4)  # location-major: (y * W + x) * A + a
    ys, xs = np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij")
    centres_x = (per_loc[..., 0] + per_loc[..., 2]) / 2
    centres_y = (per_loc[..., 1] + per_loc[..., 3]) / 2
    np.testing.assert_array_equal(centres_x, np.broadcast_to((xs * stride_w)[..., None], centres_x.shape))
    np.testing.assert_array_equal(centres_y, np.broadcast_to((ys * stride_h)[..., None], centres_y.shape))
    # every location carries the same cell shapes, and every half-extent is a whole pixel
    shifts = np.stack([xs * stride_w, ys * stride_h, xs * stride_w, ys * stride_h], -1)  # (H, W, 4)
    np.testing.assert_array_equal(per_loc - gen.cell_anchors[0], np.broadcast_to(shifts[:, :, None], per_loc.shape))
    assert np.all(gen.cell_anchors[0] == np.round(gen.cell_anchors[0]))


def test_matches_torchvision_when_available(rng):
    torch = pytest.importorskip("torch")
    from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    sizes, ratios = ((24, 45), (70,)), ((0.3, 1.0, 1.7), (0.5, 2.0))
    grids = [(7, 9), (3, 5)]
    ours = np.concatenate(AnchorGenerator(sizes, ratios)((57, 70), grids))
    feats = [torch.zeros(1, 1, h, w) for h, w in grids]
    theirs = TVAnchorGenerator(sizes, ratios)(ImageList(torch.zeros(1, 3, 57, 70), [(57, 70)]), feats)[0]
    np.testing.assert_array_equal(ours, theirs.numpy())
