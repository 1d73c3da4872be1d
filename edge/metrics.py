"""Detection accuracy from Detections and ground truth: AP50, precision-recall, recall per category.

Pure numpy, so the same figures come out on the trainer's machine, in the
benchmarks and on the device.
"""
import collections

import numpy as np

from edge.boxes import box_iou

ClassCurve = collections.namedtuple("ClassCurve", "class_id ap50 precision recall scores tp num_gt")
_RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCO's interpolation grid


def match_image(pred_xyxy, pred_score, gt_xyxy, iou_thr=0.5):
    """True-positive flags for one image and class: greedy by score, each ground-truth box used once."""
    order = np.argsort(-np.asarray(pred_score), kind="stable")
    tp = np.zeros(len(order), bool)
    if not len(gt_xyxy) or not len(order):
        return tp, order
    iou = box_iou(np.asarray(pred_xyxy)[order], gt_xyxy)
    taken = np.zeros(len(gt_xyxy), bool)
    for i in range(len(order)):
        candidates = np.where(taken, -1.0, iou[i])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou_thr:
            taken[best] = True
            tp[i] = True
    return tp, order


def class_curve(class_id, predictions, ground_truth, iou_thr=0.5):
    """Precision-recall curve and AP50 of one class over images.

    predictions and ground_truth: lists (one per image) of Detections / (xyxy, class_id) arrays.
    """
    scores, hits, num_gt = [], [], 0
    for det, (gt_xyxy, gt_cls) in zip(predictions, ground_truth):
        gt = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)[np.asarray(gt_cls) == class_id]
        num_gt += len(gt)
        mine = det[det.class_id == class_id]
        tp, order = match_image(mine.xyxy, mine.score, gt, iou_thr)
        scores.append(mine.score[order])
        hits.append(tp)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    hits = np.concatenate(hits) if hits else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    scores, hits = scores[order], hits[order]
    precision, recall = _precision_recall(hits, num_gt)
    return ClassCurve(class_id, _average_precision(precision, recall) if num_gt else float("nan"),
                      precision, recall, scores, hits, num_gt)


def average_precision(hits, num_gt):
    """AP (COCO's 101-point interpolation) of true-positive flags sorted by descending score."""
    return _average_precision(*_precision_recall(np.asarray(hits, bool), num_gt)) if num_gt else float("nan")


def _precision_recall(hits, num_gt):
    tp_cum = np.cumsum(hits)
    return tp_cum / np.maximum(np.arange(1, len(hits) + 1), 1), tp_cum / float(max(num_gt, 1))


def pooled_curve(curves):
    """One precision-recall curve over several classes' detections (e.g. all critical species)."""
    scores = np.concatenate([c.scores for c in curves]) if curves else np.zeros(0)
    hits = np.concatenate([c.tp for c in curves]) if curves else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    num_gt = sum(c.num_gt for c in curves)
    precision, recall = _precision_recall(hits[order], num_gt)
    return ClassCurve(-1, _average_precision(precision, recall) if num_gt else float("nan"),
                      precision, recall, scores[order], hits[order], num_gt)


def _average_precision(precision, recall):
    if not len(precision):
        return 0.0
    # Precision envelope: the best precision at any recall at least this high.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, _RECALL_POINTS, side="left")
    return float(np.mean(np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)))


def evaluate(predictions, ground_truth, num_classes, categories=None, score_thr=0.25, iou_thr=0.5):
    """AP50 per class, mAP50 over classes present, and recall and precision at score_thr per category
    holding ground truth (recall over its present classes' boxes; precision over every box it reported).

    categories: {class_id: "critical"|"important"|"general"} for the per-category figures.
    score_thr: one operating threshold, or one per class (a profile's thresholds). AP is computed
    over every prediction given: pass all fused scores (Pipeline.detect(..., all_scores=True)).
    """
    thresholds = np.broadcast_to(np.asarray(score_thr, dtype=np.float64), (num_classes,))
    curves = [class_curve(c, predictions, ground_truth, iou_thr) for c in range(num_classes)]
    present = [c for c in curves if c.num_gt]
    result = {
        "map50": float(np.mean([c.ap50 for c in present])) if present else float("nan"),
        "ap50": {int(c.class_id): round(float(c.ap50), 5) for c in present},
        "images": len(predictions),
        "gt_boxes": int(sum(c.num_gt for c in curves)),
        "score_thr": float(thresholds[0]) if np.all(thresholds == thresholds[0]) else thresholds.tolist(),
    }
    by_category = collections.defaultdict(lambda: [0, 0, 0])   # found, ground truth, reported
    for c in curves:   # a class absent from the split still reports boxes: false ones, counted in precision
        above = c.scores >= thresholds[c.class_id]
        found = int(round(c.recall[above][-1] * c.num_gt)) if c.num_gt and np.any(above) else 0
        key = (categories or {}).get(c.class_id, "all")
        by_category[key][0] += found
        by_category[key][1] += c.num_gt
        by_category[key][2] += int(np.sum(above))
    scored = sorted((k, v) for k, v in by_category.items() if v[1])   # categories with ground truth
    result["recall_by_category"] = {k: round(v[0] / float(v[1]), 5) for k, v in scored}
    # the share of the category's reported boxes that are true (None: it reported none)
    result["precision_by_category"] = {k: round(v[0] / float(v[2]), 5) if v[2] else None for k, v in scored}
    result["curves"] = curves
    return result
