"""Random COCO ground truth and results for the evaluator tests (shared by the parity tests)."""
import numpy as np

from minirc.evaluation.rle import counts_to_string, encode_counts
from minirc.evaluation.segmentation import segmentation_to_mask


def _polygon_in_box(rng, x, y, w, h, n):
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = rng.uniform(0.5, 1.0, n)
    px = x + w / 2 + np.cos(t) * r * w / 2
    py = y + h / 2 + np.sin(t) * r * h / 2
    return [float(v) for pair in zip(px, py) for v in pair]


def random_coco(seed, n_images=4, n_categories=3, max_size=320, crowd_p=0.1, empty_category=True):
    """(gt dict, results list with both 'bbox' and a mask RLE 'segmentation' per result)."""
    rng = np.random.default_rng(seed)
    images, anns, results = [], [], []
    cats = [{"id": 2 * c + 1, "name": f"cat{c}"} for c in range(n_categories)]
    if empty_category:
        cats.append({"id": 99, "name": "never_annotated"})
    aid = 1
    for i in range(n_images):
        h, w = (int(v) for v in rng.integers(24, max_size, 2))
        iid = int(rng.integers(1, 10 ** 6)) if i else 7        # ids need not be contiguous
        images.append({"id": iid, "height": h, "width": w, "file_name": f"{iid}.png"})
        for _ in range(int(rng.integers(0, 7))):
            cid = cats[int(rng.integers(0, n_categories))]["id"]
            lo = 0.7 if rng.random() < 0.25 else 0.01                # some large objects
            bw, bh = rng.uniform(lo * w, w * 0.9), rng.uniform(lo * h, h * 0.9)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            crowd = int(rng.random() < crowd_p)
            poly = _polygon_in_box(rng, x, y, bw, bh, int(rng.integers(3, 9)))
            mask = segmentation_to_mask([poly], h, w)
            if crowd:   # crowds as uncompressed RLE, as in COCO
                segm = {"size": [h, w], "counts": [int(c) for c in encode_counts(mask)]}
            else:
                segm = [poly]
            area = float(mask.sum()) if rng.random() < 0.8 else float(bw * bh)
            anns.append({"id": aid, "image_id": iid, "category_id": cid, "bbox": [x, y, bw, bh],
                         "area": area, "iscrowd": crowd, "segmentation": segm})
            aid += 1
            for _ in range(int(rng.integers(0, 3))):      # detections near this object
                jit = rng.normal(0, 0.08, 4) * [bw, bh, bw, bh]
                dx, dy = x + jit[0], y + jit[1]
                dw, dh = max(1.0, bw + jit[2]), max(1.0, bh + jit[3])
                # the mask: the object's polygon moved and stretched like the box
                p = np.array(poly).reshape(-1, 2)
                p = (p - [x, y]) * [dw / bw, dh / bh] + [dx, dy] + rng.normal(0, 0.5, p.shape)
                results.append(_result(rng, iid, cid if rng.random() < 0.85 else cats[0]["id"],
                                       [dx, dy, dw, dh], h, w, p.reshape(-1).tolist()))
        for _ in range(int(rng.integers(0, 4))):          # false positives anywhere
            bw, bh = rng.uniform(2, w / 2), rng.uniform(2, h / 2)
            results.append(_result(rng, iid, cats[int(rng.integers(0, n_categories))]["id"],
                                   [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh], h, w))
    rng.shuffle(results)
    return {"images": images, "annotations": anns, "categories": cats}, results


def _result(rng, iid, cid, box, h, w, poly=None):
    x, y, bw, bh = box
    if poly is None:
        poly = _polygon_in_box(rng, x, y, bw, bh, int(rng.integers(3, 9)))
    mask = segmentation_to_mask([poly], h, w)
    score = float(np.round(rng.random(), 1))             # coarse scores: many ties
    return {"image_id": iid, "category_id": cid, "score": score, "bbox": [float(v) for v in box],
            "segmentation": {"size": [h, w], "counts": counts_to_string(encode_counts(mask))}}
