"""mAP50 and mAP50-95 of pipeline detections by a maintained COCO evaluator (faster-coco-eval).

edge.metrics computes mAP50 in pure numpy for the device; this module scores the same
detections with COCO's own code so the bundle's figures can be checked against the
reference implementation (tests/test_coco_eval.py keeps the two within 0.005) and so the
manifest can carry mAP50-95, which edge.metrics does not compute.

COCO conventions applied here: image and category ids start at 1 (class_id + 1), boxes are
[x, y, w, h], every box is non-crowd and its area is w x h. COCO keeps only the `maxDets`
best-scoring detections per image (100 by default); the pipeline returns every fused box
above the decode threshold, so the limit is raised to the largest per-image count, else
COCO would score fewer boxes than edge.metrics.
"""
import logging

import numpy as np

from trainer.errors import TrainerError

logger = logging.getLogger(__name__)
AREA_ALL = 0        # index of COCO's 'all' area range
IOU_50 = 0          # index of IoU 0.50 in COCO's 0.50:0.05:0.95 thresholds
MIN_MAX_DETS = 100  # COCO's default detections per image


def _xywh(xyxy):
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def coco_dicts(predictions, ground_truth, num_classes):
    """(ground-truth dataset dict, detection result list) in COCO's format for the same images."""
    images, annotations, results = [], [], []
    for index, (det, (gt_xyxy, gt_cls)) in enumerate(zip(predictions, ground_truth)):
        image_id = index + 1
        images.append({"id": image_id, "width": 1, "height": 1})  # sizes only matter for segmentation
        for box, cls in zip(_xywh(gt_xyxy), np.asarray(gt_cls).reshape(-1)):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(cls) + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, score, cls in zip(_xywh(det.xyxy), det.score, det.class_id):
            results.append({"image_id": image_id, "category_id": int(cls) + 1, "bbox": [float(v) for v in box],
                            "score": float(score)})
    categories = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def coco_map(predictions, ground_truth, num_classes):
    """{"map50", "map50_95", "max_dets"} of Detections per image against (xyxy, class ids) per image.

    Means over the classes with ground truth (COCO skips the others), as edge.metrics.evaluate does.
    NaN when no image holds a ground-truth box.
    """
    if len(predictions) != len(ground_truth):
        raise TrainerError("COCO evaluation got %d detection lists for %d images; give one per image"
                           % (len(predictions), len(ground_truth)))
    gt, results = coco_dicts(predictions, ground_truth, num_classes)
    max_dets = max([MIN_MAX_DETS] + [len(d) for d in predictions])
    if not gt["annotations"]:
        return {"map50": float("nan"), "map50_95": float("nan"), "max_dets": max_dets}
    precision = _coco_precision(gt, results, max_dets)
    present = sorted(set(a["category_id"] for a in gt["annotations"]))
    columns = [c - 1 for c in present]  # categories are listed in id order, so column = id - 1
    per_iou = precision[:, :, columns, AREA_ALL, -1]  # (IoU thresholds, recall points, classes)
    per_iou = np.where(per_iou < 0, 0.0, per_iou)     # a class with ground truth but no detection scores 0
    ap = per_iou.mean(axis=1)                          # (IoU thresholds, classes)
    return {"map50": float(ap[IOU_50].mean()), "map50_95": float(ap.mean()), "max_dets": max_dets}


def _coco_precision(gt, results, max_dets):
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    coco_dt = coco_gt.loadRes(results) if results else COCO({"images": gt["images"], "annotations": [],
                                                              "categories": gt["categories"]})
    evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=logger.debug)
    evaluator.params.maxDets = [1, 10, max_dets]
    evaluator.evaluate()
    evaluator.accumulate()
    return np.asarray(evaluator.eval["precision"])
