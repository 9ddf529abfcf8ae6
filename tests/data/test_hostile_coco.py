"""COCO data values: polygons of fewer than 3 points are dropped with a warning (detectron2's rule),
and a polygon's rasterisation is sized in Python before anything is allocated."""
import json

import numpy as np
import pytest
from PIL import Image

from minirc.data.coco import COCODataset
from minirc.evaluation.polygon import MAX_POINTS, polygon_to_counts


def _dataset(tmp_path, segmentations):
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(tmp_path / "a.png")
    coco = {"images": [{"id": 1, "height": 12, "width": 16, "file_name": "a.png"}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 6, 6], "area": 36.0,
                             "iscrowd": 0, "segmentation": s} for k, s in enumerate(segmentations)]}
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    return COCODataset(tmp_path / "instances.json", tmp_path)


def test_polygons_of_fewer_than_3_points_are_dropped(tmp_path):
    square = [1, 1, 7, 1, 7, 7, 1, 7]
    ds = _dataset(tmp_path, [[square, [2, 2, 3, 3]], [[1, 1, 7, 7]], [[5, 5]], [square]])
    with pytest.warns(UserWarning) as caught:
        t = ds.target(1)
    messages = [str(w.message) for w in caught]
    assert any("annotation id 1" in m and "dropped 1 polygon(s) of fewer than 3 points; 1 remain" in m
               for m in messages)
    assert any("annotation id 2" in m and "the annotation is left out" in m for m in messages)
    assert any("annotation id 3" in m for m in messages)
    assert len(t["boxes"]) == 2 and t["masks"].shape == (2, 12, 16)
    assert t["masks"][0].sum() == 36 and t["masks"][1].sum() == 36  # no empty mask is trained on


def test_polygon_walk_is_sized_before_it_is_allocated():
    with pytest.raises(ValueError, match=r"polygon: expected coordinates within"):
        polygon_to_counts([0, 0, 1e300, 0, 1e300, 1e300], 10, 10)
    with pytest.raises(ValueError, match=rf"polygon: its boundary walk .* the limit is {MAX_POINTS}"):
        polygon_to_counts([0, 0, 4e8, 0, 4e8, 4e8], 10, 10)
    far = polygon_to_counts([-1000, -1000, 1000, -1000, 1000, 1000, -1000, 1000], 10, 10)
    assert far.tolist() == [0, 100]  # a polygon far beyond the image still rasterises: all inside
