"""A tiny COCO data set written to disk for the training, predict and eval tests.

Three images of different sizes; two categories with non-contiguous ids (3 "disc", 7 "bar");
one crowd region; one image without annotations (training skips it, evaluation keeps it).
"""
import json

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 7, "name": "bar"}, {"id": 3, "name": "disc"}]   # file order is not id order
IN_LABEL_ORDER = [{"id": 3, "name": "disc"}, {"id": 7, "name": "bar"}]


def _square(x, y, w, h):
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def coco_dict() -> dict:
    images = [{"id": 11, "file_name": "a.png", "height": 48, "width": 64},
              {"id": 12, "file_name": "b.png", "height": 56, "width": 40},
              {"id": 13, "file_name": "empty.png", "height": 40, "width": 40}]
    anns = [
        {"id": 1, "image_id": 11, "category_id": 3, "bbox": [4, 6, 18, 18], "area": 324.0, "iscrowd": 0,
         "segmentation": _square(4, 6, 18, 18)},
        {"id": 2, "image_id": 11, "category_id": 7, "bbox": [34, 10, 24, 8], "area": 192.0, "iscrowd": 0,
         "segmentation": _square(34, 10, 24, 8)},
        {"id": 3, "image_id": 11, "category_id": 7, "bbox": [30, 30, 30, 14], "area": 420.0, "iscrowd": 1,
         "segmentation": _square(30, 30, 30, 14)},
        {"id": 4, "image_id": 12, "category_id": 3, "bbox": [10, 20, 20, 20], "area": 400.0, "iscrowd": 0,
         "segmentation": _square(10, 20, 20, 20)},
    ]
    return {"images": images, "annotations": anns, "categories": [dict(c) for c in CATEGORIES]}


def write_coco(folder, coco=None, name="instances.json"):
    """Write the images (drawn from the annotations) and the JSON under ``folder``; return the JSON path."""
    coco = coco_dict() if coco is None else coco
    rng = np.random.default_rng(0)
    for info in coco["images"]:
        h, w = info["height"], info["width"]
        rgb = (rng.random((h, w, 3)) * 60).astype(np.uint8)
        for a in coco["annotations"]:
            if a["image_id"] == info["id"]:
                x, y, bw, bh = (int(v) for v in a["bbox"])
                rgb[y:y + bh, x:x + bw] = (200, 80, 40) if a["category_id"] == 3 else (40, 200, 120)
        Image.fromarray(rgb).save(folder / info["file_name"])
    path = folder / name
    path.write_text(json.dumps(coco))
    return str(path)
