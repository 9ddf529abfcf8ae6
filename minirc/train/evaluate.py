"""Run a trained model over a data set and score it with the COCO-style evaluator.

Scores come from :func:`minirc.evaluation.evaluate_coco` (COCO's AP averaged over IoU 0.50:0.95,
AP50, AP75, ...) for ``"bbox"`` and ``"segm"``; masks are binarised at 0.5 when they are encoded
for the evaluator (see minirc/evaluation).
"""
from __future__ import annotations

import time

import numpy as np

from minirc.cuda_utils import to_host


def _host_prediction(p: dict) -> dict:
    return {k: np.asarray(to_host(v.data if hasattr(v, "requires_grad") else v)) for k, v in p.items()}


def predict_images(model, images, batch_size: int = 4, backend: str | None = None) -> list:
    """Predictions (host NumPy dicts: boxes, labels, scores, masks) for a list of (3, H, W) images."""
    from minirc import no_grad
    from minirc.backend import get_backend, use_backend
    from minirc.train.trainer import _model_inputs

    model.eval()
    out = []
    with use_backend(get_backend(backend)), no_grad():
        for start in range(0, len(images), batch_size):
            batch = _model_inputs(list(images[start:start + batch_size]))
            out.extend(_host_prediction(p) for p in model(batch))
    return out


def predict_dataset(model, dataset, batch_size: int = 4, backend: str | None = None, progress: bool = False):
    """Predict every item of ``dataset``; returns ``(predictions, image_ids, seconds)``."""
    from tqdm import tqdm

    predictions, image_ids = [], []
    started = time.perf_counter()
    indices = range(len(dataset))
    for start in tqdm(range(0, len(dataset), batch_size), desc="predict", unit="batch", disable=not progress,
                      mininterval=1.0):
        items = [dataset[i] for i in indices[start:start + batch_size]]
        predictions.extend(predict_images(model, [im for im, _ in items], batch_size, backend))
        image_ids.extend(int(t["image_id"]) for _, t in items)
    return predictions, image_ids, time.perf_counter() - started


def coco_results(predictions, image_ids, num_classes: int, label_to_category_id=None) -> list:
    """COCO results list. label_to_category_id: training label -> COCO category id (a
    :class:`~minirc.data.COCODataset` has one); default the identity on 1..K-1 (shapes)."""
    from minirc.evaluation import predictions_to_coco_results

    if label_to_category_id is None:
        label_to_category_id = {k: k for k in range(1, num_classes)}
    return predictions_to_coco_results(predictions, image_ids, label_to_category_id)


def evaluate_predictions(dataset, predictions, image_ids, num_classes: int | None = None,
                         per_class: bool = False) -> dict:
    """``{"bbox": {AP, AP50, ...}, "segm": {...}}`` of predictions on ``dataset``.

    per_class: also ``metrics[iou_type]["per_class"] = {category name: AP}`` (AP over IoU
    0.50:0.95 per category, -1 where the category has no ground truth).
    """
    from minirc.evaluation import dataset_to_coco, run_coco_eval

    num_classes = num_classes or dataset.num_classes
    gt = dataset_to_coco(dataset)
    results = coco_results(predictions, image_ids, num_classes, getattr(dataset, "label_to_category_id", None))
    metrics = {}
    for iou_type in ("bbox", "segm"):
        res = run_coco_eval(gt, results, iou_type=iou_type)
        metrics[iou_type] = {k: float(v) for k, v in res.stats.items()}
        if per_class:
            metrics[iou_type]["per_class"] = res.per_class_ap()
    return metrics


def evaluate_model(model, dataset, batch_size: int = 4, backend: str | None = None, progress: bool = False,
                   per_class: bool = False) -> dict:
    """Predict ``dataset`` and score it: the metrics dict of :func:`evaluate_predictions` plus
    ``"predict_seconds"`` and ``"images_per_second"``."""
    predictions, ids, seconds = predict_dataset(model, dataset, batch_size, backend, progress)
    metrics = evaluate_predictions(dataset, predictions, ids, per_class=per_class)
    metrics["predict_seconds"] = seconds
    metrics["images_per_second"] = len(ids) / seconds if seconds > 0 else float("nan")
    return metrics
