"""Figures of a trained checkpoint measured the way the device produces them.

The trainer's stages judge a model by what edge's own `Pipeline` makes of it
(the device's decoding, multi-label scores, NMS and thresholds), not by
ultralytics' predict or val: a checkpoint is exported to ONNX once and run
single-model, original view, on the CPU through ONNX Runtime. Recall and
precision are taken at one confidence threshold (the variant's deployed one),
mAP50 over every fused score (edge.metrics, the same matching the benchmarks use).
"""
import os

import numpy as np

from edge.images import read_image
from edge.metrics import evaluate
from trainer.errors import TrainerError

# What the device decodes for evaluation: ultralytics' validation decodes at 0.001.
EVAL_DECODE_THR = 0.001


def load_ground_truth(data_yaml, split, limit=None):
    """[(image path, (xyxy pixels float32 (N,4), class ids (N,)))] of one split of a YOLO dataset."""
    from trainer.data.yolo_dataset import label_path_for, read_data_yaml, read_yolo_labels

    _, splits = read_data_yaml(data_yaml)
    if split not in splits:
        raise TrainerError("%s has no %r split (it has %s); add '%s:' to the data.yaml"
                           % (data_yaml, split, ", ".join(sorted(splits)), split))
    items = []
    for path in sorted(set(splits[split]))[:limit]:
        h, w = read_image(path).shape[:2]
        label = label_path_for(path)
        cls, xywhn = read_yolo_labels(label) if os.path.exists(label) else (np.zeros(0, int), np.zeros((0, 4)))
        xywh = np.asarray(xywhn, np.float32).reshape(-1, 4) * np.float32([w, h, w, h])
        xyxy = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
        items.append((path, (xyxy, np.asarray(cls))))
    return items


def open_checkpoint(weights, names, imgsz, work_dir, decode_thr=EVAL_DECODE_THR):
    """An edge Pipeline over one .pt (exported to ONNX in work_dir) or .onnx file, with the given class names."""
    from trainer.active.select import open_detector

    names_file = _names_file(names, work_dir)
    return open_detector(str(weights), conf=decode_thr, imgsz=int(imgsz), names_file=names_file,
                         work_dir=work_dir).pipeline


def _names_file(names, work_dir):
    import yaml

    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, "names.yaml")
    with open(path, "w") as fh:
        yaml.safe_dump({"names": list(names)}, fh)
    return path


def detect_all(pipeline, paths, progress=None):
    """Every fused box with its score (all_scores) for each image path, single model, original view."""
    out = []
    for path in (progress(paths) if progress else paths):
        out.append(pipeline.detect(read_image(path), plan="none", all_scores=True))
    return out


def false_positives_per_image(detections, threshold):
    """Mean number of boxes scoring >= threshold per image, for images known to hold no target."""
    if not detections:
        return float("nan")
    return float(np.mean([int(np.sum(d.score >= threshold)) for d in detections]))


def device_figures(pipeline, items, threshold, categories, progress=None):
    """Figures at one confidence threshold on [(path, ground truth)] items (see load_ground_truth).

    Returns mAP50 (over all scores), pooled precision and recall at `threshold`, recall per category,
    the critical classes' recall, and false positives per image over the items with no ground-truth box.
    """
    predictions = detect_all(pipeline, [p for p, _ in items], progress)
    ground_truth = [gt for _, gt in items]
    num_classes = pipeline.bundle.num_classes
    result = evaluate(predictions, ground_truth, num_classes, categories, score_thr=threshold)
    figures = {"threshold": float(threshold), "images": len(items), "gt_boxes": result["gt_boxes"],
               "mAP50": result["map50"], "recall_by_category": result["recall_by_category"]}
    figures.update(_pooled_at(result["curves"], threshold))
    figures["critical_recall"] = result["recall_by_category"].get("critical")
    empty = [d for d, (_, (xyxy, _)) in zip(predictions, items) if len(xyxy) == 0]
    figures["background_images"] = len(empty)
    figures["fp_per_background_image"] = false_positives_per_image(empty, threshold) if empty else None
    return figures


def _pooled_at(curves, threshold):
    """Pooled precision and recall of the boxes scoring >= threshold over every class (a box of a class
    absent from the ground truth is a false positive too)."""
    scores = np.concatenate([c.scores for c in curves]) if curves else np.zeros(0)
    tp = np.concatenate([c.tp for c in curves]) if curves else np.zeros(0, bool)
    num_gt = int(sum(c.num_gt for c in curves))
    kept = scores >= threshold
    hits = int(np.sum(tp[kept]))
    return {"precision": hits / float(np.sum(kept)) if np.any(kept) else None,
            "recall": hits / float(num_gt) if num_gt else None}
