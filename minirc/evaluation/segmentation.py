"""The three ways a COCO annotation spells a mask, turned into one RLE.

``segmentation`` in a COCO annotation (or result) is one of

* a list of polygons ``[[x1, y1, x2, y2, ...], ...]`` -- one object may have several parts, which
  are rasterised one by one (:mod:`minirc.evaluation.polygon`) and **united**;
* an uncompressed RLE ``{"size": [h, w], "counts": [ints]}`` (usually crowd regions);
* a compressed RLE ``{"size": [h, w], "counts": "string"}`` (results files, some crowds).

This is what the COCO API's ``COCO.annToRLE`` does. Two deliberate differences: an RLE whose
``size`` is not the image's raises an error (the COCO API gives such a mask IoU -1, silently
matching nothing), and a polygon with exactly 4 numbers is read as a 2-vertex polygon (the COCO
API's ``frPyObjects`` takes it for an ``[x, y, w, h]`` box and, in pycocotools 2.0.11, fails).
"""
from __future__ import annotations

import numbers

import numpy as np

from minirc.evaluation.polygon import polygon_to_counts
from minirc.evaluation.rle import counts_to_string, decode_counts, merge_counts, rle_counts


def segmentation_to_counts(segm, height: int, width: int, where: str = "segmentation") -> np.ndarray:
    """A COCO ``segmentation`` (polygons or RLE) -> (C,) uint32 run lengths of a (height, width) mask.

    where: prefix for error messages, e.g. ``"instances.json: annotation id 7: field 'segmentation'"``.
    """
    if isinstance(segm, dict):
        try:
            h, w, counts = rle_counts(segm, where)
        except (TypeError, ValueError) as e:
            raise type(e)(str(e) if str(e).startswith(where) else f"{where}: {e}") from None
        if (h, w) != (height, width):
            raise ValueError(f"{where}: RLE 'size' [{h}, {w}] differs from the image's "
                             f"[height, width] = [{height}, {width}]")
        return counts
    if isinstance(segm, (list, tuple)):
        parts = []
        for k, poly in enumerate(segm):
            if (not isinstance(poly, (list, tuple, np.ndarray)) or len(poly) % 2
                    or not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in poly)):
                raise ValueError(f"{where}: polygon {k}: expected a flat list [x1, y1, x2, y2, ...] of an "
                                 f"even number of numbers, got {str(poly)[:80]}")
            parts.append(polygon_to_counts(poly, height, width))
        if not parts:
            return np.array([height * width], dtype=np.uint32)   # no polygon: an empty mask
        return merge_counts(parts, height, width)
    raise TypeError(f"{where}: expected a list of polygons or an RLE dict {{'size', 'counts'}}, "
                    f"got {type(segm).__name__}")


def segmentation_to_rle(segm, height: int, width: int) -> dict:
    """A COCO ``segmentation`` -> compressed RLE dict ``{"size": [h, w], "counts": str}``."""
    counts = segmentation_to_counts(segm, height, width)
    return {"size": [int(height), int(width)], "counts": counts_to_string(counts)}


def segmentation_to_mask(segm, height: int, width: int) -> np.ndarray:
    """A COCO ``segmentation`` -> (height, width) uint8 mask of 0/1 (``COCO.annToMask``)."""
    return decode_counts(segmentation_to_counts(segm, height, width), height, width)
