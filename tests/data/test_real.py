"""The real nuclei tiles (needs the optional 'stardist' package for its two sample files)."""
import numpy as np
import pytest

from minirc.data import real

pytestmark = pytest.mark.skipif(not real.available(), reason="stardist's sample files are not installed "
                                "(pip install --no-deps stardist)")


def test_full_image_and_labels():
    image, labels = real.load_nuclei()
    assert image.shape == labels.shape == (512, 512) and image.dtype == np.float32
    assert 0 <= image.min() and image.max() <= 1
    assert len(np.unique(labels[labels > 0])) == 125


def test_tiles_follow_the_dataset_api():
    train, val = real.NucleiTiles("train"), real.NucleiTiles("val")
    assert (len(train), len(val)) == (12, 4) and train.num_classes == 2
    assert train.class_names == ("__background__", "nucleus")
    ids = {train[i][1]["image_id"] for i in range(len(train))} | {val[i][1]["image_id"] for i in range(len(val))}
    assert len(ids) == 16                                           # train and val never share a tile
    image, t = val[0]
    assert image.shape == (3, 128, 128) and image.dtype == np.float32
    m = len(t["boxes"])
    assert m > 0 and t["masks"].shape == (m, 128, 128) and t["labels"].tolist() == [1] * m
    np.testing.assert_array_equal(t["area"], t["masks"].reshape(m, -1).sum(1))
    assert t["area"].min() >= 20
    k = int(np.argmax(t["area"]))
    rows, cols = np.nonzero(t["masks"][k])
    np.testing.assert_array_equal(t["boxes"][k], [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])


def test_instances_from_labels_by_hand():
    labels = np.array([[0, 3, 3], [7, 0, 3], [7, 0, 0]])
    masks, boxes, area = real.instances_from_labels(labels, min_area=2)
    assert masks.shape == (2, 3, 3) and area.tolist() == [3, 2]
    np.testing.assert_array_equal(boxes, [[1, 0, 3, 2], [0, 1, 1, 3]])


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        real.NucleiTiles("test")
    with pytest.raises(ValueError, match="tile_size"):
        real.NucleiTiles(tile_size=8)


def test_missing_package_message(monkeypatch):
    monkeypatch.setattr(real.importlib.util, "find_spec", lambda name: None)
    assert not real.available()
    with pytest.raises(ImportError, match="pip install"):
        real.NucleiTiles()
