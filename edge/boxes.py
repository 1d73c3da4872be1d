"""Vectorized box arithmetic: conversions, IoU and class-aware NMS."""
import numpy as np

from edge import native
from edge.errors import EdgeError

# Class-aware NMS shifts each class into its own region of the plane, as
# ultralytics does, so one IoU computation never mixes classes.
CLASS_OFFSET_PX = _CLASS_OFFSET_PX = 7680.0
# nms settles boxes in blocks of at most _MAX_BLOCK boxes and _PAIR_BUDGET
# candidate pairs (a few MB of temporaries), shrinking a block down to
# _MIN_BLOCK boxes (at most 2,016 pairs) to meet the budget, and checks a block
# against _MAX_BLOCK // 4 kept boxes at a time (at most 1M pairs, ~40 MB); see
# _greedy_keep.
_MAX_BLOCK = 2048
_MIN_BLOCK = 64
_PAIR_BUDGET = 32768
# _leader_rounds goes on while each kept box settles this many boxes on average.
_LEADER_ROUNDS = 16
_LEADER_MIN_SETTLED = 4


def xywh_to_xyxy(xywh):
    xywh = np.asarray(xywh, dtype=np.float32).reshape(-1, 4)
    half = xywh[:, 2:] / 2
    return np.concatenate([xywh[:, :2] - half, xywh[:, :2] + half], axis=1)


def xyxy_to_xywh(xyxy):
    """Corner boxes to COCO [x, y, w, h] (top-left corner and size)."""
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)


def box_area(xyxy):
    wh = np.clip(xyxy[..., 2:] - xyxy[..., :2], 0, None)
    return wh[..., 0] * wh[..., 1]


def box_iou(a, b):
    """IoU matrix (len(a), len(b)) of two sets of xyxy boxes."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float32).eps)


def nms(xyxy, score, iou_thr, class_id=None, max_det=None):
    """Greedy NMS; indices of kept boxes in descending score order.

    The result is torchvision's ``nms`` (and so ultralytics') to the bit: boxes
    are visited by descending score, ties in index order; a box is suppressed
    when its float32 IoU with a kept box is above ``iou_thr``; with ``class_id``
    each class is shifted by _CLASS_OFFSET_PX in float32, as ultralytics does.
    Boxes without area overlap nothing and are always kept.

    Instead of one IoU pass per kept box (a Python loop of up to max_det
    steps), the best box of every class is kept in one vectorized pass at a
    time while that settles whole clusters, and the rest is settled block by
    block from the IoU of only those pairs whose x-ranges overlap (found by a
    sort and a search). OpenCV's NMSBoxes is no substitute on the Nano: the
    Python binding of OpenCV < 4.3 (JetPack 4.6 ships 4.1.1) converts boxes to
    integer Rects (opencv/opencv#16143, fixed by #16828). With the native
    library (edge.native) the same greedy loop runs in C over an x-sorted index.
    """
    thr = _iou_threshold_f32(iou_thr)
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    score = np.asarray(score, dtype=np.float32).reshape(-1)
    if score.shape[0] != xyxy.shape[0]:
        raise EdgeError("nms got %d scores for %d boxes" % (score.shape[0], xyxy.shape[0]))
    group = np.zeros(len(xyxy), dtype=np.int64)
    if class_id is not None:
        class_id = np.asarray(class_id).reshape(-1)
        if class_id.shape[0] != xyxy.shape[0]:
            raise EdgeError("nms got %d class ids for %d boxes" % (class_id.shape[0], xyxy.shape[0]))
        # Shifted classes cannot meet while the boxes span at most the offset in x
        # (rounding after the shift keeps the order of coordinates); wider, boxes
        # of different classes may overlap, as in ultralytics: one group then.
        if len(xyxy) and xyxy[:, 2].max() - xyxy[:, 0].min() <= _CLASS_OFFSET_PX:
            group = class_id
        xyxy = xyxy + (class_id.astype(np.float32) * np.float32(_CLASS_OFFSET_PX))[:, None]
    order = np.argsort(-score, kind="stable")
    limit = len(order) if max_det is None else max(int(max_det), 0)
    boxes = xyxy.take(order, axis=0)
    kernels = native.active()
    if kernels is not None:
        return order[kernels.nms(boxes, float(iou_thr), limit)].astype(np.int64)
    proper = np.flatnonzero((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    kept = np.ones(len(order), dtype=bool)
    kept[proper] = False
    kept[proper[_greedy_keep(boxes.take(proper, axis=0), group.take(order).take(proper), thr, limit)]] = True
    return order[np.flatnonzero(kept)[:limit]].astype(np.int64)


def _iou_threshold_f32(iou_thr):
    """The largest float32 <= iou_thr: float32 IoU > it exactly when IoU > iou_thr in float64.

    torchvision compares its float32 IoU with the threshold as a double;
    comparing with float32(iou_thr) instead would keep a box whose IoU is
    float32(0.6) at iou_thr=0.6 (float32(0.6) is above 0.6).
    """
    iou_thr = float(iou_thr)
    if not iou_thr >= 0.0:
        raise EdgeError("NMS IoU threshold is %r; expected a number >= 0 (ultralytics uses 0.7)" % iou_thr)
    thr = np.float32(iou_thr)
    return np.nextafter(thr, np.float32(-1)) if float(thr) > iou_thr else thr


def _greedy_keep(boxes, group, thr, limit):
    """Ranks kept among ``boxes`` (positive-area, in score order; ``group`` keeps apart
    boxes that cannot overlap), in score order.

    After _leader_rounds, the rest goes block by block: a block's boxes are
    checked against the boxes it kept so far, and only the survivors are
    paired among themselves. A block whose survivors would make more than
    _PAIR_BUDGET pairs is retried 4x shorter, so that its kept boxes thin the
    rest of a dense cluster in the next block's cheaper check. The search
    stops once ``limit`` boxes are kept above the next block.
    """
    leaders, rest = _leader_rounds(boxes, group, thr)
    boxes = boxes.take(rest, axis=0)
    kept = np.zeros(0, dtype=np.int64)
    start, size = 0, _MAX_BLOCK
    while start < len(rest) and len(kept) + np.searchsorted(leaders, rest[start]) < limit:
        stop = min(start + size, len(rest))
        block = np.arange(start, stop)
        for chunk in range(0, len(kept), _MAX_BLOCK // 4):  # bounds kept x block pairs
            block = block[~_suppressed_by(boxes, kept[chunk:chunk + _MAX_BLOCK // 4], block, thr)]
        block_boxes = boxes.take(block, axis=0)
        pairs = _overlapping_pairs(block_boxes, _PAIR_BUDGET if size > _MIN_BLOCK else None)
        if pairs is None:
            size //= 4
            continue
        start, size = stop, min(4 * size, _MAX_BLOCK)
        first, second = pairs
        exceeds = _pair_iou(block_boxes, first, second) > thr
        kept = np.concatenate([kept, block[_settle(len(block), first[exceeds], second[exceeds])]])
    return np.sort(np.concatenate([leaders, rest.take(kept)]))


def _leader_rounds(boxes, group, thr):
    """(kept ranks, unsettled ranks) after keeping the best box of every group and dropping
    what it suppresses, for as long as each such box settles a few others on average.

    The best unsettled box of a group is always kept: every better box of its
    group is settled, and it survived the kept ones. This is how the dense
    clusters of near-copies a detector puts around each object go: in a few
    passes over all boxes instead of through their many pairs.
    """
    by_group = np.argsort(group, kind="stable")  # score order within each group
    group = group.take(by_group)
    alive = np.ones(len(boxes), dtype=bool)  # over by_group positions
    leaders = [np.zeros(0, dtype=np.int64)]
    for _ in range(_LEADER_ROUNDS):
        position = np.flatnonzero(alive)
        if not len(position):
            break
        member_group = group.take(position)
        heads = np.ones(len(position), dtype=bool)
        heads[1:] = member_group[1:] != member_group[:-1]
        rest = by_group.take(position)
        leader = rest[heads]
        settled = _pair_iou(boxes, leader.take(np.cumsum(heads) - 1), rest) > thr
        settled |= heads
        alive[position[settled]] = False
        leaders.append(leader)
        if settled.sum() < _LEADER_MIN_SETTLED * len(leader):
            break
    return np.sort(np.concatenate(leaders)), np.sort(by_group[alive])


def _suppressed_by(boxes, kept, block, thr):
    """Which ``block`` boxes some already-kept box suppresses."""
    if not len(kept) or not len(block):
        return np.zeros(len(block), dtype=bool)
    k_boxes, b_boxes = boxes.take(kept, axis=0), boxes.take(block, axis=0)
    k_order, b_order = np.argsort(k_boxes[:, 0]), np.argsort(b_boxes[:, 0])
    k_x1, b_x1 = k_boxes[k_order, 0], b_boxes[b_order, 0]
    # kept box k pairs with block boxes starting in [x1_k, x2_k); block box b
    # with kept boxes starting in (x1_b, x2_b): every x-overlapping pair once.
    k_side, b_side = _pairs_in_ranges(np.searchsorted(b_x1, k_x1, "left"),
                                      np.searchsorted(b_x1, k_boxes[k_order, 2], "left"))
    b_own, k_other = _pairs_in_ranges(np.searchsorted(k_x1, b_x1, "right"),
                                      np.searchsorted(k_x1, b_boxes[b_order, 2], "left"))
    k_pos = k_order[np.concatenate([k_side, k_other])]
    b_pos = b_order[np.concatenate([b_side, b_own])]
    hit = _pair_iou2(k_boxes, k_pos, b_boxes, b_pos) > thr
    suppressed = np.zeros(len(block), dtype=bool)
    suppressed[b_pos[hit]] = True
    return suppressed


def _overlapping_pairs(boxes, budget=None):
    """Index pairs (i < j) of ``boxes`` whose x-ranges overlap (sweep over sorted x1),
    or None when there are more than ``budget``."""
    order = np.argsort(boxes[:, 0], kind="stable")
    x1, x2 = boxes[:, 0].take(order), boxes[:, 2].take(order)
    lo, hi = np.arange(1, len(order) + 1), np.searchsorted(x1, x2, "left")
    if budget is not None and np.maximum(hi - lo, 0).sum() > budget:
        return None
    a, b = _pairs_in_ranges(lo, hi)
    a, b = order[a], order[b]
    return np.minimum(a, b), np.maximum(a, b)


def _pairs_in_ranges(lo, hi):
    """(owner, partner) for every partner in [lo[owner], hi[owner])."""
    counts = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(counts)), counts)
    partner = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts - lo, counts)
    return owner, partner


def _pair_iou(boxes, i, j):
    """float32 IoU of the pairs (boxes[i], boxes[j]) in torchvision's order of operations."""
    return _pair_iou2(boxes, i, boxes, j)


def _pair_iou2(boxes_a, i, boxes_b, j):
    """float32 IoU of the pairs (boxes_a[i], boxes_b[j]) in torchvision's order of operations."""
    a, b = boxes_a.take(i, axis=0), boxes_b.take(j, axis=0)
    with np.errstate(invalid="ignore", over="ignore"):  # infinite boxes give NaN IoU, as in torchvision
        return _iou_of(a, b)


def _iou_of(a, b):
    w = np.maximum(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0)
    h = np.maximum(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0)
    inter = w * h
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a + area_b - inter)


def _settle(n, src, dst):
    """Greedy outcome for n boxes in score order when box src[e] suppresses box dst[e] (src < dst).

    Each round keeps every undecided box that no undecided box can still
    suppress and drops the boxes those suppress; the best undecided box always
    qualifies, so rounds never exceed n (a few for real detections).
    """
    kept = np.zeros(n, dtype=bool)
    decided = np.zeros(n, dtype=bool)
    while not decided.all():
        threatened = np.zeros(n, dtype=bool)
        threatened[dst] = True
        new = ~decided & ~threatened
        kept |= new
        decided |= new
        decided[dst[new[src]]] = True
        live = ~decided[src] & ~decided[dst]
        src, dst = src[live], dst[live]
    return np.flatnonzero(kept)


def clip_boxes(xyxy, width, height):
    out = np.array(xyxy, dtype=np.float32, copy=True).reshape(-1, 4)
    # In place on strided views: the same values as clipping picked columns, without two copies each.
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out
