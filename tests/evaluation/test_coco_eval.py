"""evaluate_coco: hand-computed AP on tiny cases, crowds, empty categories, errors, pycocotools parity."""
import contextlib
import copy
import io
import json

import numpy as np
import pytest

from minirc.evaluation import STAT_KEYS, evaluate_coco, run_coco_eval
from minirc.evaluation.rle import mask_to_rle

from _random_coco import random_coco


def _gt(anns, categories=({"id": 1, "name": "thing"},), size=(200, 200)):
    full = []
    for i, a in enumerate(anns):
        x, y, w, h = a["bbox"]
        full.append(dict({"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": w * h,
                          "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}, **a))
    return {"images": [{"id": 1, "height": size[0], "width": size[1], "file_name": "a.png"}],
            "annotations": full, "categories": list(categories)}


def _det(box, score, cat=1):
    return {"image_id": 1, "category_id": cat, "bbox": box, "score": score}


def test_one_image_hand_computed():
    gt = _gt([{"bbox": [0, 0, 10, 10]}, {"bbox": [20, 20, 10, 10]}])
    res = [_det([0, 0, 10, 10], 0.9),       # TP at every threshold (IoU 1)
           _det([50, 50, 10, 10], 0.8),     # FP
           _det([20, 20, 10, 5], 0.7)]      # IoU 0.5 with gt 2: TP at t = 0.50 only
    s = evaluate_coco(gt, res)
    # t = 0.50: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> (51 * 1 + 50 * 2/3) / 101
    ap50 = (51 + 50 * 2 / 3) / 101
    # t >= 0.55: recall stops at 1/2 -> 51 recall points at precision 1, 50 at 0
    ap_hi = 51 / 101
    assert s["AP50"] == pytest.approx(ap50, abs=1e-12)
    assert s["AP75"] == pytest.approx(ap_hi, abs=1e-12)
    assert s["AP"] == pytest.approx((ap50 + 9 * ap_hi) / 10, abs=1e-12)
    assert s["AR100"] == pytest.approx((1 + 9 * 0.5) / 10)
    assert s["AR10"] == s["AR100"]
    assert s["AR1"] == pytest.approx(0.5)                 # one detection per image: the best one
    assert s["APs"] == s["AP"] and s["ARs"] == s["AR100"] # every object has area < 32^2
    assert s["APm"] == s["APl"] == s["ARm"] == s["ARl"] == -1
    assert evaluate_coco(gt, [dict(r, area=1e9) for r in res]) == s   # a result's own 'area' is unused


def test_perfect_and_empty_results():
    gt = _gt([{"bbox": [0, 0, 40, 40]}, {"bbox": [50, 50, 100, 100]}])
    perfect = [_det(a["bbox"], 1.0) for a in gt["annotations"]]
    s = evaluate_coco(gt, perfect)
    # precision is TP / (TP + FP + eps), eps = np.spacing(1), as in the COCO API: 1 - 2e-16, not 1
    assert [s[k] for k in ("AP", "APm", "APl")] == pytest.approx([1, 1, 1], abs=1e-15)
    assert s["AR100"] == 1.0
    assert s["APs"] == -1                                  # no small object at all
    s = evaluate_coco(gt, [])
    assert s["AP"] == 0.0 and s["AR100"] == 0.0


def test_crowd_region_absorbs_detections():
    crowd = {"bbox": [100, 100, 50, 50], "iscrowd": 1}
    gt = _gt([{"bbox": [0, 0, 10, 10]}, crowd])
    res = [_det([110, 110, 10, 10], 0.95),  # inside the crowd: IoU = 100 / area(det) = 1 -> ignored
           _det([0, 0, 10, 10], 0.9)]
    assert evaluate_coco(gt, res)["AP"] == pytest.approx(1.0)
    gt_no_crowd = _gt([{"bbox": [0, 0, 10, 10]}, dict(crowd, iscrowd=0)])
    s = evaluate_coco(gt_no_crowd, res)       # the same region as a regular object: a miss + an FP
    assert s["AP"] < 0.5 and s["AR100"] == 0.5
    # segm: the crowd given as an uncompressed RLE
    m = np.zeros((200, 200), np.uint8)
    m[100:150, 100:150] = 1
    gt["annotations"][1]["segmentation"] = {"size": [200, 200], "counts": [int(c) for c in
                                            __import__("minirc").evaluation.encode_counts(m)]}
    seg = [dict(r, segmentation=mask_to_rle(_box_mask(r["bbox"]))) for r in res]
    for r in seg:
        del r["bbox"]
    assert evaluate_coco(gt, seg, "segm")["AP"] == pytest.approx(1.0)


def _box_mask(box, size=(200, 200)):
    m = np.zeros(size, np.uint8)
    x, y, w, h = (int(v) for v in box)
    m[y:y + h, x:x + w] = 1
    return m


def test_empty_categories_are_minus_one_and_skipped():
    cats = [{"id": 1, "name": "thing"}, {"id": 5, "name": "no_gt"}]
    gt = _gt([{"bbox": [0, 0, 10, 10]}], categories=cats)
    res = [_det([0, 0, 10, 10], 0.9), _det([0, 0, 10, 10], 0.8, cat=5)]   # a det of a gt-less class
    r = run_coco_eval(gt, res)
    assert r.per_class_ap() == {"thing": pytest.approx(1.0), "no_gt": -1.0}
    assert r.stats["AP"] == pytest.approx(1.0)                             # the -1 category is left out of the mean
    assert r.precision.shape == (10, 101, 2, 4, 3) and r.recall.shape == (10, 2, 4, 3)
    no_anns = _gt([], categories=cats)
    assert set(evaluate_coco(no_anns, res).values()) == {-1.0}
    assert "Average Precision" in r.summary()


def test_max_dets_and_score_ties():
    gt = _gt([{"bbox": [10 * i, 0, 8, 8]} for i in range(15)])
    # 15 correct detections with equal scores after 120 false ones with higher scores
    res = [_det([150, 150, 5, 5], 0.9)] * 120 + [_det(a["bbox"], 0.5) for a in gt["annotations"]]
    s = evaluate_coco(gt, res)
    assert s["AR100"] == 0.0 and s["AP"] == 0.0              # the true ones are cut by max_dets = 100
    res = [_det(a["bbox"], 0.5) for a in gt["annotations"]]
    s = evaluate_coco(gt, res)
    assert s["AR1"] == pytest.approx(1 / 15) and s["AR10"] == pytest.approx(10 / 15) and s["AR100"] == 1.0


def test_paths_and_clear_errors(tmp_path):
    gt = _gt([{"bbox": [0, 0, 10, 10]}])
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps([_det([0, 0, 10, 10], 0.9)]))
    assert evaluate_coco(str(gt_path), res_path)["AP"] == pytest.approx(1.0)
    bad = copy.deepcopy(gt)
    del bad["annotations"][0]["area"]
    with pytest.raises(ValueError, match=r"<dict>: annotation id 1: missing field 'area'"):
        evaluate_coco(bad, [])
    bad = copy.deepcopy(gt)
    bad["annotations"][0]["bbox"] = "0 0 10 10"
    with pytest.raises(TypeError, match=r"annotation id 1: field 'bbox'"):
        evaluate_coco(bad, [])
    bad_path = tmp_path / "bad.json"
    bad_path.write_text(json.dumps(dict(gt, annotations=[dict(gt["annotations"][0], image_id=3)])))
    with pytest.raises(ValueError, match=r"bad\.json: annotation id 1: field 'image_id'"):
        evaluate_coco(bad_path, [])
    with pytest.raises(ValueError, match=r"res\.json: results\[1\]: field 'category_id': 7"):
        res_path.write_text(json.dumps([_det([0, 0, 10, 10], 0.9), _det([0, 0, 1, 1], 0.1, cat=7)]))
        evaluate_coco(gt, res_path)
    with pytest.raises(ValueError, match=r"results\[0\]: field 'image_id'"):
        evaluate_coco(gt, [dict(_det([0, 0, 1, 1], 0.5), image_id=2)])
    with pytest.raises(ValueError, match=r"results\[0\]: missing field 'score'"):
        evaluate_coco(gt, [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1]}])
    wrong_size = [{"image_id": 1, "category_id": 1, "score": 0.5,
                   "segmentation": mask_to_rle(np.ones((20, 20)))}]
    with pytest.raises(ValueError, match=r"results\[0\]: field 'segmentation'.*differs from the image"):
        evaluate_coco(gt, wrong_size, "segm")
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt, [], "keypoints")
    with pytest.raises(FileNotFoundError, match="nope.json"):
        evaluate_coco(tmp_path / "nope.json", [])


# ---- parity with the reference implementation (optional dependency) ----------------------------
def _pycocotools_stats(gt, results, iou_type):
    coco_mod = pytest.importorskip("pycocotools.coco")
    cocoeval = pytest.importorskip("pycocotools.cocoeval")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = coco_mod.COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        e = cocoeval.COCOeval(coco_gt, coco_dt, iou_type)
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_pycocotools_on_random_data(seed, iou_type):
    pytest.importorskip("pycocotools")
    gt, results = random_coco(seed, n_images=1 + seed % 6)
    if iou_type == "segm":   # masks only: a result's area is then its mask's pixel count
        results = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
    if not results:
        pytest.skip("pycocotools cannot load an empty results list")
    mine = evaluate_coco(gt, results, iou_type)
    np.testing.assert_array_equal([mine[k] for k in STAT_KEYS], _pycocotools_stats(gt, results, iou_type))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_equals_pycocotools_with_many_detections_and_box_areas(iou_type):
    pytest.importorskip("pycocotools")
    gt, results = random_coco(100, n_images=3)
    rng = np.random.default_rng(1)
    # > 100 detections per image (max-dets cut) and segm results that keep 'bbox' (area = box w*h)
    many = [dict(r, score=float(rng.random())) for _ in range(40) for r in results]
    mine = evaluate_coco(gt, many, iou_type)
    np.testing.assert_array_equal([mine[k] for k in STAT_KEYS], _pycocotools_stats(gt, many, iou_type))
