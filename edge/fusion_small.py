"""Weighted boxes fusion of a few boxes on plain Python floats (``edge.fusion``'s small-input path).

With a few boxes, numpy's per-call cost is most of a call, so this path
follows 1.0.9 step by step on Python floats and builds numpy arrays only for
the result. It takes only clean input: numpy arrays, boxes already inside
[0, 1] with x1 <= x2 and y1 <= y2 and non-zero area, finite non-negative
scores, labels float32 can hold; anything else returns None and goes the
general way, which validates, repairs and warns. Sorting: a label's rows and
the result are ordered by numpy's argsort as in 1.0.9 when scores tie (its
order of ties is its own) and by Python's sort otherwise (same order).
"""
import array
import itertools
import struct

import numpy as np

from edge import native
from edge.fusion_cluster import cluster_plain

MAX_BOXES = 160
NATIVE_MIN_BOXES = 32  # below, a native call costs about what the Python loop does
_F32_EXACT = 2 ** 24


def fuse_small(boxes_list, scores_list, labels_list, weights, iou_thr, skip_box_thr, conf_type,
               allows_overflow, weak_scalars, f32_divisor, unit_weights=False):
    """1.0.9's (boxes, scores, labels) for small clean input, or None to take the general path.

    ``weights`` is the checked weight array (float32 weights go the general way);
    ``weak_scalars``: numpy compares a float32 score with a Python float in
    float32 (numpy >= 2); ``f32_divisor``: see ``edge.fusion_cluster.cluster_rows``;
    ``unit_weights``: the weights are the default ones, which sum to their count exactly.
    """
    if weights.dtype.kind not in "iuf" or (weights.dtype.kind == "f" and weights.dtype.itemsize < 8):
        return None
    per_label = _rows(boxes_list, scores_list, labels_list, weights.tolist(), skip_box_thr, weak_scalars)
    if per_label is None:
        return None
    if not per_label:
        return np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,))
    ordered = [[label_rows[i] for i in _descending([r[1] for r in label_rows])] for label_rows in per_label.values()]
    kernels = native.active() if iou_thr > 0 and sum(len(r) for r in ordered) >= NATIVE_MIN_BOXES else None
    if kernels is not None and all(r[-1][1] > 0.0 for r in ordered):
        out = _clusters_native(kernels, ordered, iou_thr, f32_divisor, conf_type)
    else:
        out = []  # per cluster: box, score, label, weight sum, member lists, count
        for rows in ordered:
            if len(rows) == 1:  # a label's only box is a cluster of one
                r = rows[0]
                out.append((r[4:], r[1], float(r[0]), r[2], (r[3],), 1))
                continue
            seeds, merged = [], {}
            cluster_plain(rows, 0, iou_thr, True, f32_divisor, seeds, merged)
            for seed in seeds:
                _fused(rows, seed, merged.get(seed), conf_type, out)
    return _result(out, weights, conf_type, allows_overflow, unit_weights)


def _clusters_native(kernels, ordered, iou_thr, f32_divisor, conf_type):
    """Every label's clusters from one call of the native loop, as ``_fused`` leaves them."""
    rows, bounds = [], []
    for label_rows in ordered:
        bounds += [len(rows), len(rows) + len(label_rows)]
        rows += label_rows
    row_cluster, first, count, wsum, values = kernels.wbf_cluster(_float64_array(rows, 8), bounds, iou_thr,
                                                                  f32_divisor)
    models = [[] for _ in range(len(first))]
    if conf_type in ("box_and_model_avg", "absent_model_aware_avg"):
        for r, ci in zip(rows, row_cluster.tolist()):
            models[ci].append(r[3])
    out = []
    for i, (seed, n, w, v) in enumerate(zip(first.tolist(), count.tolist(), wsum.tolist(), values.tolist())):
        r = rows[seed]
        if n == 1:
            out.append((r[4:], r[1], float(r[0]), r[2], (r[3],), 1))
        else:
            score = _f32(r[1] if conf_type == "max" else v[4] / n)
            out.append((v[5:], score, float(r[0]), _f32(w), models[i], n))
    return out


def _rows(boxes_list, scores_list, labels_list, weights, thr, weak_scalars):
    """Per label (in order of first appearance) its rows [label, score * weight, weight, list, x1, y1, x2, y2]."""
    per_label, n = {}, 0
    for t, (boxes, scores, labels) in enumerate(zip(boxes_list, scores_list, labels_list)):
        if not (type(boxes) is np.ndarray and type(scores) is np.ndarray and type(labels) is np.ndarray):
            return None
        if boxes.size == 0 and scores.size == 0 and labels.size == 0:
            continue
        if (boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 1 or labels.ndim != 1
                or not len(boxes) == len(scores) == len(labels) or boxes.dtype.kind != "f"
                or scores.dtype.char not in "fd" or not scores.dtype.isnative  # chars: no dtype building
                or labels.dtype.kind not in "iuf"):
            return None
        n += len(boxes)
        if n > MAX_BOXES:
            return None
        # 1.0.9 compares a numpy score with thr: in float32 for float32 scores under numpy >= 2.
        cut = _f32(thr) if weak_scalars and scores.dtype.char == "f" else thr
        w = weights[t]
        for (x1, y1, x2, y2), s, label in zip(boxes.tolist(), scores.tolist(), labels.tolist()):
            if not 0.0 <= s <= 1e30:
                return None
            if s < cut:
                continue
            if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0) or (x2 - x1) * (y2 - y1) == 0.0:
                return None
            if not -_F32_EXACT <= label <= _F32_EXACT:
                return None
            label = int(label)
            row = [label, s * w, w, t, x1, y1, x2, y2]
            if label in per_label:
                per_label[label].append(row)
            else:
                per_label[label] = [row]
    return per_label


def _descending(values):
    """Indices by descending value, as numpy's ``argsort()[::-1]`` orders them."""
    if len(values) < 2:
        return list(range(len(values)))
    if len(set(values)) < len(values):
        return np.argsort(values)[::-1].tolist()
    return sorted(range(len(values)), key=values.__getitem__, reverse=True)


_F32 = struct.Struct("=f")


def _f32(x):
    """x rounded to float32, as float(np.float32(x)) but without numpy's scalar cost."""
    try:
        return _F32.unpack(_F32.pack(x))[0]
    except OverflowError:  # struct refuses what float32 rounds to inf
        return float(np.float32(x))


def _float64_array(rows, width):
    """A (len(rows), width) float64 array of equal-length rows of Python numbers, without numpy's
    per-element type discovery of nested lists."""
    if len(rows) < 8:  # a few values: numpy's list conversion is the cheaper one
        return np.array(rows, dtype=np.float64).reshape(-1, width)
    flat = array.array("d", itertools.chain.from_iterable(rows))
    return np.frombuffer(flat, dtype=np.float64).reshape(-1, width)


def _fused(rows, seed, merged, conf_type, out):
    """One cluster as 1.0.9 leaves it before the rescale."""
    if merged is None:
        r = rows[seed]
        out.append((r[4:], r[1], float(r[0]), r[2], (r[3],), 1))
        return
    members, values = merged
    conf = values[4]
    score = _f32(rows[members[0]][1] if conf_type == "max" else conf / len(members))
    w = 0.0
    for j in members:
        w += rows[j][2]
    out.append((list(values[5:]), score, float(rows[seed][0]), _f32(w),
                tuple(rows[j][3] for j in members), len(members)))


def _result(out, weights, conf_type, allows_overflow, unit_weights=False):
    """1.0.9's rescale of each cluster's score, then its final sort by score."""
    total = float(len(weights)) if unit_weights else float(weights.sum())
    n_lists = len(weights)
    scores = []
    for _, score, _, wsum, models, count in out:
        if conf_type == "max":
            scores.append(score / float(weights.max()))
        elif conf_type == "avg":
            scores.append(score * (count if allows_overflow else min(n_lists, count)) / total)
        else:
            present = sorted(set(models))
            if conf_type == "box_and_model_avg":
                scores.append(score * count / wsum * float(weights[present].sum()) / total)
            else:
                mask = np.ones(n_lists, dtype=bool)
                mask[present] = False
                scores.append(score * count / (wsum + float(weights[mask].sum())))
    order = _descending(scores)
    return (_float64_array([out[i][0] for i in order], 4), _float64_array([[scores[i] for i in order]], 1)[:, 0],
            _float64_array([[out[i][2] for i in order]], 1)[:, 0])
