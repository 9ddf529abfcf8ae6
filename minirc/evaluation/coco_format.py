"""Reading COCO ground truth and COCO results, with errors that say exactly what is wrong.

Ground truth (``instances_*.json``): ``{"images": [{"id", "height", "width", "file_name"}],
"annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd",
"segmentation"}], "categories": [{"id", "name"}]}``.
Results: a list of ``{"image_id", "category_id", "score", "bbox"}`` (box AP) or with
``"segmentation"`` (an RLE, mask AP).

Every problem raises ``ValueError``/``TypeError`` naming the file (or ``<dict>``/``<list>``), the
annotation id or result index, and the field -- never a ``KeyError`` deep inside the evaluator.
Rules taken from the COCO API (``pycocotools/coco.py``, ``cocoeval.py``): ``iscrowd`` marks a
region to ignore (a missing ``iscrowd`` counts as 0); a user ``ignore`` field is not used (the
COCO API overwrites it with ``iscrowd``); a result's ``area`` is its box's ``w * h`` when the first
result has a non-empty ``bbox`` and its mask's pixel count otherwise (``COCO.loadRes``).
"""
from __future__ import annotations

import json
import math
import numbers
import os
from collections import defaultdict
from dataclasses import dataclass, field


def load_json(obj, expected_type, what: str):
    """A path (str / PathLike) or an already-loaded object -> ``(data, source name)``."""
    if isinstance(obj, (str, os.PathLike)):
        source = os.fspath(obj)
        try:
            with open(source) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{what}: no such file {source!r}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
    else:
        data, source = obj, f"<{type(obj).__name__}>"
    if not isinstance(data, expected_type):
        raise TypeError(f"{source}: expected {what} to be a JSON {expected_type.__name__}, "
                        f"got {type(data).__name__}")
    return data, source


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_positive_int(v) -> bool:
    return _is_int(v) and v > 0


def _is_number(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _field(entry: dict, key: str, where: str, check, expected: str, default=None, required=True):
    if key not in entry:
        if required:
            raise ValueError(f"{where}: missing field {key!r} ({expected})")
        return default
    value = entry[key]
    if not check(value):
        raise TypeError(f"{where}: field {key!r}: expected {expected}, got {str(value)[:80]}")
    return value


def _objects(items: list, name: str, source: str):
    """(index, where, entry) for each entry of the JSON list ``items`` (named ``name`` in messages),
    each checked to be an object."""
    for i, entry in enumerate(items):
        where = f"{source}: {name}[{i}]"
        if not isinstance(entry, dict):
            raise TypeError(f"{where}: expected an object, got {type(entry).__name__}")
        yield i, where, entry


def _is_box(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 4 and all(_is_number(c) for c in v)


@dataclass
class GroundTruth:
    """A checked COCO ground-truth file, grouped the way the evaluator walks it."""
    source: str
    dataset: dict
    image_ids: list                    # sorted, as the COCO API's ``params.imgIds``
    image_sizes: dict                  # image id -> (height, width) or None when not given
    category_ids: list                 # sorted
    category_names: dict               # category id -> name
    annotations: dict = field(default_factory=lambda: defaultdict(list))   # (img, cat) -> [ann]

    def where(self, ann) -> str:
        return f"{self.source}: annotation id {ann['id']}"


def load_ground_truth(gt, need_sizes: bool = False) -> GroundTruth:
    """Check a COCO ground-truth dict or file and index it; ``need_sizes`` for mask evaluation."""
    data, source = load_json(gt, dict, "the ground truth")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ValueError(f"{source}: expected a list under {key!r}, got "
                             f"{'nothing' if key not in data else type(data[key]).__name__}")
    sizes = {}
    for _, where, img in _objects(data["images"], "images", source):
        iid = _field(img, "id", where, _is_int, "an int")
        where = f"{source}: image id {iid}"
        h = _field(img, "height", where, _is_positive_int, "an int > 0", required=need_sizes)
        w = _field(img, "width", where, _is_positive_int, "an int > 0", required=need_sizes)
        if iid in sizes:
            raise ValueError(f"{where}: the image id appears twice in 'images'")
        sizes[iid] = (h, w) if h is not None and w is not None else None
    names = {}
    for _, where, cat in _objects(data["categories"], "categories", source):
        cid = _field(cat, "id", where, _is_int, "an int")
        if cid in names:
            raise ValueError(f"{source}: category id {cid} appears twice in 'categories'")
        names[cid] = str(cat.get("name", cid))
    out = GroundTruth(source, data, sorted(sizes), sizes, sorted(names), names)
    seen = set()
    for _, where, ann in _objects(data["annotations"], "annotations", source):
        aid = _field(ann, "id", where, _is_int, "an int")
        where = f"{source}: annotation id {aid}"
        if aid in seen:
            raise ValueError(f"{where}: the annotation id appears twice (ids must be unique)")
        seen.add(aid)
        iid = _field(ann, "image_id", where, _is_int, "an int")
        if iid not in sizes:
            raise ValueError(f"{where}: field 'image_id': {iid} is not the id of any entry in 'images'")
        cid = _field(ann, "category_id", where, _is_int, "an int")
        if cid not in names:
            raise ValueError(f"{where}: field 'category_id': {cid} is not the id of any entry in 'categories'")
        _field(ann, "bbox", where, _is_box, "[x, y, width, height], 4 finite numbers")
        _field(ann, "area", where, lambda v: _is_number(v) and v >= 0,
               "a number >= 0: the object's pixel area (for a mask, its pixel count; see "
               "minirc.evaluation.rle_area), used for the small/medium/large ranges")
        crowd = _field(ann, "iscrowd", where, lambda v: v in (0, 1) and not isinstance(v, float),
                       "0 or 1", default=0, required=False)
        if need_sizes and "segmentation" not in ann:
            raise ValueError(f"{where}: missing field 'segmentation' (polygons or RLE), needed for "
                             f"iou_type='segm'")
        out.annotations[iid, cid].append(dict(ann, iscrowd=int(crowd)))
    return out


def load_results(results, gt: GroundTruth, iou_type: str):
    """Check a COCO results list (or file) against ``gt``; return ``{(img, cat): [result]}``.

    Each returned result is a copy with ``"_index"`` (its position in the list, which breaks score
    ties as the COCO API's stable sort does) and ``"area"`` (the COCO API's ``loadRes`` rule).
    """
    data, source = load_json(results, list, "the results")
    by_key = defaultdict(list)
    use_box_area = iou_type == "bbox" or (
        bool(data) and isinstance(data[0], dict) and bool(data[0].get("bbox")))
    for i, where, res in _objects(data, "results", source):
        iid = _field(res, "image_id", where, _is_int, "an int")
        if iid not in gt.image_sizes:
            raise ValueError(f"{where}: field 'image_id': {iid} is not an image of the ground truth "
                             f"{gt.source}")
        cid = _field(res, "category_id", where, _is_int, "an int")
        if cid not in gt.category_names:
            raise ValueError(f"{where}: field 'category_id': {cid} is not a category of the ground truth "
                             f"{gt.source} (known ids: {gt.category_ids[:20]})")
        _field(res, "score", where, _is_number, "a finite number")
        box = _field(res, "bbox", where, _is_box, "[x, y, width, height], 4 finite numbers",
                     required=use_box_area)
        if iou_type == "segm":
            if "segmentation" not in res:
                raise ValueError(f"{where}: missing field 'segmentation' (an RLE), needed for iou_type='segm'")
        entry = dict(res, _index=i)
        entry.pop("area", None)              # a result's own 'area' is never used (as in loadRes)
        if use_box_area:
            entry["area"] = float(box[2]) * float(box[3])
        by_key[iid, cid].append(entry)
    return by_key, source
