"""COCODataset: images + polygon / RLE / crowd annotations from COCO JSON, with clear errors."""
import copy
import json

import numpy as np
import pytest
from PIL import Image

from minirc.data.coco import COCODataset
from minirc.evaluation import dataset_to_coco, mask_to_rle, run_coco_eval


def _write(tmp_path, coco):
    for info in coco["images"]:
        h, w = info.get("height", 10), info.get("width", 10)
        rgb = (np.arange(h * w * 3).reshape(h, w, 3) % 256).astype(np.uint8)
        Image.fromarray(rgb).save(tmp_path / info["file_name"])
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco))
    return path


def _coco():
    rle = np.zeros((12, 16), np.uint8)
    rle[6:10, 2:5] = 1
    crowd = np.zeros((12, 16), np.uint8)
    crowd[0:4, 10:16] = 1
    from minirc.evaluation import encode_counts
    return {
        "images": [{"id": 5, "height": 12, "width": 16, "file_name": "a.png"},
                   {"id": 9, "height": 10, "width": 10, "file_name": "b.png"}],
        "categories": [{"id": 8, "name": "dog"}, {"id": 3, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 5, "category_id": 8, "bbox": [0, 0, 4, 4], "area": 16.0, "iscrowd": 0,
             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4]]},
            {"id": 2, "image_id": 5, "category_id": 3, "bbox": [2, 6, 3, 4], "area": 12.0, "iscrowd": 0,
             "segmentation": mask_to_rle(rle)},
            {"id": 3, "image_id": 5, "category_id": 3, "bbox": [10, 0, 6, 4], "area": 24.0, "iscrowd": 1,
             "segmentation": {"size": [12, 16], "counts": [int(c) for c in encode_counts(crowd)]}},
            {"id": 4, "image_id": 5, "category_id": 8, "bbox": [20, 20, 5, 5], "area": 25.0, "iscrowd": 0,
             "segmentation": [[20, 20, 25, 20, 25, 25]]},         # outside the image: dropped
        ]}


def test_items_follow_the_dataset_api(tmp_path):
    ds = COCODataset(_write(tmp_path, _coco()), tmp_path)
    assert len(ds) == 2 and ds.num_classes == 3
    assert ds.class_names == ("__background__", "cat", "dog")     # sorted by category id: 3, 8
    assert ds.label_to_category_id == {1: 3, 2: 8}
    image, t = ds[0]
    assert image.shape == (3, 12, 16) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
    np.testing.assert_allclose(image[:, 0, 1] * 255, [3, 4, 5], atol=1e-4)   # RGB of pixel (0, 1)
    assert t["image_id"] == 5
    np.testing.assert_array_equal(t["boxes"], [[0, 0, 4, 4], [2, 6, 5, 10]])
    assert t["boxes"].dtype == np.float32 and t["labels"].tolist() == [2, 1] and t["labels"].dtype == np.int64
    assert t["masks"].shape == (2, 12, 16) and t["masks"].dtype == np.uint8
    assert t["masks"][0, :4, :4].all() and t["masks"][0].sum() == 16
    assert t["masks"][1, 6:10, 2:5].all() and t["masks"][1].sum() == 12
    assert t["iscrowd"].tolist() == [0, 0] and t["area"].tolist() == [16.0, 12.0]
    _, t = ds[1]
    assert t["boxes"].shape == (0, 4) and t["masks"].shape == (0, 10, 10)


def test_crowd_flag_and_empty_image_filter(tmp_path):
    path = _write(tmp_path, _coco())
    t = COCODataset(path, include_crowd=True).target(5)        # image_dir defaults to the JSON's folder
    assert t["iscrowd"].tolist() == [0, 0, 1] and t["masks"][2, 0:4, 10:16].all()
    ds = COCODataset(path, tmp_path, remove_images_without_annotations=True)
    assert ds.image_ids == [5]


def test_ground_truth_for_evaluation_keeps_crowds(tmp_path):
    ds = COCODataset(_write(tmp_path, _coco()), tmp_path)
    gt = dataset_to_coco(ds)
    assert len(gt["annotations"]) == 4 and any(a["iscrowd"] for a in gt["annotations"])
    res = [{"image_id": 5, "category_id": 8, "bbox": [0, 0, 4, 4], "score": 0.9},
           {"image_id": 5, "category_id": 3, "bbox": [2, 6, 3, 4], "score": 0.8},
           {"image_id": 5, "category_id": 3, "bbox": [11, 0, 4, 3], "score": 0.95}]   # inside the crowd
    ap50 = run_coco_eval(gt, res).per_class_ap(iou=0.5)
    assert ap50["cat"] == pytest.approx(1.0)       # the detection inside the crowd is not an FP
    assert ap50["dog"] == pytest.approx(51 / 101)  # dog 4 lies outside the image: still a miss


@pytest.mark.parametrize("mutate, error, match", [
    (lambda c: c["annotations"][0].pop("bbox"), ValueError, r"instances\.json: annotation id 1: missing field 'bbox'"),
    (lambda c: c["annotations"][1].update(area="big"), TypeError, r"annotation id 2: field 'area'"),
    (lambda c: c["annotations"][1].update(category_id=4), ValueError, r"annotation id 2: field 'category_id': 4"),
    (lambda c: c["images"][1].pop("height"), ValueError, r"image id 9: missing field 'height'"),
    (lambda c: c["annotations"][1].update(id=1), ValueError, r"annotation id 1: the annotation id appears twice"),
    (lambda c: c.pop("categories"), ValueError, r"instances\.json: expected a list under 'categories'"),
])
def test_malformed_files_name_file_annotation_and_field(tmp_path, mutate, error, match):
    coco = _coco()
    mutate(coco)
    with pytest.raises(error, match=match):
        COCODataset(_write(tmp_path, coco))


def test_errors_found_when_reading_an_item(tmp_path):
    coco = _coco()
    coco["annotations"][1]["segmentation"] = mask_to_rle(np.zeros((5, 5)))      # not the image's size
    ds = COCODataset(_write(tmp_path, coco))
    with pytest.raises(ValueError, match=r"annotation id 2: field 'segmentation'.*\[5, 5\] differs"):
        ds[0]
    coco = copy.deepcopy(_coco())
    path = _write(tmp_path, coco)
    coco["images"][0]["width"] = 17                                             # the file is 16 wide
    path.write_text(json.dumps(coco))
    with pytest.raises(ValueError, match=r"image id 5: the file .*a\.png"):
        COCODataset(path)[0]
    coco["images"][0]["file_name"] = "missing.png"
    path.write_text(json.dumps(coco))
    with pytest.raises(FileNotFoundError, match=r"image id 5: field 'file_name'"):
        COCODataset(path)[0]
    with pytest.raises(IndexError, match="index"):
        COCODataset(path)[2]


def test_read_image_converts_grey_rgba_and_16_bit(tmp_path):
    from minirc.data.coco import read_image
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    im = read_image(tmp_path / "g16.png")
    assert im.shape == (3, 3, 4) and im.dtype == np.float32
    np.testing.assert_allclose(im[1], grey16 / 65535, atol=1e-6)
    Image.fromarray(np.full((2, 2, 4), 255, np.uint8)).save(tmp_path / "rgba.png")
    assert read_image(tmp_path / "rgba.png").shape == (3, 2, 2)
    Image.fromarray(np.full((2, 5), 51, np.uint8)).save(tmp_path / "grey.png")
    np.testing.assert_allclose(read_image(tmp_path / "grey.png"), 0.2)
