"""Is a richer inference profile's mAP50 below a cheaper one's beyond what the images explain?

A paired bootstrap over images: both profiles' detections on the same resampled
images (each image drawn with replacement, its boxes and ground truth together),
mAP50 of each, their difference; repeated `rounds` times. The matching of
detections to ground truth is per image, so it is done once and each round only
re-weights images (edge.metrics' matching and AP, the same figures as the bundle).

The ladder single <= ensemble <= ensemble_flip <= ensemble_full holds within noise
for a pair when the upper end of the difference's interval is at or above 0: the
richer profile is not measurably worse. A validation split of ~100 images gives
intervals about +-0.02 wide, so "within noise" is a statement about this split,
not a proof that the richer profile is better.
"""
import numpy as np

from edge.metrics import average_precision, match_image

LADDER = ("single", "ensemble", "ensemble_flip", "ensemble_full")


def matched_by_class(predictions, ground_truth, num_classes, iou_thr=0.5):
    """{class: (image index, score, true positive) of every detection}, ground-truth counts (images, classes)."""
    per_class = {c: ([], [], []) for c in range(num_classes)}
    gt_counts = np.zeros((len(ground_truth), num_classes), np.int64)
    for i, (det, (gt_xyxy, gt_cls)) in enumerate(zip(predictions, ground_truth)):
        gt_xyxy = np.asarray(gt_xyxy, np.float32).reshape(-1, 4)
        gt_cls = np.asarray(gt_cls).astype(np.int64)
        gt_counts[i] = np.bincount(gt_cls, minlength=num_classes)[:num_classes]
        for c in np.unique(np.concatenate([det.class_id, gt_cls]).astype(np.int64)):
            mine = det[det.class_id == c]
            tp, order = match_image(mine.xyxy, mine.score, gt_xyxy[gt_cls == c], iou_thr)
            images, scores, hits = per_class[int(c)]
            images.append(np.full(len(order), i))
            scores.append(mine.score[order])
            hits.append(tp)
    joined = {c: tuple(np.concatenate(parts) if parts else np.zeros(0) for parts in lists)
              for c, lists in per_class.items()}
    return joined, gt_counts


def map50_weighted(matched, gt_counts, image_weights):
    """mAP50 over the classes with ground truth when image i counts image_weights[i] times."""
    num_gt = image_weights @ gt_counts
    aps = []
    for c, (images, scores, hits) in matched.items():
        if num_gt[c] == 0:
            continue
        repeat = image_weights[images.astype(np.int64)] if len(images) else np.zeros(0, np.int64)
        s, h = np.repeat(scores, repeat), np.repeat(hits.astype(bool), repeat)
        order = np.argsort(-s, kind="stable")
        aps.append(average_precision(h[order], int(num_gt[c])))
    return float(np.mean(aps)) if aps else float("nan")


def paired_difference(richer, cheaper, ground_truth, num_classes, rounds=300, level=0.9, seed=0):
    """{difference, interval, holds}: mAP50(richer) - mAP50(cheaper) on all images, and its bootstrap interval."""
    a, counts = matched_by_class(richer, ground_truth, num_classes)
    b, _ = matched_by_class(cheaper, ground_truth, num_classes)
    n = len(ground_truth)
    ones = np.ones(n, np.int64)
    rng = np.random.RandomState(seed)
    diffs = []
    for _ in range(rounds):
        weights = np.bincount(rng.randint(0, n, n), minlength=n)
        diffs.append(map50_weighted(a, counts, weights) - map50_weighted(b, counts, weights))
    diffs = np.asarray(diffs)
    diffs = diffs[diffs == diffs]
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = (np.percentile(diffs, [tail, 100.0 - tail]) if len(diffs) else (float("nan"),) * 2)
    return {"difference": map50_weighted(a, counts, ones) - map50_weighted(b, counts, ones),
            "interval": [float(low), float(high)], "level": level, "rounds": rounds, "holds": bool(high >= 0.0)}


def ladder_checks(predictions, ground_truth, num_classes, rounds=300):
    """{profile: paired_difference against the previous profile of LADDER}, for the profiles measured."""
    measured = [p for p in LADDER if p in predictions]
    return {richer: dict(paired_difference(predictions[richer], predictions[cheaper], ground_truth, num_classes,
                                           rounds), than=cheaper)
            for cheaper, richer in zip(measured, measured[1:])}
