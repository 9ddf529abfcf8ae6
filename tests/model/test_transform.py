"""GeneralizedRCNNTransform: sizes (docs/semantics.md case T9), normalisation, padding, target resizing, postprocess."""
import numpy as np
import pytest

import minirc.random
from minirc.model.transform import (GeneralizedRCNNTransform, batch_images, interpolate_bilinear, padded_size,
                                    resize_boxes, resized_size)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("size, resized, padded", [
    ((480, 640), (800, 1066), (800, 1088)),
    ((334, 500), (799, 1197), (800, 1216)),  # floor in double: 799, not 800
    ((1000, 3000), (444, 1333), (448, 1344)),  # the max_size cap wins
    ((97, 97), (799, 799), (800, 800)),
    ((427, 640), (800, 1199), (800, 1216)),
    ((500, 375), (1066, 800), (1088, 800)),
])
def test_t9_sizes(size, resized, padded):
    h, w, _ = resized_size(*size, 800, 1333)
    assert (h, w) == resized
    assert padded_size([(h, w)], 32) == padded


def _transform(min_size=(800,), max_size=1333):
    t = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD, 32)
    t.eval()
    return t


def test_eval_forward_normalises_resizes_and_pads():
    rng = np.random.default_rng(0)
    img = rng.random((3, 49, 60)).astype(np.float32)
    batch, targets = _transform(min_size=(64,), max_size=200)([img])
    assert targets is None
    assert batch.image_sizes == [(63, 78)]  # 49 * (64 / 49) = 63.99.. in double -> 63
    assert batch.tensors.shape == (1, 3, 64, 96) and batch.tensors.dtype == np.float32
    normalised = (img - np.float32(MEAN)[:, None, None]) / np.float32(STD)[:, None, None]
    np.testing.assert_allclose(batch.tensors[0, :, :63, :78], interpolate_bilinear(normalised, (63, 78)), rtol=1e-6)
    assert not batch.tensors[0, :, 63:].any() and not batch.tensors[0, :, :, 78:].any()  # zeros after normalising


def test_batch_of_different_sizes_pads_to_the_largest():
    imgs = [np.zeros((3, 10, 20), np.float32), np.ones((3, 25, 7), np.float32)]
    out = batch_images(imgs, 32)
    assert out.shape == (2, 3, 32, 32)
    assert out[1, :, :25, :7].min() == 1 and out[1, :, 25:].max() == 0 and out[1, :, :, 7:].max() == 0


def test_targets_are_resized():
    t = _transform(min_size=(64,), max_size=200)
    t.train()
    img = np.zeros((3, 32, 48), np.float32)
    masks = np.zeros((2, 32, 48), np.uint8)
    masks[0, 4:10, 6:12] = 1
    masks[1, 20:, 40:] = 1
    target = {"boxes": np.array([[6, 4, 12, 10], [40, 20, 48, 32]], np.float32), "masks": masks,
              "labels": np.array([1, 2])}
    batch, (out,) = t([img], [target])
    assert batch.image_sizes == [(64, 96)]
    np.testing.assert_array_equal(out["boxes"], target["boxes"] * 2)
    assert out["masks"].shape == (2, 64, 96) and out["masks"].dtype == np.uint8
    np.testing.assert_array_equal(out["masks"], masks.repeat(2, axis=1).repeat(2, axis=2))  # exact 2x nearest
    assert out["labels"] is target["labels"]  # other fields pass through
    assert target["boxes"][0, 0] == 6  # the input dict is not modified


def test_resize_boxes_uses_float32_ratios():
    b = resize_boxes(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32), (3, 7), (5, 11))
    ratio_h, ratio_w = np.float32(5) / np.float32(3), np.float32(11) / np.float32(7)
    np.testing.assert_array_equal(b, np.array([[1 * ratio_w, 2 * ratio_h, 3 * ratio_w, 4 * ratio_h]], np.float32))


def test_training_picks_min_size_from_the_seeded_generator():
    t = GeneralizedRCNNTransform((32, 48, 64), 1000, MEAN, STD, 32)
    t.train()
    img = np.zeros((3, 16, 16), np.float32)
    minirc.random.manual_seed(5)
    first = [t([img])[0].image_sizes[0] for _ in range(6)]
    minirc.random.manual_seed(5)
    assert [t([img])[0].image_sizes[0] for _ in range(6)] == first
    assert set(first) <= {(32, 32), (48, 48), (64, 64)}
    t.eval()
    assert t([img])[0].image_sizes == [(64, 64)]  # eval: the last min_size


def test_postprocess_maps_back_to_the_original_size():
    t = _transform()
    det = {"boxes": np.array([[10, 20, 30, 40]], np.float32), "labels": np.array([1]),
           "scores": np.array([0.9], np.float32), "masks": np.ones((1, 28, 28), np.float32)}
    (out,) = t.postprocess([det], [(100, 200)], [(50, 100)])
    np.testing.assert_allclose(out["boxes"], [[5, 10, 15, 20]])
    assert out["masks"].shape == (1, 50, 100) and out["masks"].dtype == np.float32
    assert out["masks"][0, 12:18, 7:13].min() == 1 and out["masks"][0, 30:].max() == 0


def test_bad_images():
    t = _transform()
    with pytest.raises(TypeError, match=r"images\[1\]"):
        t([np.zeros((3, 4, 4), np.float32), np.zeros((3, 4, 4), np.uint8)])
    with pytest.raises(TypeError, match=r"images\[0\].*\(3, H, W\)"):
        t([np.zeros((4, 4, 3), np.float32)])


def test_against_torchvision():
    torch = pytest.importorskip("torch")
    tv = pytest.importorskip("torchvision.models.detection.transform")
    ref = tv.GeneralizedRCNNTransform(96, 160, list(MEAN), list(STD))
    ref.eval()
    img = np.random.default_rng(0).random((3, 41, 67)).astype(np.float32)
    expected = ref([torch.from_numpy(img)])[0]
    got, _ = _transform((96,), 160)([img])
    assert got.image_sizes == [tuple(s) for s in expected.image_sizes]
    np.testing.assert_allclose(got.tensors, expected.tensors.numpy(), atol=1e-6)
