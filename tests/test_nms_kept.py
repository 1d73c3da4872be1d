"""edge.native's NMS for small limits (a decoder's max_det): each box tested against the kept boxes.

Up to NMS_KEPT_MAX kept boxes, rw_nms scans the kept boxes near each visited
box instead of letting each kept box mark the later boxes it suppresses. Both
must keep the same boxes: here against the numpy path and against the C loop
it stands beside (a limit above NMS_KEPT_MAX), truncated to the limit.
"""
import numpy as np
import pytest

from edge.boxes import nms
from tests.test_boxes import CASES, _boxes
from tests.test_native import kernels, on_both_paths  # noqa: F401 (a fixture)

NMS_KEPT_MAX = 1024  # kernels.c


def tiny_far_classes(rng):
    """Sub-pixel boxes in classes shifted far out, where float32 rounding of the shift is coarse."""
    n = 3000
    return _boxes(rng.uniform(0, 50, (n, 2)), rng.uniform(1e-3, 2.0, (n, 2))), rng.random(n), \
        rng.integers(30, 40, n)


MAKERS = CASES + [tiny_far_classes]


def _visiting_order(boxes, score, cls):
    """The class-shifted boxes in descending score order, as edge.boxes.nms hands them to the kernel."""
    from edge.boxes import CLASS_OFFSET_PX
    shifted = boxes + (cls.astype(np.float32) * np.float32(CLASS_OFFSET_PX))[:, None]
    return np.ascontiguousarray(shifted[np.argsort(-np.asarray(score, np.float32), kind="stable")])


@pytest.mark.parametrize("make", MAKERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("iou_thr", [1e-6, 0.3, 0.5, 0.7, 1.0])
def test_small_limits_keep_the_first_boxes_of_the_full_greedy_pass(make, iou_thr, kernels):
    boxes, score, cls = make(np.random.default_rng(MAKERS.index(make)))
    ordered = _visiting_order(boxes, score, cls)
    assert len(ordered) > NMS_KEPT_MAX  # the full pass takes the other loop
    full = kernels.nms(ordered, iou_thr, len(ordered))
    for limit in (1, 7, 300, NMS_KEPT_MAX):
        np.testing.assert_array_equal(kernels.nms(ordered, iou_thr, limit), full[:limit],
                                      err_msg="%s iou_thr=%r limit=%d" % (make.__name__, iou_thr, limit))


@pytest.mark.parametrize("make", MAKERS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("iou_thr, max_det", [(0.5, 300), (0.7, 1), (0.3, NMS_KEPT_MAX), (0.9, 50)])
def test_small_limits_equal_the_numpy_path(make, iou_thr, max_det, kernels, monkeypatch):
    boxes, score, cls = make(np.random.default_rng(100 + MAKERS.index(make)))
    expected, got, calls = on_both_paths(lambda: nms(boxes, score, iou_thr, cls, max_det), kernels, monkeypatch)
    assert calls == ["nms"]
    np.testing.assert_array_equal(got, expected, err_msg="%s %r" % (make.__name__, iou_thr))


@pytest.mark.parametrize("boxes, kept", [
    (np.zeros((0, 4), np.float32), []),
    (np.array([[0, 0, 10, 10]], np.float32), [0]),
    # the same box twice: the second is suppressed; a box without area is kept and suppresses nothing
    (np.array([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9], [0, 0, 10, 10]], np.float32), [0, 2]),
    # IoU exactly 0.5 is not above 0.5: both kept
    (np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32), [0, 1]),
    # NaN boxes overlap nothing
    (np.array([[np.nan, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32), [0, 1]),
])
def test_small_inputs(boxes, kept, kernels):
    assert kernels.nms(boxes, 0.5, 300).tolist() == kept
