"""Model outputs and data sets <-> COCO JSON, so any minirc data set can be scored with evaluate_coco.

* :func:`dataset_to_coco` -- ground truth of a data set (``ds[i] -> (image, target)``) as a COCO dict;
* :func:`predictions_to_coco_results` -- per-image predictions (``boxes`` x1y1x2y2, ``labels``,
  ``scores``, optional ``masks``) as a COCO results list, one list per ``iou_type``.

Conventions: COCO boxes are ``[x, y, w, h]`` in continuous pixels; minirc boxes are x1y1x2y2, so
``w = x2 - x1`` (no ``+1``). Soft masks (float probabilities, e.g. the pasted mask-head output) are
binarised with ``> 0.5``, as torchvision's reference evaluator does
(``references/detection/coco_eval.py``).
"""
from __future__ import annotations

import json
import os

import numpy as np

from minirc.evaluation.rle import counts_area, counts_to_string, encode_counts


def xyxy_to_xywh(boxes) -> np.ndarray:
    """(N, 4) x1y1x2y2 -> (N, 4) COCO x, y, width, height (float64)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def _binary_masks(masks, n: int, where: str) -> np.ndarray:
    """(D, H, W) or (D, 1, H, W) bool/uint8 or float probabilities -> (D, H, W) bool."""
    m = np.asarray(masks)
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if m.ndim != 3 or m.shape[0] != n:
        raise ValueError(f"{where}: expected masks of shape ({n}, H, W) or ({n}, 1, H, W), got {m.shape}")
    return m > 0.5 if m.dtype.kind == "f" else m != 0


def _label_map(label_to_category_id):
    """A function training label -> COCO category id, with a clear error for unknown labels."""
    if label_to_category_id is None:
        return lambda label: int(label)
    table = (dict(label_to_category_id) if isinstance(label_to_category_id, dict)
             else dict(enumerate(label_to_category_id)))

    def to_cat(label):
        if int(label) not in table:
            raise ValueError(f"label_to_category_id: no category id for label {int(label)} "
                             f"(known labels: {sorted(table)[:20]})")
        return int(table[int(label)])
    return to_cat


def dataset_to_coco(ds, label_to_category_id=None) -> dict:
    """COCO ground-truth dict of a data set with the minirc API (``ds[i] -> (image, target)``).

    A :class:`minirc.data.COCODataset` returns its own annotations (crowd regions included, even
    when its training targets leave them out). Otherwise every item is read once: boxes, masks
    (as compressed RLE), ``area`` (``target["area"]``, else the mask's pixel count, else box area),
    ``iscrowd``. label_to_category_id: dict or sequence from training label to COCO category id;
    default ``ds.label_to_category_id`` if present, else the identity.
    """
    if hasattr(ds, "coco_ground_truth"):
        return ds.coco_ground_truth()
    if label_to_category_id is None:
        label_to_category_id = getattr(ds, "label_to_category_id", None)
    to_cat = _label_map(label_to_category_id)
    names = list(getattr(ds, "class_names", []))
    categories = [{"id": to_cat(k), "name": str(names[k]) if k < len(names) else str(k)}
                  for k in range(1, int(ds.num_classes))]
    images, annotations = [], []
    for i in range(len(ds)):
        image, target = ds[i]
        h, w = int(image.shape[-2]), int(image.shape[-1])
        iid = int(target.get("image_id", i))
        images.append({"id": iid, "height": h, "width": w, "file_name": f"{iid}.png"})
        boxes = xyxy_to_xywh(target["boxes"])
        n = len(boxes)
        masks = target.get("masks")
        masks = _binary_masks(masks, n, f"ds[{i}] target 'masks'") if masks is not None else None
        areas = target.get("area")
        crowd = np.asarray(target.get("iscrowd", np.zeros(n)), dtype=np.int64).reshape(-1)
        for j in range(n):
            ann = {"id": len(annotations) + 1, "image_id": iid,
                   "category_id": to_cat(np.asarray(target["labels"]).reshape(-1)[j]),
                   "bbox": [float(v) for v in boxes[j]], "iscrowd": int(crowd[j])}
            if masks is not None:
                counts = encode_counts(masks[j])
                ann["segmentation"] = {"size": [h, w], "counts": counts_to_string(counts)}
            if areas is not None:
                ann["area"] = float(np.asarray(areas).reshape(-1)[j])
            elif masks is not None:
                ann["area"] = float(counts_area(counts))
            else:
                ann["area"] = float(boxes[j, 2] * boxes[j, 3])
            annotations.append(ann)
    return {"images": images, "annotations": annotations, "categories": categories}


def predictions_to_coco_results(predictions, image_ids, label_to_category_id=None, iou_type=None) -> list:
    """COCO results list from per-image predictions.

    predictions: one dict per image with ``boxes`` (D, 4) x1y1x2y2, ``labels`` (D,), ``scores`` (D,)
    and optionally ``masks`` (D, H, W) or (D, 1, H, W): bool/uint8, or float probabilities
    binarised with ``> 0.5``. image_ids: the COCO image id of each prediction.
    label_to_category_id: dict or sequence (training label -> COCO category id); None = identity.
    iou_type: None (default) writes ``bbox`` and, when masks are given, ``segmentation`` in every
    entry -- one list for both evaluations, like detectron2's; the COCO API then takes a mask
    result's area (for the small/medium/large ranges) from its **box**. ``"segm"`` writes masks
    only, so that area is the mask's pixel count (torchvision's reference); ``"bbox"`` boxes only.
    """
    if iou_type not in (None, "bbox", "segm"):
        raise ValueError(f"iou_type: expected None, 'bbox' or 'segm', got {iou_type!r}")
    image_ids = list(image_ids)
    if len(image_ids) != len(predictions):
        raise ValueError(f"image_ids: expected one id per prediction ({len(predictions)}), got {len(image_ids)}")
    to_cat = _label_map(label_to_category_id)
    out = []
    for i, (pred, iid) in enumerate(zip(predictions, image_ids)):
        for key in ("boxes", "labels", "scores") + (("masks",) if iou_type == "segm" else ()):
            if key not in pred:
                raise ValueError(f"predictions[{i}]: missing key {key!r} (needed for iou_type={iou_type!r})")
        boxes = xyxy_to_xywh(pred["boxes"])
        labels = np.asarray(pred["labels"]).reshape(-1)
        scores = np.asarray(pred["scores"], dtype=np.float64).reshape(-1)
        if not len(boxes) == len(labels) == len(scores):
            raise ValueError(f"predictions[{i}]: boxes, labels and scores differ in length "
                             f"({len(boxes)}, {len(labels)}, {len(scores)})")
        want_masks = iou_type == "segm" or (iou_type is None and pred.get("masks") is not None)
        masks = _binary_masks(pred["masks"], len(boxes), f"predictions[{i}]") if want_masks else None
        for j in range(len(boxes)):
            res = {"image_id": int(iid), "category_id": to_cat(labels[j]), "score": float(scores[j])}
            if iou_type != "segm":
                res["bbox"] = [float(v) for v in boxes[j]]
            if masks is not None:
                h, w = masks.shape[1:]
                res["segmentation"] = {"size": [int(h), int(w)], "counts": counts_to_string(encode_counts(masks[j]))}
            out.append(res)
    return out


def save_json(obj, path) -> str:
    """Write a COCO dict or results list as JSON (creating the folder); returns the path."""
    path = os.fspath(path)
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)
    return path
