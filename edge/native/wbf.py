"""Weighted boxes fusion in one native call: the lists checked and packed for ``rw_wbf_fuse``.

``edge.fusion.weighted_boxes_fusion`` tries ``fuse`` first where the library is
built. On small inputs Python's per-call costs are the whole bill (a numpy
array's address costs microseconds here, as much as fusing a box), so the
values travel as bytes (``tobytes`` copies, ctypes passes the buffer) and
every check is a type or identity test. ``fuse`` returns None for whatever
the general path must take, which validates, repairs, warns and raises:
lists that are not numpy arrays of float64/float32 boxes and scores and
int64/int32/float64/float32 labels (one dtype per kind over the lists),
weights that are not plain non-negative numbers, iou_thr <= 0,
box_and_model_avg or absent_model_aware_avg over 8 or more lists of
fractional weights (numpy's pairwise sums); the C code returns its fallback
for non-finite values, kept scores <= 0 and labels float32 cannot hold. On score
ties within a label (numpy's argsort orders ties its own way) ``fuse`` asks numpy
for 1.0.9's order and calls the C code again.
"""
import math
import struct

import numpy as np

from edge.fusion_small import _f32
from edge.native import TiedGroups

_NDARRAY = np.ndarray
_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)
_FLOATS = (_F64, _F32)
_LABELS = (np.dtype(np.int64), np.dtype(np.int32), _F64, _F32)  # kinds 0-3 of rw_wbf_fuse
_CONF_CODES = {"avg": 0, "max": 1, "box_and_model_avg": 2, "absent_model_aware_avg": 3}
_NOTHING = np.zeros(0, np.dtype([("box", np.float64, (4,)), ("score", np.float64), ("label", np.float64)]))
_NO_BOXES = object()  # _arguments' answer when every list is empty
_PACKERS = {}
_EXACT = 2.0 ** 53  # whole numbers below it add exactly in any order


def fuse(kernels, boxes_list, scores_list, labels_list, weights, iou_thr, skip_box_thr, conf_type,
         allows_overflow, weak_scalars, f32_divisor):
    """``kernels.wbf_fuse`` of the lists (fused records, fix counts or None, ordered), or None where the
    general path must take them. ``weak_scalars`` and ``f32_divisor``: numpy's scalar rules, as in ``edge.fusion``.

    Where scores tie within a label (seven views decoded at a low threshold tie a few in nearly every
    frame), the first call answers with the tied labels' scores; each tied label's rows are then visited
    in the order of 1.0.9's own call, ``scores.argsort()[::-1]`` on the same float64 values in the same
    order, and a second call of ``kernels.wbf_fuse`` follows it.
    """
    args = _arguments(boxes_list, scores_list, labels_list, weights, iou_thr, skip_box_thr, conf_type,
                      allows_overflow, weak_scalars, f32_divisor)
    if args is None or args is _NO_BOXES:
        return None if args is None else (_NOTHING, None, True)
    fused = kernels.wbf_fuse(*args)
    if type(fused) is not TiedGroups:
        return fused
    bounds, scores = fused.bounds.tolist(), fused.scores
    # A fresh array per group, as 1.0.9 (and edge.fusion) sort one: numpy's argsort sees the same input.
    order = np.concatenate([np.array(scores[a:b]).argsort()[::-1] for a, b in zip(bounds[:-1], bounds[1:])])
    return kernels.wbf_fuse(*args, order=order.astype(np.int64).tobytes())


def _arguments(boxes_list, scores_list, labels_list, weights, iou_thr, skip_box_thr, conf_type, allows_overflow,
               weak_scalars, f32_divisor):
    """kernels.wbf_fuse's arguments for the lists, _NO_BOXES when every list is empty, or None where
    the general path must take the lists."""
    conf_code = _CONF_CODES.get(conf_type) if type(conf_type) is str else None
    n_lists = len(boxes_list)
    if (conf_code is None or len(scores_list) != n_lists or len(labels_list) != n_lists
            or type(iou_thr) is not float and type(iou_thr) is not int or not iou_thr > 0
            or type(skip_box_thr) is not float and type(skip_box_thr) is not int):
        return None
    if weights is None:
        weighting = (1, n_lists, 1, 1)
        weight_list = []
    else:
        weighting = _weighting(weights, n_lists, conf_code)
        if weighting is None:
            return None
        weight_list = weighting[4]
    ndarray = _NDARRAY
    counts, boxes, scores, labels = [], [], [], []
    box_type = score_type = label_type = None
    for b, s, lab in zip(boxes_list, scores_list, labels_list):
        if type(b) is not ndarray or type(s) is not ndarray or type(lab) is not ndarray or s.ndim != 1:
            return None
        n = len(s)
        if b.shape != (n, 4) or lab.shape != s.shape:
            return None
        counts.append(n)
        if not n:
            continue  # an empty list's dtypes do not matter
        if b.dtype is not box_type:
            if box_type is not None or b.dtype not in _FLOATS:
                return None
            box_type = b.dtype
        if s.dtype is not score_type:
            if score_type is not None or s.dtype not in _FLOATS:
                return None
            score_type = s.dtype
        if lab.dtype is not label_type:
            if label_type is not None or lab.dtype not in _LABELS:
                return None
            label_type = lab.dtype
        boxes.append(b.tobytes())
        scores.append(s.tobytes())
        labels.append(lab.tobytes())
    if not boxes:
        return _NO_BOXES
    score_f32 = score_type.itemsize == 4  # (an equal dtype need not be the same object)
    # 1.0.9 compares a numpy score with skip_box_thr: in float32 for float32 scores under numpy >= 2.
    cut = _f32(float(skip_box_thr)) if weak_scalars and score_f32 else skip_box_thr
    # rw_wbf_fuse's parameters (WBF_P_* in kernels.c), then the counts and weights.
    params = _pack([n_lists, box_type.itemsize == 4, score_f32, _LABELS.index(label_type), weighting[0], weighting[1],
                    weighting[2], weighting[3], cut, iou_thr, conf_code, 1 if allows_overflow else 0, f32_divisor]
                   + counts + weight_list)
    if len(boxes) == 1:
        return boxes[0], scores[0], labels[0], params, counts[0] if n_lists == 1 else sum(counts)
    return b"".join(boxes), b"".join(scores), b"".join(labels), params, sum(counts)


def _pack(values):
    """Bytes of float64 values (a struct per length, cached: cheaper than array.array)."""
    packer = _PACKERS.get(len(values))
    if packer is None:
        packer = _PACKERS[len(values)] = struct.Struct("=%dd" % len(values))
    return packer.pack(*values)


def _weighting(weights, n_lists, conf_code):
    """(unit weights, weights.sum(), weights.max(), exact sums, weight list) as 1.0.9 computes them
    on np.array(weights), or None for weights the general path must take."""
    if type(weights) is _NDARRAY:
        if weights.ndim != 1 or weights.dtype is not _F64 and weights.dtype.char not in "lq":
            return None  # float32 weights keep their type in 1.0.9's products under numpy >= 2
        weights = weights.tolist()
    elif type(weights) is not list and type(weights) is not tuple:
        return None
    if len(weights) != n_lists or not n_lists:
        return None
    exact = True
    for w in weights:
        if type(w) is float:
            if not 0.0 <= w < math.inf:
                return None
            exact = exact and w.is_integer()
        elif type(w) is not int or not 0 <= w < _EXACT:
            return None
    if exact:
        total = sum(weights)
        if not total < _EXACT:
            return None
    elif n_lists < 8:
        total = 0.0  # numpy sums fewer than 8 values left to right
        for w in weights:
            total += w
    elif conf_code >= 2:
        return None  # per-cluster subsets would need numpy's pairwise order
    else:
        total = float(np.array(weights, dtype=np.float64).sum())
    return 0, total, max(weights), exact, list(weights)

