import numpy as np
import pytest

from edge.detections import Detections
from edge.metrics import class_curve, evaluate, match_image

GT = (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0, 0]))


def test_perfect_detections_give_ap_one():
    det = Detections(GT[0], [0.9, 0.8], [0, 0])
    assert evaluate([det], [GT], 1)["map50"] == pytest.approx(1.0)


def test_half_found():
    det = Detections(GT[0][:1], [0.9], [0])
    curve = class_curve(0, [det], [GT])
    # Recall reaches 0.5 at precision 1: 51 of the 101 COCO recall points (0.00..0.50) score 1.
    assert curve.ap50 == pytest.approx(51 / 101.0)


def test_false_positive_ranked_first_halves_precision():
    det = Detections([[50, 50, 60, 60], [0, 0, 10, 10], [20, 20, 30, 30]], [0.95, 0.9, 0.8], [0, 0, 0])
    curve = class_curve(0, [det], [GT])
    np.testing.assert_allclose(curve.precision, [0, 0.5, 2 / 3.0])
    np.testing.assert_allclose(curve.recall, [0, 0.5, 1.0])
    assert curve.ap50 == pytest.approx(2 / 3.0)


def test_duplicate_detection_is_a_false_positive():
    tp, _ = match_image([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], GT[0])
    assert tp.tolist() == [True, False]


def test_wrong_class_does_not_count_and_empty_inputs():
    det = Detections(GT[0], [0.9, 0.8], [1, 1])
    result = evaluate([det, Detections.empty()], [GT, (np.zeros((0, 4)), np.zeros(0))], 2)
    assert result["ap50"] == {0: 0.0} and result["gt_boxes"] == 2


def test_recall_by_category_at_the_threshold():
    det = Detections(GT[0], [0.9, 0.1], [0, 0])
    result = evaluate([det], [GT], 1, categories={0: "critical"}, score_thr=0.25)
    assert result["recall_by_category"] == {"critical": 0.5}


@pytest.mark.parametrize("thresholds, expected", [
    ([0.25, 0.95], {"critical": 0.5, "general": 0.0}),   # class 1's only box (0.9) is under its 0.95
    ([0.95, 0.25], {"critical": 0.0, "general": 1.0}),
    (0.05, {"critical": 1.0, "general": 1.0}),
])
def test_recall_at_per_class_operating_thresholds(thresholds, expected):
    gt = (np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32), np.array([0, 0, 1]))
    det = Detections(gt[0], [0.9, 0.1, 0.9], [0, 0, 1])
    result = evaluate([det], [gt], 2, categories={0: "critical", 1: "general"}, score_thr=thresholds)
    assert result["recall_by_category"] == expected


def test_precision_by_category_counts_the_boxes_reported():
    gt = (np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32), np.array([0, 0, 1]))
    # class 0: a hit at 0.9, a false box at 0.8, a hit at 0.1; class 1: one hit; class 2 has no ground truth
    det = Detections([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 30, 30], [40, 40, 50, 50], [5, 5, 9, 9]],
                     [0.9, 0.8, 0.1, 0.9, 0.9], [0, 0, 0, 1, 2])
    categories = {0: "critical", 1: "general", 2: "general"}
    result = evaluate([det], [gt], 3, categories=categories, score_thr=0.25)
    assert result["precision_by_category"] == {"critical": 0.5, "general": 0.5}  # class 2's box is a false one
    assert result["recall_by_category"] == {"critical": 0.5, "general": 1.0}
    assert evaluate([det], [gt], 3, categories=categories, score_thr=0.05)["precision_by_category"]["critical"] \
        == pytest.approx(round(2 / 3.0, 5))
    assert evaluate([det], [gt], 3, categories=categories, score_thr=0.95)["precision_by_category"] == \
        {"critical": None, "general": None}
