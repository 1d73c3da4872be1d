"""edge.boxes.nms against the plain greedy loop it replaced, and against torchvision where present.

Every test runs on the native NMS (edge.native, skipped when the library is
not built) and on the numpy path (REEFWATCH_NATIVE=0).
"""
import numpy as np
import pytest

from edge.boxes import nms
from edge.errors import EdgeError
from tests.native_paths import both_paths

OFFSET = np.float32(7680)


kernel_path = both_paths("numpy")  # every test runs on the C kernels and on the fallback


def reference_nms(xyxy, score, iou_thr, class_id=None, max_det=None):
    """torchvision's CPU nms step for step: one IoU pass per kept box, ties in index order.

    It is also the loop edge.boxes used before, except that this one compares
    the float32 IoU with the threshold in float64, as torchvision does.
    """
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    if class_id is not None:
        xyxy = xyxy + np.asarray(class_id).astype(np.float32)[:, None] * OFFSET
    x1, y1, x2, y2 = xyxy.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-np.asarray(score, np.float32), kind="stable")
    keep = []
    while order.size and (max_det is None or len(keep) < max_det):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        with np.errstate(invalid="ignore", divide="ignore"):  # inf * 0 in non_finite
            inter = w * h
            iou = inter / (area[i] + area[rest] - inter)
        order = rest[~(iou.astype(np.float64) > iou_thr)]
    return np.asarray(keep, np.int64)


def _boxes(xy, wh):
    return np.concatenate([xy, xy + wh], axis=1).astype(np.float32)


def many_classes(rng):
    n = 12000
    return _boxes(rng.uniform(0, 600, (n, 2)), rng.uniform(5, 120, (n, 2))), rng.random(n), rng.integers(0, 40, n)


def heavy_overlap(rng):
    """Jittered copies of 30 objects, as a detector's anchors give them, in 3 classes."""
    n = 10000
    centre, size = rng.uniform(50, 550, (30, 2)), rng.uniform(20, 150, (30, 2))
    owner = rng.integers(0, 30, n)
    wh = size[owner] * rng.uniform(0.8, 1.2, (n, 2))
    xy = centre[owner] + rng.normal(0, 0.1, (n, 2)) * size[owner] - wh / 2
    return _boxes(xy, wh), rng.random(n), owner % 3


def score_ties(rng):
    """Ten score levels and every box twice: order among equals decides."""
    boxes, _, cls = heavy_overlap(rng)
    boxes, cls = np.concatenate([boxes[:5000]] * 2), np.concatenate([cls[:5000]] * 2)
    return boxes, rng.integers(0, 10, len(boxes)) / 10.0, cls


def zero_area(rng):
    """A third of the boxes have no width or no height; some coincide."""
    boxes, score, cls = heavy_overlap(rng)
    flat = rng.random(len(boxes)) < 0.33
    axis = rng.integers(0, 2, len(boxes))
    boxes[flat, 2 + axis[flat]] = boxes[flat, axis[flat]]
    boxes[:200] = boxes[0]
    boxes[:200, 2] = boxes[0, 0]
    return boxes, score, cls


def one_class(rng):
    """Thousands of boxes of one class: clusters plus a sparse tail."""
    boxes, score, _ = heavy_overlap(rng)
    tail = _boxes(rng.uniform(0, 600, (4000, 2)), rng.uniform(5, 40, (4000, 2)))
    return np.concatenate([boxes, tail]), np.concatenate([score, rng.random(4000) * 0.1]), np.zeros(14000, int)


def chains(rng):
    """Boxes sliding a step at a time with falling scores: each decision hangs on the last."""
    n = 10000
    step = np.arange(n) % 500
    xy = np.stack([step * 1.5 + (np.arange(n) // 500) * 10, np.full(n, 10.0)], axis=1)
    return _boxes(xy, np.full((n, 2), 20.0)), 1.0 - np.arange(n) / n, np.arange(n) // 2500


def wide_boxes(rng):
    """Coordinates spread beyond the class offset: shifted classes can meet, as in ultralytics."""
    n = 3000
    return _boxes(rng.uniform(-500, 9000, (n, 2)), rng.uniform(50, 2000, (n, 2))), rng.random(n), \
        rng.integers(0, 3, n)


def non_finite(rng):
    """NaN and infinite coordinates: a NaN box overlaps nothing; infinite ones follow float32 rules."""
    boxes, score, cls = heavy_overlap(rng)
    n = len(boxes)
    boxes[rng.integers(0, n, 100), rng.integers(0, 4, 100)] = np.nan
    low, high = rng.integers(0, n, 50), rng.integers(0, n, 50)
    boxes[low, rng.integers(0, 2, 50)] = -np.inf
    boxes[high, rng.integers(2, 4, 50)] = np.inf
    return boxes, score, cls


CASES = [many_classes, heavy_overlap, score_ties, zero_area, one_class, chains, wide_boxes, non_finite]


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("iou_thr, max_det, class_aware", [(0.7, 300, True), (0.45, None, True),
                                                          (0.5, None, False)])
def test_nms_equals_greedy_loop(make, iou_thr, max_det, class_aware):
    boxes, score, cls = make(np.random.default_rng(CASES.index(make)))
    cls = cls if class_aware else None
    np.testing.assert_array_equal(nms(boxes, score, iou_thr, cls, max_det),
                                  reference_nms(boxes, score, iou_thr, cls, max_det))


@pytest.mark.parametrize("make", CASES, ids=lambda f: f.__name__)
def test_nms_equals_torchvision(make):
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
    boxes, score, cls = make(np.random.default_rng(CASES.index(make)))
    shifted = torch.from_numpy(boxes) + torch.from_numpy(cls.astype(np.float32))[:, None] * 7680.0
    theirs = torchvision.ops.nms(shifted, torch.from_numpy(np.asarray(score, np.float32)), 0.7).numpy()
    np.testing.assert_array_equal(nms(boxes, score, 0.7, cls), theirs)


def _two(second, thr, scores=(0.9, 0.8)):
    return nms(np.array([[0, 0, 10, 10], second], np.float32), scores, thr).tolist()


@pytest.mark.parametrize("second, thr, scores, expected", [
    # IoU 50/100 = 0.5 exactly: not above 0.5, so both stay.
    ([0, 0, 10, 5], 0.5, (0.9, 0.8), [0, 1]),
    ([0, 0, 10, 5], 0.4999, (0.9, 0.8), [0]),
    # Equal scores: the lower index is visited first and kept.
    ([0, 0, 10, 10], 0.5, (0.7, 0.7), [0]),
    ([0, 0, 10, 10], 0.5, (0.6, 0.7), [1]),
    # Zero-area and inverted boxes overlap nothing.
    ([5, 5, 5, 9], 0.0, (0.9, 0.8), [0, 1]),
    ([9, 9, 1, 1], 0.0, (0.9, 0.8), [0, 1]),
])
def test_nms_pairs(second, thr, scores, expected):
    assert _two(second, thr, scores) == expected


def test_threshold_compared_as_a_double():
    """float32(60/100) is float32(0.6), which lies above 0.6: torchvision suppresses the box.

    Regression: the old loop compared with float32(0.6) and kept it.
    """
    iou = np.float32(60) / np.float32(100)
    assert float(iou) > 0.6
    assert _two([0, 0, 10, 6], 0.6) == [0]


def test_identical_zero_area_boxes_all_stay():
    boxes = np.tile([[3, 3, 3, 8]], (5, 1)).astype(np.float32)
    assert nms(boxes, np.linspace(1, 0.5, 5), 0.1).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n, max_det, expected", [(0, None, 0), (1, None, 1), (1, 0, 0), (5, None, 1),
                                                  (5, 0, 0)])
def test_nms_small_inputs(n, max_det, expected):
    boxes = np.tile([[0, 0, 10, 10]], (n, 1)).astype(np.float32)
    keep = nms(boxes, np.linspace(1, 0.5, n), 0.5, class_id=np.zeros(n, int), max_det=max_det)
    assert keep.dtype == np.int64 and keep.tolist() == list(range(expected))


def test_max_det_is_a_prefix():
    boxes, score, cls = heavy_overlap(np.random.default_rng(5))
    full = nms(boxes, score, 0.7, cls)
    for max_det in (1, 7, 50):
        np.testing.assert_array_equal(nms(boxes, score, 0.7, cls, max_det), full[:max_det])


@pytest.mark.parametrize("args, match", [
    (dict(iou_thr=-0.1), "IoU threshold"),
    (dict(iou_thr=float("nan")), "IoU threshold"),
    (dict(score=[0.5]), "1 scores for 2 boxes"),
    (dict(class_id=[0, 1, 2]), "3 class ids for 2 boxes"),
])
def test_nms_rejects_bad_input(args, match):
    call = dict(xyxy=np.zeros((2, 4)), score=[0.5, 0.4], iou_thr=0.5, class_id=None)
    call.update(args)
    with pytest.raises(EdgeError, match=match):
        nms(**call)
