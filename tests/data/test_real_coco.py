"""`minirc data nuclei`: the stardist nuclei tiles as COCO JSON + PNG, read back by COCODataset."""
import numpy as np
import pytest

from minirc.cli import main
from minirc.data import COCODataset
from minirc.data.real import NucleiTiles, available

pytestmark = pytest.mark.skipif(not available(), reason="the nuclei sample ships with stardist (not installed)")


def test_written_files_read_back_as_the_tiles(tmp_path, capsys):
    assert main(["data", "nuclei", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "train: 12 images, 121 nuclei" in out and "val: 4 images, 32 nuclei" in out
    for split in ("train", "val"):
        tiles = NucleiTiles(split)
        ds = COCODataset(tmp_path / f"{split}.json", tmp_path / "images")
        assert ds.class_names == ("__background__", "nucleus") and ds.label_to_category_id == {1: 1}
        assert len(ds) == len(tiles)
        for i in (0, len(ds) - 1):
            (image, target), (want_image, want) = ds[i], tiles[i]
            assert ds.image_info(target["image_id"])["file_name"] == f"nuclei_{want['image_id']:02d}.png"
            assert np.abs(image - want_image).max() <= 0.5 / 255 + 1e-6    # 8-bit PNG
            np.testing.assert_array_equal(target["masks"], want["masks"])
            np.testing.assert_array_equal(target["boxes"], want["boxes"])
            np.testing.assert_array_equal(target["area"], want["area"])


def test_bad_tile_size_is_an_error(tmp_path):
    assert main(["data", "nuclei", "--out", str(tmp_path), "--tile-size", "600"]) == 2
