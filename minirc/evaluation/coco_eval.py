"""COCO-style evaluation, written from the rules (no pycocotools): ``evaluate_coco``.

The pipeline, one file per step:

=====================  ============================================================================
coco_format.py         read + check the ground truth and the results (clear errors)
iou.py                 IoU per (image, category): boxes ``[x, y, w, h]`` or RLE masks; crowd rule
matching.py            greedy matching per IoU threshold and area range (the COCO API's evaluateImg)
accumulate.py          pool images, precision/recall, 101-point interpolation (accumulate)
summarize.py           the 12 numbers, per-class AP (summarize)
=====================  ============================================================================

The numbers equal pycocotools' ``COCOeval`` to the last bit on the same inputs (tests/evaluation:
parity tests on random ground truth and results, run when pycocotools is installed). The one
deliberate difference: minirc identifies matches by index, so an annotation with ``id`` 0 is
matched like any other (the COCO API stores matches as ids and reads id 0 as "unmatched").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from minirc.evaluation.accumulate import accumulate
from minirc.evaluation.coco_format import load_ground_truth, load_results
from minirc.evaluation.iou import box_iou_xywh, counts_iou
from minirc.evaluation.matching import evaluate_image
from minirc.evaluation.segmentation import segmentation_to_counts
from minirc.evaluation.summarize import COCOParams, format_summary, per_category_ap, summarize

IOU_TYPES = ("bbox", "segm")


@dataclass
class COCOEvalResult:
    """Everything an evaluation computed; ``stats`` holds the 12 summary numbers."""
    iou_type: str
    params: COCOParams
    stats: dict                  # AP, AP50, ..., ARl (floats; -1 where undefined)
    precision: np.ndarray        # (T, R, K, A, M) interpolated precision, -1 = undefined
    recall: np.ndarray           # (T, K, A, M)
    scores: np.ndarray           # (T, R, K, A, M) score of the detection reaching each recall point
    image_ids: list              # I, sorted
    category_ids: list           # K, sorted
    category_names: list         # K
    per_image: dict              # (k, a, i) -> matching record (scores, matched, det_ignore, ...)

    def per_class_ap(self, iou=None, area: str = "all") -> dict:
        """``{category name: AP}`` (AP over IoU 0.50:0.95, or at one ``iou`` such as 0.5); -1 = no gt."""
        ap = per_category_ap(self.precision, self.params, iou=iou, area=area)
        return {name: float(v) for name, v in zip(self.category_names, ap)}

    def summary(self) -> str:
        return format_summary(self.stats, self.iou_type)


def _sorted_dets(dets, max_det):
    """Detections by decreasing score, stable (file order breaks ties), at most max_det."""
    order = np.argsort([-d["score"] for d in dets], kind="mergesort")[:max_det]
    return [dets[j] for j in order]


def _ious(gts, dets, iou_type, gt_counts):
    """(D, G) IoU; ``gt_counts(g)`` gives a ground truth's run lengths (masks, converted once)."""
    crowd = np.array([g["iscrowd"] for g in gts], dtype=bool)
    if iou_type == "bbox":
        return box_iou_xywh([d["bbox"] for d in dets], [g["bbox"] for g in gts], crowd)
    return counts_iou([d["_counts"] for d in dets], [gt_counts(g) for g in gts], crowd)


def run_coco_eval(gt, results, iou_type: str = "bbox", params: COCOParams | None = None) -> COCOEvalResult:
    """Evaluate ``results`` against ``gt`` and keep every intermediate table.

    gt: COCO ground-truth dict or path to its JSON; results: COCO results list or path.
    iou_type: ``"bbox"`` (boxes) or ``"segm"`` (masks). params: thresholds, limits, area ranges.
    """
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type: expected one of {IOU_TYPES}, got {iou_type!r}")
    params = params or COCOParams()
    segm = iou_type == "segm"
    gtd = load_ground_truth(gt, need_sizes=segm)
    dets_by_key, res_source = load_results(results, gtd, iou_type)
    img_index = {iid: i for i, iid in enumerate(gtd.image_ids)}
    max_det = params.max_dets[-1]
    gt_counts = {}

    def gt_cache(g):
        if g["id"] not in gt_counts:
            h, w = gtd.image_sizes[g["image_id"]]
            gt_counts[g["id"]] = segmentation_to_counts(
                g["segmentation"], h, w, f"{gtd.where(g)}: field 'segmentation'")
        return gt_counts[g["id"]]

    per_image = {}
    for k, cid in enumerate(gtd.category_ids):
        for iid in gtd.image_ids:
            gts = gtd.annotations.get((iid, cid), [])
            dets = _sorted_dets(dets_by_key.get((iid, cid), []), max_det)
            if not gts and not dets:
                continue
            if segm:
                h, w = gtd.image_sizes[iid]
                for d in dets:
                    if "_counts" not in d:
                        d["_counts"] = segmentation_to_counts(
                            d["segmentation"], h, w, f"{res_source}: results[{d['_index']}]: field 'segmentation'")
                        d.setdefault("area", float(d["_counts"][1::2].sum(dtype=np.int64)))
            ious = _ious(gts, dets, iou_type, gt_cache)
            gt_area = [g["area"] for g in gts]
            crowd = [g["iscrowd"] for g in gts]
            det_area = [d["area"] for d in dets]
            for a, (_, lo, hi) in enumerate(params.area_ranges):
                rec = evaluate_image(ious, gt_area, crowd, det_area, (lo, hi), params.iou_thresholds)
                rec["scores"] = np.array([d["score"] for d in dets], dtype=np.float64)
                rec["det_index"] = np.array([d["_index"] for d in dets], dtype=np.int64)
                rec["gt_ids"] = [g["id"] for g in gts]
                per_image[k, a, img_index[iid]] = rec
    precision, recall, scores = accumulate(per_image, len(gtd.image_ids), len(gtd.category_ids), params)
    return COCOEvalResult(iou_type, params, summarize(precision, recall, params), precision, recall, scores,
                          list(gtd.image_ids), list(gtd.category_ids),
                          [gtd.category_names[c] for c in gtd.category_ids], per_image)


def evaluate_coco(gt, results, iou_type: str = "bbox", params: COCOParams | None = None) -> dict:
    """The 12 COCO numbers ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100",
    "ARs", "ARm", "ARl"}`` for ``results`` on ``gt`` (both a dict/list or a JSON path).

    Values are in [0, 1]; -1 means undefined (no ground truth in that area range at all).
    """
    return run_coco_eval(gt, results, iou_type, params).stats
