"""Weighted boxes fusion (WBF): an exact, faster drop-in for ``ensemble_boxes`` 1.0.9.

``weighted_boxes_fusion`` takes the same arguments and returns the same
``(boxes, scores, labels)`` float64 arrays, in the same order, as
``ensemble_boxes.weighted_boxes_fusion`` 1.0.9: bit for bit on the random
cases of tests/test_fusion.py, float32 rounding and score ties included.
WBF is sequential: each box, in descending score order within its label,
joins the current cluster of highest IoU, whose fused box then moves. We keep
that order and every float operation, and make each step cheap: up to
``fusion_small.MAX_BOXES`` clean boxes go through plain Python floats
(``edge/fusion_small.py``); larger inputs are prefiltered and sorted with
numpy, boxes that provably never share a cluster become clusters of one
without a Python step, and the rest run 1.0.9's loop against a grid of
cluster centres (``edge/fusion_cluster.py``, which proves both pruning rules);
a running float32 sum replaces 1.0.9's re-summing of the whole cluster (same
additions, same order, same result). Where the C library of ``edge.native`` is
built, the whole fusion of clean-typed numpy input runs in one C call
(``edge/native/wbf.py``: prefilter, per-label sort, that loop, rescale, final
sort); what it declines (ties within a label, odd values or types) takes the
path above, with that loop in C (same loop, same values) and no pre-pass. Where numpy's scalar rules changed
(NEP 50: float32 score vs thr, float32 weights, float32 / float64 division)
we follow the installed numpy, so results match 1.0.9 under numpy 1.19 and 2.x.

Deliberate differences from 1.0.9: bad input raises ``FusionInputError`` (a
``ValueError``) where 1.0.9 prints and exits or silently resets the weights;
NaN boxes, non-finite scores or labels, non-finite or negative weights,
negative scores kept by ``skip_box_thr`` and a negative ``iou_thr`` are
rejected because 1.0.9 returns garbage for them; out-of-range and reversed boxes are clipped and swapped as in
1.0.9 but reported by one aggregated ``logging`` warning per call.

Two-stage fusion for a 3-model ensemble with TTA (``edge/pipeline.py``): we
fuse each model's TTA views first, then the three fused models. With 'avg' a
cluster's score is scaled by min(n_lists, n_boxes) / sum(weights), so in one
flat fusion over 3 x V lists a box seen by every model but missed in some
views would lose a share for each missed view; fusing views first turns them
into one vote per model, and only a model that misses the object lowers it.
"""
import functools
import logging

import numpy as np

from edge import native
from edge.detections import Detections
from edge.errors import FusionInputError  # noqa: F401 (importable from here, as before)
from edge.fusion_cluster import cluster_rows
from edge.fusion_small import MAX_BOXES, fuse_small
from edge.native import wbf as native_wbf

logger = logging.getLogger(__name__)

CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")

_F32_MAX = float(np.finfo(np.float32).max)


def weighted_boxes_fusion(boxes_list, scores_list, labels_list, weights=None, iou_thr=0.55,
                          skip_box_thr=0.0, conf_type="avg", allows_overflow=False):
    """Fuse per-list boxes (normalized xyxy in [0, 1]) into one set, as ensemble_boxes 1.0.9.

    Returns ``(boxes (N, 4), scores (N,), labels (N,))`` float64 arrays sorted by
    descending score.
    """
    kernels = native.active()
    if kernels is not None:
        fused = native_wbf.fuse(kernels, boxes_list, scores_list, labels_list, weights, iou_thr, skip_box_thr,
                                conf_type, allows_overflow, _WEAK_SCALARS, _F32_DIVISOR)
        if fused is not None:
            return _split_native(*fused)
    unit_weights = weights is None
    weights = _check_arguments(boxes_list, scores_list, labels_list, weights, iou_thr, conf_type)
    if sum(len(b) for b in boxes_list) <= MAX_BOXES:
        fused = fuse_small(boxes_list, scores_list, labels_list, weights, float(iou_thr), skip_box_thr, conf_type,
                           allows_overflow, _weak_scalars(), _f32_divisor(), unit_weights)
        if fused is not None:
            return fused
    table = _prefilter(boxes_list, scores_list, labels_list, weights, skip_box_thr)
    if table is None:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,))
    rows, groups = _sort_by_label_and_score(table)
    clusters = cluster_rows(rows, groups, float(iou_thr), _f32_divisor())
    boxes, scores, labels = _fused_rows(rows, clusters, weights, conf_type, allows_overflow)
    # Same call as 1.0.9 on the same values, so ties come out in the same order.
    order = scores.argsort()[::-1]
    return boxes[order], scores[order], labels[order]


def _split_native(fused, fixes, ordered):
    """(boxes, scores, labels) of edge.native's fused records: float64 views, as 1.0.9 returns views of its table."""
    if fixes is not None:
        _warn_fixes(fixes)
    if not ordered:  # scores tie: 1.0.9's argsort on the same values orders them
        fused = fused[fused["score"].argsort()[::-1]]
    return fused["box"], fused["score"], fused["label"]


def fuse_detections(detections_list, frame_wh, weights=None, iou_thr=0.55, skip_box_thr=0.0,
                    conf_type="avg"):
    """Fuse ``Detections`` records in frame pixels into one record in frame pixels."""
    scale = _frame_scale(frame_wh)
    boxes, scores, labels = weighted_boxes_fusion(
        # A fused box can sit an ulp past the frame edge; clip so a second stage sees [0, 1].
        [np.clip(d.xyxy / scale, 0.0, 1.0) for d in detections_list], [d.score for d in detections_list],
        [d.class_id for d in detections_list], weights=weights, iou_thr=iou_thr,
        skip_box_thr=skip_box_thr, conf_type=conf_type)
    return Detections(boxes * scale, scores, labels.astype(np.int32))


def fuse_concatenated(xyxy, score, class_id, counts, frame_wh, weights=None, iou_thr=0.55, skip_box_thr=0.0,
                      conf_type="avg"):
    """``fuse_detections`` of records given concatenated (float32 xyxy in frame pixels, score, class_id)
    with each record's count (``edge.tta.views_to_frame``): the same result, with one normalization."""
    scale = _frame_scale(frame_wh)
    bounds = np.cumsum(counts)[:-1]
    boxes, scores, labels = weighted_boxes_fusion(
        np.split(np.clip(np.asarray(xyxy, dtype=np.float32) / scale, 0.0, 1.0), bounds),
        np.split(np.asarray(score, dtype=np.float32), bounds), np.split(np.asarray(class_id, dtype=np.int32), bounds),
        weights=weights, iou_thr=iou_thr, skip_box_thr=skip_box_thr, conf_type=conf_type)
    return Detections(boxes * scale, scores, labels.astype(np.int32))


def _frame_scale(frame_wh):
    width, height = (float(v) for v in frame_wh)
    if not (width > 0 and height > 0):
        raise FusionInputError("frame_wh must be positive (width, height) in pixels, got %r" % (frame_wh,))
    return np.array([width, height, width, height])


@functools.lru_cache(maxsize=None)
def _f32_divisor():
    """Whether numpy divides a float32 array by a float64 scalar in float32, as 1.0.9's
    ``box[4:] /= conf`` does under numpy < 2's value-based casting."""
    return np.result_type(np.zeros(1, np.float32), np.float64(1.0)) == np.float32


@functools.lru_cache(maxsize=None)
def _weak_scalars():
    """Whether a Python float takes a numpy scalar's type (numpy >= 2, NEP 50): then 1.0.9's
    ``score < thr`` compares a float32 score in float32 and ``float(score) * weight``
    keeps a float32 weight's type; under numpy < 2 both are float64."""
    return type(np.float32(1) + 1.0) is np.float32


_F32_DIVISOR, _WEAK_SCALARS = _f32_divisor(), _weak_scalars()  # numpy's rules, fixed per process


def _check_arguments(boxes_list, scores_list, labels_list, weights, iou_thr, conf_type):
    if conf_type not in CONF_TYPES:
        raise FusionInputError("conf_type must be one of %s, got %r" % (", ".join(CONF_TYPES), conf_type))
    n_lists = len(boxes_list)
    if len(scores_list) != n_lists or len(labels_list) != n_lists:
        raise FusionInputError("boxes_list, scores_list and labels_list must have the same length, "
                               "got %d, %d, %d" % (n_lists, len(scores_list), len(labels_list)))
    if not iou_thr >= 0:
        raise FusionInputError("iou_thr must be >= 0, got %r" % (iou_thr,))
    if weights is None:
        return np.ones(n_lists)
    weights = np.array(weights)
    if weights.shape != (n_lists,):
        raise FusionInputError("weights must hold one number per list (%d), got shape %s"
                               % (n_lists, weights.shape))
    if weights.dtype.kind not in "biuf" or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise FusionInputError("weights must be finite numbers >= 0, got %r" % (weights.tolist(),))
    return weights


def _prefilter(boxes_list, scores_list, labels_list, weights, thr):
    """One (N, 8) float64 table [label, weighted score, weight, list, x1, y1, x2, y2] of usable boxes.

    Rows stay in (list, box) order, as 1.0.9 appends them, because that order
    decides how score ties are broken. Returns None when no box is left.
    """
    lists = [_list_arrays(boxes_list[t], scores_list[t], labels_list[t], t) for t in range(len(boxes_list))]
    if not lists:
        return None
    boxes, scores, labels = (np.concatenate(column) for column in zip(*lists))
    model = np.repeat(np.arange(len(lists)), [len(b) for b, _, _ in lists])
    _check_values(boxes, scores, labels, model)
    # 1.0.9 skips `score < thr` on numpy scalars: in each list's own score dtype
    # under numpy >= 2, in float64 (or wider) under numpy < 2.
    if not _weak_scalars():
        keep = ~(scores.astype(np.result_type(scores.dtype, np.float64)) < thr)
    elif len(set(s.dtype for _, s, _ in lists)) == 1:
        keep = ~(scores < thr)
    else:
        keep = np.concatenate([~(s < thr) for _, s, _ in lists])
    scores = scores.astype(np.float64)
    if np.any(scores[keep] < 0):
        raise FusionInputError("scores_list[%d] has negative scores that pass skip_box_thr=%r"
                               % (model[np.argmax(keep & (scores < 0))], thr))
    boxes, fixes = _fix_boxes(boxes[keep])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    nonzero = area != 0.0
    _warn_fixes(fixes + [len(area) - np.count_nonzero(nonzero)])
    keep[keep] = nonzero
    if not keep.any():
        return None
    model = model[keep]
    table = np.empty((len(model), 8))
    table[:, 0] = np.trunc(labels[keep])  # int(label)
    # 1.0.9 computes float(score) * weights[t]: a float32 weight keeps float32 under numpy >= 2.
    product = np.result_type(weights.dtype, 0.0) if _weak_scalars() else np.float64
    table[:, 1] = scores[keep].astype(product) * weights[model].astype(product)
    table[:, 2] = weights[model]
    table[:, 3] = model
    table[:, 4:] = boxes[nonzero]
    if not np.sum(table[:, 1]) < _F32_MAX:
        raise FusionInputError("the sum of weighted scores must stay within float32 range")
    return table


def _list_arrays(boxes, scores, labels, t):
    boxes = np.asarray(boxes, dtype=np.float64)
    scores = np.asarray(scores)
    labels = np.asarray(labels, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise FusionInputError("boxes_list[%d] must have shape (N, 4), got %s" % (t, boxes.shape))
    if scores.dtype.kind not in "biuf" or scores.ndim != 1:
        scores = scores.astype(np.float64).reshape(-1)
    if len(scores) != len(boxes):
        raise FusionInputError("scores_list[%d] has %d scores for %d boxes" % (t, len(scores), len(boxes)))
    if labels.ndim != 1 or len(labels) != len(boxes):
        raise FusionInputError("labels_list[%d] has shape %s for %d boxes" % (t, labels.shape, len(boxes)))
    return boxes, scores, labels


def _check_values(boxes, scores, labels, model):
    bad = np.isnan(boxes).any(axis=1) | ~np.isfinite(scores) | ~np.isfinite(labels)
    if bad.any():
        t = model[np.argmax(bad)]
        raise FusionInputError("boxes_list[%d], scores_list[%d] or labels_list[%d] holds NaN or inf "
                               "(only boxes may be +-inf, they are clipped to [0, 1])" % (t, t, t))


_BOX_FIXES = ("x2 < x1 (swapped)", "y2 < y1 (swapped)", "a coordinate < 0 (set to 0)",
              "a coordinate > 1 (set to 1, are boxes normalized to [0, 1]?)")


def _fix_boxes(boxes):
    """Swap reversed corners, then clip to [0, 1], in 1.0.9's order; also count each fix."""
    x1, y1, x2, y2 = boxes.T
    if len(boxes) and boxes.min() >= 0 and boxes.max() <= 1 and not (x2 < x1).any() and not (y2 < y1).any():
        return boxes, [0, 0, 0, 0]  # already clean (the pipeline's boxes are): nothing to swap or clip
    swap_x = x2 < x1
    swap_y = y2 < y1
    x1, x2 = np.where(swap_x, x2, x1), np.where(swap_x, x1, x2)
    y1, y2 = np.where(swap_y, y2, y1), np.where(swap_y, y1, y2)
    fixed = np.stack([x1, y1, x2, y2], axis=1)
    low = fixed < 0
    high = fixed > 1
    fixed = np.where(low, 0.0, np.where(high, 1.0, fixed))
    counts = [np.count_nonzero(swap_x), np.count_nonzero(swap_y),
              np.count_nonzero(low.any(axis=1)), np.count_nonzero(high.any(axis=1))]
    return fixed, counts


def _warn_fixes(counts):
    """One warning per call for boxes that had to be fixed; zero-area boxes alone only at DEBUG: the
    pipeline clips each view's boxes to the frame, and a box wholly off a cropped view ends with no area."""
    parts = ["%d boxes had %s" % (n, what) for n, what in zip(counts[:-1], _BOX_FIXES) if n]
    skipped = "%d zero-area boxes were skipped" % counts[-1] if counts[-1] else ""
    if parts:
        logger.warning("weighted_boxes_fusion: %s", "; ".join(parts + ([skipped] if skipped else [])))
    elif skipped:
        logger.debug("weighted_boxes_fusion: %s", skipped)


def _sort_by_label_and_score(table):
    """Rows grouped by label in order of first appearance, each group by descending score.

    Returns the sorted table and the (start, end) row range of each label.
    """
    labels = table[:, 0]
    uniques, first = np.unique(labels, return_index=True)
    by_label = np.argsort(labels, kind="stable")
    bounds = np.append(np.searchsorted(labels[by_label], uniques), len(labels))
    order, groups, start = [], [], 0
    for k in np.argsort(first):
        rows = by_label[bounds[k]:bounds[k + 1]]
        # 1.0.9 sorts each label's rows with this exact call; ties depend on it.
        order.append(rows[table[rows, 1].argsort()[::-1]])
        groups.append((start, start + len(rows)))
        start += len(rows)
    return table[np.concatenate(order)], groups


def _fused_rows(rows, clusters, weights, conf_type, allows_overflow):
    """Each cluster's fused box, rescaled score and label, in cluster order."""
    first, merged, count = clusters.first, clusters.merged, clusters.count
    # 1.0.9 stores a merged cluster's box, score, weight and label in a float32
    # array; a cluster of one box keeps its float64 row.
    boxes = rows[first, 4:]
    values = clusters.values
    boxes[merged] = values[:, 5:]
    score = rows[first, 1]  # rows are sorted: the first member holds the max
    if conf_type != "max":
        with np.errstate(invalid="ignore", divide="ignore"):
            score[merged] = values[:, 4] / count[merged]
    score[merged] = score[merged].astype(np.float32)
    labels = rows[first, 0]
    labels[merged] = labels[merged].astype(np.float32)
    wsum = rows[first, 2]
    if conf_type in ("box_and_model_avg", "absent_model_aware_avg"):
        wsum[merged] = clusters.wsum.astype(np.float32)
    score = _rescale(score, wsum, count, clusters, rows, weights, conf_type, allows_overflow)
    return boxes, score, labels


def _rescale(score, wsum, count, clusters, rows, weights, conf_type, allows_overflow):
    """1.0.9's final confidence rescale: the same float64 operations in the same order."""
    if conf_type == "max":
        return score / weights.max()
    if conf_type == "avg":
        n_boxes = count if allows_overflow else np.minimum(len(weights), count)
        return score * n_boxes / weights.sum()
    present, absent = _list_weight_sums(clusters, count, rows[:, 3], weights)
    if conf_type == "box_and_model_avg":
        return score * count / wsum * present / weights.sum()
    return score * count / (wsum + absent)


def _list_weight_sums(clusters, count, row_list, weights):
    """Per cluster: the summed weight of the lists it has boxes from, and of those it lacks.

    1.0.9 sums each with numpy over the sorted list indices. Whole-number
    weights (the default) sum exactly in any order, so one bincount does;
    other weights are summed as 1.0.9 does, once per distinct set of lists.
    """
    n_lists, n_clusters = len(weights), len(count)
    pairs = np.unique(clusters.row_cluster * n_lists + row_list.astype(np.int64))
    cluster, model = pairs // n_lists, pairs % n_lists
    if np.all(weights == np.round(weights)) and weights.sum() < 2 ** 24:
        present = np.bincount(cluster, weights=weights[model].astype(np.float64), minlength=n_clusters)
        return present, weights.sum() - present
    present, absent, cache = np.empty(n_clusters), np.empty(n_clusters), {}
    bounds = np.searchsorted(cluster, np.arange(n_clusters + 1))
    for i in range(n_clusters):
        models = tuple(model[bounds[i]:bounds[i + 1]].tolist())
        if models not in cache:
            mask = np.ones(n_lists, dtype=bool)
            mask[list(models)] = False
            cache[models] = (weights[~mask].astype(np.float64).sum(), weights[mask].sum())
        present[i], absent[i] = cache[models]
    return present, absent
