"""Temperatures and operating thresholds fitted on matched detections: pure numpy, no I/O.

Temperature scaling as edge applies it (edge.calibration): p' = sigmoid(logit(p) / T).
T is fitted per class by minimizing the binary log loss of the detections'
confidences against their matched flags (true positive at the IoU threshold,
greedy by score, one detection per ground-truth box: edge.metrics). The loss
is convex in a = 1 / T (logistic regression through the origin on logit(p)),
so its derivative is monotone and a bisection on a finds the minimum inside
T_BOUNDS. Classes with fewer than `min_matches` matched detections share one
temperature fitted on their detections together (on every class's when even
those hold too few matches).

Operating thresholds are chosen per class on the calibrated precision-recall
curve (an edge.metrics ClassCurve): for a critical class the highest
threshold whose recall stays at or above `target` x the best recall any
threshold reaches, among the thresholds whose precision stays at or above a
floor (the best reachable recall sits at the decode threshold, where a weak
class can report ten false boxes for each true one); where the floor rules
the target out, the highest recall it allows, and where no threshold reaches
the floor, maximum F1. For the others the threshold of maximum F1. A class
with no true positive keeps the given default.
"""
import collections

import numpy as np

from edge.calibration import logit, sigmoid
from edge.metrics import class_curve, match_image
from trainer.errors import TrainerError

T_BOUNDS = (0.05, 20.0)  # beyond these a class's scores are either flat at 0.5 or hard 0/1 labels
_BISECTIONS = 80         # halves the search interval in a = 1/T far below any figure reported
_LOSS_EPS = 1e-7         # edge.calibration's clip: the loss of the scores the device computes

TemperatureFit = collections.namedtuple("TemperatureFit", "temperatures matches detections pooled pooled_temperature")
TemperatureFit.__doc__ = """Per class: temperatures, matched and total detection counts; `pooled` lists the
classes that take `pooled_temperature` (None when no class is pooled)."""
OperatingPoint = collections.namedtuple("OperatingPoint", "threshold rule precision recall tp kept num_gt")


def _scores_and_flags(scores, matched):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    matched = np.asarray(matched).reshape(-1)
    if scores.shape != matched.shape:
        raise TrainerError("temperature fit: %d scores for %d matched flags; expected one flag per detection"
                           % (scores.size, matched.size))
    return scores, matched.astype(np.float64)


def log_loss(scores, matched):
    """Mean binary log loss of confidences against matched flags (NaN without detections)."""
    p, y = _scores_and_flags(scores, matched)
    if not p.size:
        return float("nan")
    p = np.clip(p, _LOSS_EPS, 1.0 - _LOSS_EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


def fit_temperature(scores, matched, bounds=T_BOUNDS):
    """The T in `bounds` minimizing the log loss of sigmoid(logit(scores) / T); 1.0 without detections."""
    p, y = _scores_and_flags(scores, matched)
    z = logit(p)
    if not z.size or not np.any(z):
        return 1.0

    def slope(a):  # d(mean log loss) / da, increasing in a
        return float(np.mean((sigmoid(a * z) - y) * z))

    lo, hi = 1.0 / bounds[1], 1.0 / bounds[0]
    if slope(lo) >= 0.0:
        return float(bounds[1])
    if slope(hi) <= 0.0:
        return float(bounds[0])
    for _ in range(_BISECTIONS):
        mid = 0.5 * (lo + hi)
        if slope(mid) > 0.0:
            hi = mid
        else:
            lo = mid
    return float(2.0 / (lo + hi))


def fit_class_temperatures(scores, matched, class_id, num_classes, min_matches, bounds=T_BOUNDS):
    """TemperatureFit of every class from all of one profile's detections (scores, matched flags, class ids)."""
    scores, matched = _scores_and_flags(scores, matched)
    class_id = np.asarray(class_id, dtype=np.int64).reshape(-1)
    if class_id.shape != scores.shape:
        raise TrainerError("temperature fit: %d class ids for %d scores" % (class_id.size, scores.size))
    detections = np.bincount(class_id, minlength=num_classes)[:num_classes]
    matches = np.bincount(class_id, weights=matched, minlength=num_classes)[:num_classes].astype(np.int64)
    temperatures = np.ones(num_classes)
    rare = [c for c in range(num_classes) if matches[c] < min_matches]
    for c in range(num_classes):
        if c not in rare:
            mine = class_id == c
            temperatures[c] = fit_temperature(scores[mine], matched[mine], bounds)
    pooled_t = None
    if rare:
        pool = np.isin(class_id, rare)
        if matched[pool].sum() < min_matches:
            pool = np.ones_like(pool)  # the rare classes together are still too thin: every detection decides
        pooled_t = fit_temperature(scores[pool], matched[pool], bounds)
        temperatures[rare] = pooled_t
    return TemperatureFit(temperatures.tolist(), matches.tolist(), detections.tolist(), rare, pooled_t)


def _group_ends(curve):
    """Indices closing each run of equal scores in a ClassCurve (a threshold keeps whole runs)."""
    scores = np.asarray(curve.scores)
    if not scores.size:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.append(scores[1:] != scores[:-1], True))


def _point(curve, index, rule):
    tp = int(np.sum(curve.tp[:index + 1]))
    kept = int(index + 1)
    return OperatingPoint(float(curve.scores[index]), rule, tp / float(kept),
                          tp / float(curve.num_gt) if curve.num_gt else 0.0, tp, kept, int(curve.num_gt))


def critical_threshold(curve, target, min_precision=0.0):
    """OperatingPoint at the highest threshold keeping recall >= target x the best reachable, among the
    thresholds whose precision is at least `min_precision`; where the floor puts that recall out of reach,
    the highest recall the floor allows. None if no TP, or if no threshold reaches the floor."""
    ends = _group_ends(curve)
    if not ends.size or not curve.num_gt or not np.any(curve.tp):
        return None
    tp = np.cumsum(curve.tp)[ends]
    recall, precision = tp / float(curve.num_gt), tp / (ends + 1.0)
    allowed = precision >= float(min_precision) - 1e-12
    if not allowed.any():
        return None
    wanted = float(target) * recall[-1]
    meets = np.flatnonzero(allowed & (recall >= wanted - 1e-12))
    rule = "recall >= %.2f x best %.4f" % (target, recall[-1])
    if meets.size:
        floor = ", precision >= %.2f" % min_precision if min_precision > 0 else ""
        return _point(curve, int(ends[meets[0]]), rule + floor)
    # recall only grows down the curve: the first allowed point of the highest allowed recall keeps the floor
    best = np.flatnonzero(allowed & (recall >= recall[allowed].max() - 1e-12))[0]
    return _point(curve, int(ends[best]), "precision >= %.2f (caps recall below the target %.4f)"
                  % (min_precision, wanted))


def max_f1_threshold(curve):
    """OperatingPoint at the threshold of maximum F1 (the highest of equals); None if no TP."""
    ends = _group_ends(curve)
    if not ends.size or not curve.num_gt or not np.any(curve.tp):
        return None
    tp = np.cumsum(curve.tp)[ends]
    f1 = 2.0 * tp / ((ends + 1) + float(curve.num_gt))
    return _point(curve, int(ends[int(np.argmax(f1))]), "max F1")


def point_at(curve, threshold, rule):
    """OperatingPoint of the detections scoring >= threshold."""
    kept = int(np.sum(np.asarray(curve.scores) >= threshold))
    tp = int(np.sum(curve.tp[:kept]))
    return OperatingPoint(float(threshold), rule, tp / float(kept) if kept else 0.0,
                          tp / float(curve.num_gt) if curve.num_gt else 0.0, tp, kept, int(curve.num_gt))


def choose_thresholds(curves, categories, target, defaults, min_precision=0.0):
    """An OperatingPoint per class: the critical rule (recall target under the precision floor) for critical
    classes, max F1 for the others and for a critical class whose precision never reaches the floor,
    `defaults[c]` where a class has no true positive to choose by."""
    points = []
    for curve in curves:
        c = int(curve.class_id)
        critical = categories.get(c) == "critical"
        chosen = critical_threshold(curve, target, min_precision) if critical else None
        if chosen is None:
            chosen = max_f1_threshold(curve)
            if chosen is not None and critical:
                chosen = chosen._replace(rule="max F1 (precision never reaches %.2f)" % min_precision)
        points.append(chosen or point_at(curve, float(defaults[c]), "default (no true positive)"))
    return points


def category_points(points, categories, names=("critical", "important", "general")):
    """Pooled precision and recall per category (and 'overall') of per-class OperatingPoints."""
    out = {}
    for name in tuple(names) + ("overall",):
        chosen = [p for c, p in enumerate(points) if name == "overall" or categories.get(c) == name]
        tp, kept, num_gt = (sum(getattr(p, k) for p in chosen) for k in ("tp", "kept", "num_gt"))
        if chosen:
            out[name] = {"precision": tp / float(kept) if kept else None,
                         "recall": tp / float(num_gt) if num_gt else None, "tp": tp, "kept": kept, "gt": num_gt}
    return out


def matched_flags(detections, ground_truth, iou_thr):
    """Matched flag of each detection of one image, in its own order (edge.metrics.match_image per class)."""
    gt_xyxy = np.asarray(ground_truth[0], np.float32).reshape(-1, 4)
    gt_cls = np.asarray(ground_truth[1]).reshape(-1)
    flags = np.zeros(len(detections), bool)
    for c in np.unique(detections.class_id):
        mine = np.flatnonzero(detections.class_id == c)
        tp, order = match_image(detections.xyxy[mine], detections.score[mine], gt_xyxy[gt_cls == c], iou_thr)
        flags[mine[order]] = tp
    return flags


def curves_of(predictions, ground_truth, num_classes, iou_thr):
    """edge.metrics ClassCurves of every class (the matching the device's figures use)."""
    return [class_curve(c, predictions, ground_truth, iou_thr) for c in range(num_classes)]


def category_figures(scores, matched, class_id, categories, bins, names=("critical", "important", "general")):
    """({category: D-ECE}, {category: log loss}) of detections, per category holding any and 'overall'."""
    from trainer.detection_ece import detection_ece

    scores = np.asarray(scores, np.float64).reshape(-1)
    matched, class_id = np.asarray(matched).reshape(-1), np.asarray(class_id).reshape(-1)
    masks = [(n, np.isin(class_id, [c for c, v in categories.items() if v == n])) for n in names]
    d_ece, loss = {}, {}
    for name, mask in masks + [("overall", np.ones(class_id.shape, bool))]:
        if mask.any():
            d_ece[name] = detection_ece(scores[mask], matched[mask], bins)
            loss[name] = log_loss(scores[mask], matched[mask])
    return d_ece, loss


def calibration_change(before, after, bins):
    """D-ECE and log loss before and after: ({"before": {...}, "after": {...}}, same for log loss), from
    category_figures inputs (scores, matched, class_id, categories) of each state."""
    d_ece, loss = {}, {}
    for state, (scores, matched, class_id, categories) in (("before", before), ("after", after)):
        d_ece[state], loss[state] = category_figures(scores, matched, class_id, categories, bins)
    return d_ece, loss
