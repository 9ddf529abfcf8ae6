"""A data set read from COCO JSON: your own images and annotations, with the shapes set's API.

``COCODataset(annotations, image_dir)[i] -> (image, target)``:

* ``image`` (3, H, W) float32 RGB in [0, 1] (grey and RGBA files are converted to RGB);
* ``target``: ``boxes`` (M, 4) float32 x1y1x2y2 (COCO's ``[x, y, w, h]`` -> ``[x, y, x + w, y + h]``,
  clipped to the image; boxes with no width or height after clipping are dropped, as in
  torchvision's ``references/detection/coco_utils.py``), ``labels`` (M,) int64 in 1..K-1,
  ``masks`` (M, H, W) uint8, ``image_id`` int (the COCO id), ``iscrowd`` (M,) uint8, ``area`` (M,)
  float32 (the annotation's ``area`` field).

Labels are **contiguous training ids**: the COCO category ids, sorted, become 1, 2, ..., K-1
(0 is background); ``label_to_category_id`` maps back when writing results. Crowd regions are left
out of the training targets by default (``include_crowd=False``): they are not objects to detect,
and the evaluator handles them from the original annotations (``coco_ground_truth()``).

Every malformed entry fails early with the file, the annotation id and the field in the message.
Shape shorthand: M objects, H W image size, K classes including background.
"""
from __future__ import annotations

import copy
import numbers
import os
import warnings

import numpy as np

from minirc.evaluation.coco_format import load_ground_truth
from minirc.evaluation.rle import decode_counts
from minirc.evaluation.segmentation import segmentation_to_counts

BACKGROUND = "__background__"


def read_image(path) -> np.ndarray:
    """An image file -> (3, H, W) float32 RGB in [0, 1] (Pillow, which matplotlib depends on)."""
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I"):          # 16-bit grey: scale by the format's range
            arr = np.asarray(im, dtype=np.float32) / 65535.0
            rgb = np.repeat(arr[None], 3, axis=0)
        else:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32).transpose(2, 0, 1) / 255.0
    return np.ascontiguousarray(rgb, dtype=np.float32)


def _polygons_with_area(segm, where):
    """``segm`` without its polygons of fewer than 3 points (6 numbers), with a warning; None when
    none is left. detectron2's ``load_coco_json`` drops them the same way (and skips an instance
    left without any): a 1- or 2-point polygon covers no pixel and would train an empty mask.
    RLE dicts and malformed polygons pass through (the rasteriser reports those)."""
    if not isinstance(segm, (list, tuple)):
        return segm
    kept = [p for p in segm if not (isinstance(p, (list, tuple, np.ndarray)) and len(p) % 2 == 0 and len(p) < 6)]
    if len(kept) < len(segm) or not segm:
        left = "the annotation is left out (no polygon remains)" if not kept else f"{len(kept)} remain"
        warnings.warn(f"{where}: dropped {len(segm) - len(kept)} polygon(s) of fewer than 3 points; {left}",
                      stacklevel=3)
    return kept or None


class COCODataset:
    """Images + instance annotations from a COCO JSON file (or dict).

    annotations: path to a COCO ``instances`` JSON, or the loaded dict.
    image_dir: folder the images' ``file_name`` entries are relative to (default: the JSON's folder).
    include_crowd: keep ``iscrowd=1`` regions in the targets (default False: training ignores them).
    remove_images_without_annotations: drop images with no (kept) object, as torchvision's training
        reference does; evaluation should keep them (they can still hold false positives).
    image_reader: function path -> (3, H, W) float32 image (default :func:`read_image`).
    """

    def __init__(self, annotations, image_dir=None, include_crowd: bool = False,
                 remove_images_without_annotations: bool = False, image_reader=read_image):
        self._gt = load_ground_truth(annotations, need_sizes=True)
        self.source = self._gt.source
        if image_dir is None:
            image_dir = os.path.dirname(os.fspath(annotations)) if isinstance(annotations, (str, os.PathLike)) else "."
        self.image_dir = os.fspath(image_dir)
        self.include_crowd = bool(include_crowd)
        self.image_reader = image_reader
        cat_ids = self._gt.category_ids
        self.label_to_category_id = {k + 1: cid for k, cid in enumerate(cat_ids)}
        self.category_id_to_label = {cid: k for k, cid in self.label_to_category_id.items()}
        self._images = {img["id"]: img for img in self._gt.dataset["images"]}
        self._anns = {iid: [] for iid in self._gt.image_ids}
        for ann in self._gt.dataset["annotations"]:   # file order, as the evaluator sees it
            self._anns[ann["image_id"]].append(ann)
        for iid, img in self._images.items():
            if not isinstance(img.get("file_name"), str):
                raise ValueError(f"{self.source}: image id {iid}: missing field 'file_name' (a string)")
        ids = self._gt.image_ids
        if remove_images_without_annotations:
            ids = [i for i in ids if any(self._keep(a) for a in self._anns[i])]
        self.image_ids = list(ids)

    def _keep(self, ann) -> bool:
        return self.include_crowd or not ann.get("iscrowd", 0)

    # ---- the data set protocol ------------------------------------------------------------
    @property
    def class_names(self) -> tuple:
        return (BACKGROUND,) + tuple(self._gt.category_names[c] for c in self._gt.category_ids)

    @property
    def num_classes(self) -> int:
        """K, background included."""
        return len(self._gt.category_ids) + 1

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int):
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise TypeError(f"index: expected an int, got {index!r}")
        n = len(self.image_ids)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index: expected 0 <= index < {n}, got {index}")
        iid = self.image_ids[index]
        info = self._images[iid]
        path = os.path.join(self.image_dir, info["file_name"])
        if not os.path.exists(path):
            raise FileNotFoundError(f"{self.source}: image id {iid}: field 'file_name': no file {path!r}")
        image = self.image_reader(path)
        if image.shape[1:] != (info["height"], info["width"]):
            raise ValueError(f"{self.source}: image id {iid}: the file {path!r} is {image.shape[1]}x"
                             f"{image.shape[2]} (HxW) but 'height', 'width' say "
                             f"{info['height']}x{info['width']}")
        return image, self.target(iid)

    def check(self, tolerance: float = 1.0) -> None:
        """Check what training will read before it starts, so a bad file fails in seconds, not
        mid-run: every image file exists, and every kept annotation's box lies inside its image to
        within ``tolerance`` pixels (the rounding other tools' exports leave; such boxes are clipped
        when read). Unknown image or category ids and missing fields are refused when the file is
        loaded. Raises FileNotFoundError or ValueError naming the file, the id and the field."""
        for iid in self.image_ids:
            info = self._images[iid]
            path = os.path.join(self.image_dir, info["file_name"])
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{self.source}: image id {iid}: field 'file_name': no file {path!r}")
            h, w = info["height"], info["width"]
            for ann in self._anns[iid]:
                x, y, bw, bh = (float(v) for v in ann["bbox"])
                if self._keep(ann) and (min(x, y) < -tolerance or x + bw > w + tolerance or y + bh > h + tolerance):
                    raise ValueError(f"{self.source}: annotation id {ann['id']}: field 'bbox': {ann['bbox']} "
                                     f"reaches outside its image (id {iid}, {w}x{h} pixels, width x height)")

    def image_info(self, image_id: int) -> dict:
        """The file's ``images`` entry of ``image_id`` (a copy): ``file_name``, ``height``, ``width``, ..."""
        if image_id not in self._images:
            raise KeyError(f"image_id: {self.source} has no image with id {image_id!r}")
        return dict(self._images[image_id])

    def target(self, image_id: int) -> dict:
        """The training target of one image (see the module docstring); no image is read."""
        info = self._images[image_id]
        h, w = info["height"], info["width"]
        boxes, labels, masks, crowd, area = [], [], [], [], []
        for ann in self._anns[image_id]:
            if not self._keep(ann):
                continue
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            box = np.clip([x, y, x + bw, y + bh], 0, [w, h, w, h])
            if box[2] <= box[0] or box[3] <= box[1]:
                continue                                  # degenerate: nothing to regress to
            where = f"{self.source}: annotation id {ann['id']}: field 'segmentation'"
            if "segmentation" not in ann:
                raise ValueError(f"{self.source}: annotation id {ann['id']}: missing field 'segmentation'")
            segm = _polygons_with_area(ann["segmentation"], where)
            if segm is None:
                continue                                  # no polygon of 3 or more points: no mask
            masks.append(decode_counts(segmentation_to_counts(segm, h, w, where), h, w))
            boxes.append(box)
            labels.append(self.category_id_to_label[ann["category_id"]])
            crowd.append(int(ann.get("iscrowd", 0)))
            area.append(float(ann["area"]))
        return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
                "labels": np.array(labels, dtype=np.int64),
                "masks": (np.stack(masks).astype(np.uint8) if masks else np.zeros((0, h, w), dtype=np.uint8)),
                "image_id": int(image_id),
                "iscrowd": np.array(crowd, dtype=np.uint8),
                "area": np.array(area, dtype=np.float32)}

    def coco_ground_truth(self) -> dict:
        """The original annotations of this data set's images (crowds included): the evaluator's gt."""
        keep = set(self.image_ids)
        data = self._gt.dataset
        return {"images": [copy.deepcopy(i) for i in data["images"] if i["id"] in keep],
                "annotations": [copy.deepcopy(a) for a in data["annotations"] if a["image_id"] in keep],
                "categories": copy.deepcopy(data["categories"])}

    def __repr__(self):
        return (f"COCODataset({self.source!r}, images={len(self)}, classes={self.num_classes - 1}, "
                f"include_crowd={self.include_crowd})")
