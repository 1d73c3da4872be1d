"""Per-image uncertainty from per-detection class scores: pure, vectorized functions.

Every strategy gives one value per detection, then `aggregate` folds them into
one value per image (sum, mean or max). Definitions (s is a box's vector of
per-class sigmoid scores, p1 >= p2 its two largest entries, p_max = p1):

- least_confidence: 1 - p_max for boxes with p_max < low_conf, else 0. With
  `sum` an image scores the total missing confidence of its unsure boxes;
  boxes the model is sure of add nothing however many there are.
- entropy: Shannon entropy of q = [s_1, ..., s_nc, 1 - p_max] / sum, divided
  by log(nc + 1) so it lies in 0..1. YOLOv8 scores are independent sigmoids,
  not a distribution, and most of a box's doubt is "object or background",
  which a distribution over classes alone cannot express (for one class it is
  always certain). The background entry 1 - p_max keeps that doubt; for one
  class q = [p, 1 - p] and this is the binary entropy of p in bits.
- margin (Brust et al. 2019): (1 - (p1 - p2))^2. For a one-class model the
  runner-up is the class's own complement, p2 = 1 - p1, so the margin peaks at
  p = 0.5 instead of growing as the score falls.
- disagreement (query by committee, several models): a box of one model scores
  s * (1 - m), where m is the mean over the other models of the best IoU with
  a box of the same class (IoUs under `match_iou` count as 0). A confident box
  the other models miss, misplace or call another class scores high.

Images without detections get `empty_score` (default 0: nothing to doubt).
Raising it ranks empty frames first, e.g. to look for missed animals.
"""
from __future__ import annotations

import numpy as np

from edge.boxes import box_iou
from trainer.errors import TrainerError

STRATEGIES = ("least_confidence", "entropy", "margin", "disagreement")
AGGREGATES = ("sum", "mean", "max")
DEFAULT_LOW_CONF = 0.7
DEFAULT_MATCH_IOU = 0.5


def _scores_matrix(class_scores):
    s = np.asarray(class_scores, dtype=np.float64)
    if s.ndim != 2:
        raise TrainerError("class scores must have shape (boxes, classes); got %s" % (s.shape,))
    return np.clip(s, 0.0, 1.0)


def least_confidence(class_scores, low_conf=DEFAULT_LOW_CONF):
    """(N,) 1 - p_max for boxes under low_conf, 0 for the others."""
    p_max = _scores_matrix(class_scores).max(axis=1, initial=0.0)
    return np.where(p_max < low_conf, 1.0 - p_max, 0.0)


def entropy(class_scores):
    """(N,) normalised entropy of the class scores with a background entry 1 - p_max, in 0..1."""
    s = _scores_matrix(class_scores)
    if s.shape[0] == 0:
        return np.zeros(0)
    q = np.concatenate([s, 1.0 - s.max(axis=1, keepdims=True)], axis=1)
    q = q / np.maximum(q.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
    terms = np.where(q > 0, -q * np.log(np.where(q > 0, q, 1.0)), 0.0)
    return terms.sum(axis=1) / np.log(s.shape[1] + 1)


def margin(class_scores):
    """(N,) Brust et al.'s (1 - (p1 - p2))^2; one class: p2 = 1 - p1."""
    s = _scores_matrix(class_scores)
    if s.shape[0] == 0:
        return np.zeros(0)
    if s.shape[1] == 1:
        p1, p2 = s[:, 0], 1.0 - s[:, 0]
    else:
        top = np.sort(s, axis=1)
        p1, p2 = top[:, -1], top[:, -2]
    return (1.0 - np.abs(p1 - p2)) ** 2


DETECTION_SCORES = {
    "least_confidence": least_confidence,
    "entropy": lambda s, low_conf=None: entropy(s),
    "margin": lambda s, low_conf=None: margin(s),
}


def detection_uncertainty(strategy, class_scores, low_conf=DEFAULT_LOW_CONF):
    """(N,) per-detection values of a confidence-based strategy."""
    if strategy not in DETECTION_SCORES:
        raise TrainerError("strategy %r works on several models' boxes or is unknown; per-detection strategies: %s"
                           % (strategy, ", ".join(DETECTION_SCORES)))
    return DETECTION_SCORES[strategy](class_scores, low_conf=low_conf)


def aggregate(values, image_index, n_images, how="sum", empty_score=0.0):
    """(n_images,) per-image sum/mean/max of per-detection values; images without any get empty_score."""
    if how not in AGGREGATES:
        raise TrainerError("unknown aggregate %r; choose one of %s" % (how, ", ".join(AGGREGATES)))
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    index = np.asarray(image_index, dtype=np.int64).reshape(-1)
    if values.shape != index.shape:
        raise TrainerError("aggregate: %d values but %d image indices" % (values.size, index.size))
    counts = np.bincount(index, minlength=n_images).astype(np.float64)
    if how == "max":
        out = np.full(n_images, -np.inf)
        np.maximum.at(out, index, values)
    else:
        out = np.bincount(index, weights=values, minlength=n_images)
        if how == "mean":
            out = out / np.maximum(counts, 1.0)
    return np.where(counts > 0, out, float(empty_score))


def image_uncertainty(strategy, class_scores, how="sum", low_conf=DEFAULT_LOW_CONF, empty_score=0.0):
    """One image's score from its (N, nc) class scores (N may be 0)."""
    values = detection_uncertainty(strategy, class_scores, low_conf)
    return float(aggregate(values, np.zeros(len(values), np.int64), 1, how, empty_score)[0])


def disagreement_values(boxes, scores, class_ids, match_iou=DEFAULT_MATCH_IOU):
    """Per model, (N_m,) values s * (1 - m) for its boxes against every other model's boxes.

    boxes, scores, class_ids: one array per model ((N_m, 4) xyxy, (N_m,), (N_m,)).
    """
    n_models = len(boxes)
    if n_models < 2:
        raise TrainerError("disagreement needs at least two models' detections; got %d" % n_models)
    out = []
    for a in range(n_models):
        xyxy_a = np.asarray(boxes[a], np.float64).reshape(-1, 4)
        cls_a = np.asarray(class_ids[a]).reshape(-1)
        matched = np.zeros(len(xyxy_a))
        for b in range(n_models):
            if b == a:
                continue
            cls_b = np.asarray(class_ids[b]).reshape(-1)
            iou = box_iou(xyxy_a, np.asarray(boxes[b], np.float64).reshape(-1, 4)).astype(np.float64)
            iou = np.where((cls_a[:, None] == cls_b[None, :]) & (iou >= match_iou), iou, 0.0)
            matched += iou.max(axis=1, initial=0.0)
        out.append(np.asarray(scores[a], np.float64).reshape(-1) * (1.0 - matched / (n_models - 1)))
    return out


def image_disagreement(boxes, scores, class_ids, how="sum", match_iou=DEFAULT_MATCH_IOU, empty_score=0.0):
    """One image's committee disagreement: its per-box values aggregated over all models' boxes."""
    values = np.concatenate(disagreement_values(boxes, scores, class_ids, match_iou))
    return float(aggregate(values, np.zeros(len(values), np.int64), 1, how, empty_score)[0])
