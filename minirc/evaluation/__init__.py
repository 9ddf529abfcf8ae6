"""COCO-style evaluation written from the rules: RLE masks, polygon rasterisation, IoU, matching, AP.

``evaluate_coco(gt, results, iou_type="bbox" | "segm")`` returns the 12 COCO numbers and equals
pycocotools' ``COCOeval`` on the same inputs; ``run_coco_eval`` keeps every intermediate table
(per-image matches, the precision/recall arrays) for per-class AP and plots. See docs/evaluation.md.
"""
from minirc._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    # the evaluator
    "evaluate_coco": ".coco_eval", "run_coco_eval": ".coco_eval", "COCOEvalResult": ".coco_eval",
    "COCOParams": ".summarize", "STAT_KEYS": ".summarize",
    "evaluate_image": ".matching", "greedy_match": ".matching",
    "precision_recall": ".accumulate", "interpolate": ".accumulate",
    # masks: RLE, polygons, COCO segmentations, IoU
    "mask_to_rle": ".rle", "rle_to_mask": ".rle", "rle_area": ".rle", "rle_to_bbox": ".rle",
    "merge_rles": ".rle", "encode_counts": ".rle", "decode_counts": ".rle",
    "counts_to_string": ".rle", "string_to_counts": ".rle",
    "polygon_to_counts": ".polygon", "polygons_to_mask": ".polygon",
    "segmentation_to_rle": ".segmentation", "segmentation_to_mask": ".segmentation",
    "box_iou_xywh": ".iou", "rle_iou": ".iou",
    # model outputs <-> COCO JSON, plots
    "dataset_to_coco": ".convert", "predictions_to_coco_results": ".convert", "save_json": ".convert",
    "plot_precision_recall": ".plots", "plot_per_class_ap": ".plots",
})
