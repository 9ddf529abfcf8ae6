import numpy as np
import pytest

from minirc.data import DataLoader, RandomHorizontalFlip, ShapesDataset, masks_to_boxes


class _Indices:
    """A data set whose item i is (i as an image, {"i": i}): shows which samples a batch holds."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full((1, 2, 2), i, np.float32), {"i": i}


def _ids(batch):
    return [t["i"] for t in batch[1]]


def test_epoch_covers_every_sample_once():
    loader = DataLoader(_Indices(10), batch_size=3, seed=1)
    assert len(loader) == 4
    seen = [i for batch in loader for i in _ids(batch)]
    assert sorted(seen) == list(range(10))
    assert len(DataLoader(_Indices(10), batch_size=3, drop_last=True)) == 3


def test_order_is_seeded_and_changes_per_epoch():
    a, b = DataLoader(_Indices(20), 4, seed=7), DataLoader(_Indices(20), 4, seed=7)
    first = [_ids(a.next_batch()) for _ in range(5)]
    assert first == [_ids(b.next_batch()) for _ in range(5)]
    second = [_ids(a.next_batch()) for _ in range(5)]  # epoch 1
    assert a.epoch == 1 and sorted(sum(second, [])) == list(range(20)) and second != first
    in_order = DataLoader(_Indices(5), 2, shuffle=False)
    assert [_ids(bt) for bt in in_order] == [[0, 1], [2, 3], [4]]


def test_iteration_resumes_the_epoch_then_starts_the_next():
    loader = DataLoader(_Indices(6), 2, shuffle=False)
    loader.next_batch()
    assert [_ids(bt) for bt in loader] == [[2, 3], [4, 5]]
    assert [_ids(bt) for bt in loader] == [[0, 1], [2, 3], [4, 5]] and loader.epoch == 1


def test_resume_gives_the_same_batches_and_flips():
    ds = ShapesDataset(9, image_size=32, seed=4)
    a = DataLoader(ds, 2, seed=3, transform=RandomHorizontalFlip(0.5))
    for _ in range(6):  # crosses into epoch 1
        a.next_batch()
    b = DataLoader(ds, 2, seed=3, transform=RandomHorizontalFlip(0.5))
    b.load_state_dict(a.state_dict())
    for _ in range(4):
        (ia, ta), (ib, tb) = a.next_batch(), b.next_batch()
        for x, y in zip(ia, ib):
            np.testing.assert_array_equal(x, y)
        for x, y in zip(ta, tb):
            np.testing.assert_array_equal(x["boxes"], y["boxes"])
            np.testing.assert_array_equal(x["masks"], y["masks"])
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(ds, 3, seed=3).load_state_dict(a.state_dict())


def test_flip_by_hand():
    image = np.arange(2 * 3 * 10, dtype=np.float32).reshape(2, 3, 10)
    masks = np.zeros((1, 3, 10), np.uint8)
    masks[0, 1:3, 2:5] = 1
    target = {"boxes": np.array([[2, 1, 5, 3]], np.float32), "masks": masks, "labels": np.array([1])}
    out_image, out = RandomHorizontalFlip(1.0)(image, target, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image[:, :, ::-1])
    np.testing.assert_array_equal(out["boxes"], [[5, 1, 8, 3]])  # x1' = 10 - 5, x2' = 10 - 2
    np.testing.assert_array_equal(out["masks"][0, 1, 5:8], 1)
    np.testing.assert_array_equal(target["boxes"], [[2, 1, 5, 3]])  # the input is untouched
    same_image, same = RandomHorizontalFlip(0.0)(image, target, np.random.default_rng(0))
    assert same_image is image and same is target


def test_flipped_boxes_stay_tight():
    ds = ShapesDataset(5, image_size=(30, 41), seed=2, empty_fraction=0.0)
    flip = RandomHorizontalFlip(1.0)
    for i in range(5):
        image, target = ds[i]
        _, out = flip(image, target, np.random.default_rng(0))
        np.testing.assert_array_equal(out["boxes"], masks_to_boxes(out["masks"]))
        twice = flip(*flip(image, target, np.random.default_rng(0)), np.random.default_rng(0))
        np.testing.assert_array_equal(twice[0], image)


def test_empty_targets_flip():
    image = np.zeros((3, 4, 5), np.float32)
    target = {"boxes": np.zeros((0, 4), np.float32), "masks": np.zeros((0, 4, 5), np.uint8)}
    _, out = RandomHorizontalFlip(1.0)(image, target, np.random.default_rng(0))
    assert out["boxes"].shape == (0, 4) and out["masks"].shape == (0, 4, 5)


def test_clear_errors():
    with pytest.raises(TypeError, match="dataset"):
        DataLoader([1, 2, 3][0], 2)
    with pytest.raises(ValueError, match="batch_size"):
        DataLoader(_Indices(4), 0)
    with pytest.raises(ValueError, match="dataset"):
        DataLoader(_Indices(1), 2, drop_last=True)
    with pytest.raises(TypeError, match="transform"):
        DataLoader(_Indices(4), 2, transform="flip")
    with pytest.raises(ValueError, match="p"):
        RandomHorizontalFlip(2.0)
