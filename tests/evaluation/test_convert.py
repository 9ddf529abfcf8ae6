"""Data sets and predictions -> COCO JSON, then scored by evaluate_coco."""
import json

import numpy as np
import pytest

from minirc.evaluation import dataset_to_coco, evaluate_coco, predictions_to_coco_results, save_json


class TinyDataset:
    """Two 20x30 images with rectangles; labels 1..2; class 2 has COCO id 17."""
    class_names = ("__background__", "a", "b")
    num_classes = 3
    label_to_category_id = {1: 4, 2: 17}

    def __len__(self):
        return 2

    def __getitem__(self, i):
        boxes = np.array([[2, 3, 12, 9], [15, 5, 28, 19]], np.float32)[: i + 1]
        masks = np.zeros((len(boxes), 20, 30), np.uint8)
        for m, (x1, y1, x2, y2) in zip(masks, boxes.astype(int)):
            m[y1:y2, x1:x2] = 1
        target = {"boxes": boxes, "labels": np.array([1, 2])[: i + 1], "masks": masks,
                  "image_id": 10 + i, "iscrowd": np.zeros(i + 1, np.uint8)}
        return np.zeros((3, 20, 30), np.float32), target


def _perfect_predictions(ds):
    preds = []
    for i in range(len(ds)):
        _, t = ds[i]
        soft = t["masks"][:, None].astype(np.float32) * 0.9    # (D, 1, H, W) probabilities
        preds.append({"boxes": t["boxes"], "labels": t["labels"], "scores": np.linspace(1, 0.5, len(t["boxes"])),
                      "masks": soft})
    return preds


def test_dataset_to_coco():
    gt = dataset_to_coco(TinyDataset())
    assert [c["id"] for c in gt["categories"]] == [4, 17] and gt["categories"][1]["name"] == "b"
    assert [i["id"] for i in gt["images"]] == [10, 11] and gt["images"][0]["height"] == 20
    a = gt["annotations"][0]
    assert a["bbox"] == [2.0, 3.0, 10.0, 6.0] and a["area"] == 60.0 and a["category_id"] == 4
    assert a["id"] == 1 and a["segmentation"]["size"] == [20, 30]
    assert len(gt["annotations"]) == 3


def test_round_trip_scores_perfect_predictions(tmp_path):
    ds = TinyDataset()
    gt = dataset_to_coco(ds)
    preds = _perfect_predictions(ds)
    both = predictions_to_coco_results(preds, [10, 11], ds.label_to_category_id)   # bbox + segmentation
    assert {"bbox", "segmentation"} <= set(both[0])
    for iou_type in ("bbox", "segm"):
        assert evaluate_coco(gt, both, iou_type)["AP"] == pytest.approx(1.0)
        res = predictions_to_coco_results(preds, [10, 11], ds.label_to_category_id, iou_type=iou_type)
        assert len(res) == 3 and ("bbox" in res[0]) == (iou_type == "bbox")
        assert ("segmentation" in res[0]) == (iou_type == "segm")
        path = save_json(res, tmp_path / "out" / f"{iou_type}.json")
        assert json.load(open(path)) == res
        assert evaluate_coco(gt, path, iou_type)["AP"] == pytest.approx(1.0)


def test_predictions_conversion_details_and_errors():
    pred = {"boxes": np.array([[1.5, 2, 4, 8]]), "labels": np.array([2]), "scores": np.array([0.25]),
            "masks": np.array([[[0.2, 0.6], [0.5, 0.51]]])}
    res = predictions_to_coco_results([pred], [3], [0, 7, 9], iou_type="bbox")
    assert res == [{"image_id": 3, "category_id": 9, "score": 0.25, "bbox": [1.5, 2.0, 2.5, 6.0]}]
    seg = predictions_to_coco_results([pred], [3], None, iou_type="segm")[0]
    from minirc.evaluation import rle_to_mask
    np.testing.assert_array_equal(rle_to_mask(seg["segmentation"]), [[0, 1], [0, 1]])   # > 0.5
    assert predictions_to_coco_results([{"boxes": np.zeros((0, 4)), "labels": [], "scores": []}], [1]) == []
    with pytest.raises(ValueError, match="label_to_category_id: no category id for label 2"):
        predictions_to_coco_results([pred], [3], {1: 5})
    with pytest.raises(ValueError, match="image_ids"):
        predictions_to_coco_results([pred], [3, 4])
    with pytest.raises(ValueError, match=r"predictions\[0\]: missing key 'masks'"):
        predictions_to_coco_results([{k: v for k, v in pred.items() if k != "masks"}], [3], iou_type="segm")
    with pytest.raises(ValueError, match=r"predictions\[0\]"):
        predictions_to_coco_results([dict(pred, masks=np.zeros((2, 2, 2)))], [3], iou_type="segm")


def test_shapes_dataset_round_trip():
    shapes = pytest.importorskip("minirc.data.shapes")
    ds = shapes.ShapesDataset(num_images=3, image_size=64, seed=1)
    gt = dataset_to_coco(ds)
    preds = _perfect_predictions(ds)
    ids = [ds[i][1]["image_id"] for i in range(len(ds))]
    for iou_type in ("bbox", "segm"):
        res = predictions_to_coco_results(preds, ids, iou_type=iou_type)
        if res:
            assert evaluate_coco(gt, res, iou_type)["AR100"] == 1.0
