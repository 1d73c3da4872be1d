"""Temperature fit, pooled temperatures and threshold rules on synthetic scores and hand-made tables."""
import numpy as np
import pytest

from edge.calibration import calibrate_scores, logit, sigmoid
from edge.detections import Detections
from edge.metrics import class_curve
from trainer import calibration_fit as fit
from trainer.errors import TrainerError


def calibrated_then_distorted(n, scale, seed=0):
    """Labels drawn from a calibrated model's probabilities, the scores it reports with logits x scale."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-0.5, 1.5, n)
    matched = rng.random(n) < sigmoid(z)
    return sigmoid(z * scale).astype(np.float32), matched


@pytest.mark.parametrize("scale", [0.4, 0.7, 1.0, 1.8, 3.0])  # under-confident (< 1) and over-confident (> 1)
def test_fit_recovers_the_distortion(scale):
    scores, matched = calibrated_then_distorted(40000, scale)
    t = fit.fit_temperature(scores, matched)
    # logit(score) / T = z exactly when T = scale.
    assert t == pytest.approx(scale, rel=0.05)
    assert fit.log_loss(calibrate_scores(scores, np.zeros(len(scores), int), [t]), matched) <= \
        fit.log_loss(scores, matched) + 1e-9


def test_fit_is_the_log_loss_minimum():
    scores, matched = calibrated_then_distorted(5000, 2.2, seed=3)
    t = fit.fit_temperature(scores, matched)
    loss = [fit.log_loss(sigmoid(logit(scores) / (t * f)), matched) for f in (0.97, 1.0, 1.03)]
    assert loss[1] < loss[0] and loss[1] < loss[2]


@pytest.mark.parametrize("scores, matched, expected", [
    ([], [], 1.0),                                        # nothing to fit: identity
    ([0.5, 0.5], [1, 0], 1.0),                            # logit 0 everywhere: T does nothing
    ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1], fit.T_BOUNDS[1]),  # scores against the truth: flattest allowed
    ([0.6, 0.7, 0.3], [1, 1, 0], fit.T_BOUNDS[0]),          # perfectly separated: sharpest allowed
])
def test_fit_edge_cases(scores, matched, expected):
    assert fit.fit_temperature(scores, matched) == pytest.approx(expected)


def test_mismatched_lengths_are_refused():
    with pytest.raises(TrainerError, match="3 scores for 2 matched flags"):
        fit.fit_temperature([0.1, 0.2, 0.3], [1, 0])


def _classes(spec, seed=0):
    """Detections of several classes: [(count, distortion scale)] per class, in class order."""
    parts = [calibrated_then_distorted(n, scale, seed + c) for c, (n, scale) in enumerate(spec)]
    scores = np.concatenate([p[0] for p in parts])
    matched = np.concatenate([p[1] for p in parts])
    class_id = np.concatenate([np.full(n, c) for c, (n, _) in enumerate(spec)])
    return scores, matched, class_id


def test_rare_classes_share_one_temperature_fitted_on_them():
    scores, matched, class_id = _classes([(8000, 2.0), (8000, 0.5), (60, 1.0), (50, 1.0)])
    min_matches = int(max(matched[class_id == 2].sum(), matched[class_id == 3].sum())) + 1
    result = fit.fit_class_temperatures(scores, matched, class_id, 5, min_matches)
    assert result.pooled == [2, 3, 4]  # class 4 has no detection at all
    rare = np.isin(class_id, [2, 3])
    assert matched[rare].sum() >= min_matches  # together they hold enough: the pool is theirs alone
    expected = fit.fit_temperature(scores[rare], matched[rare])
    assert expected != pytest.approx(fit.fit_temperature(scores, matched))
    assert result.temperatures[2:] == [pytest.approx(expected)] * 3 == [pytest.approx(result.pooled_temperature)] * 3
    assert result.temperatures[0] == pytest.approx(2.0, rel=0.08)
    assert result.temperatures[1] == pytest.approx(0.5, rel=0.08)
    assert result.matches == [int(matched[class_id == c].sum()) for c in range(5)]
    assert result.detections == [int(np.sum(class_id == c)) for c in range(5)]


def test_rare_classes_too_thin_together_take_every_detection():
    scores, matched, class_id = _classes([(4000, 2.0), (6, 1.0)])
    assert matched[class_id == 0].sum() >= 50 > matched[class_id == 1].sum()
    result = fit.fit_class_temperatures(scores, matched, class_id, 2, min_matches=50)
    assert result.pooled == [1]
    assert result.temperatures[1] == pytest.approx(fit.fit_temperature(scores, matched))
    assert result.temperatures[1] != pytest.approx(fit.fit_temperature(scores[class_id == 1], matched[class_id == 1]))


def test_no_rare_class_no_pooled_temperature():
    scores, matched, class_id = _classes([(3000, 2.0), (3000, 0.5)])
    result = fit.fit_class_temperatures(scores, matched, class_id, 2, min_matches=10)
    assert result.pooled == [] and result.pooled_temperature is None


def curve_from(scores, hits, num_gt, class_id=0):
    """An edge.metrics ClassCurve from a table: detection i lands on ground-truth box i when hits[i]."""
    gt = np.array([[20.0 * i, 0, 20.0 * i + 10, 10] for i in range(num_gt)], np.float32).reshape(-1, 4)
    boxes, used = [], 0
    for hit in hits:
        if hit:
            boxes.append(gt[used])
            used += 1
        else:
            boxes.append([5000.0, 5000.0, 5010.0, 5010.0])
    det = Detections(np.asarray(boxes, np.float32).reshape(-1, 4), scores, np.full(len(scores), class_id))
    return class_curve(class_id, [det], [(gt, np.full(num_gt, class_id))])


def brute_force(scores, hits, num_gt):
    """(threshold, tp, kept) for every distinct score, straight from the table."""
    scores, hits = np.asarray(scores, np.float32), np.asarray(hits, bool)
    rows = []
    for t in sorted(set(scores.tolist()), reverse=True):
        kept = scores >= t
        rows.append((t, int(hits[kept].sum()), int(kept.sum())))
    return rows


TABLES = [
    # scores, hits, ground-truth boxes
    ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 1, 0, 1], 5),
    ([0.95, 0.9, 0.9, 0.6, 0.3, 0.3, 0.2], [1, 1, 0, 0, 1, 1, 0], 6),   # ties: a threshold keeps both
    ([0.8, 0.5], [0, 1], 1),
]


@pytest.mark.parametrize("scores, hits, num_gt", TABLES)
@pytest.mark.parametrize("target", [0.5, 0.9, 1.0])
def test_critical_threshold_is_the_highest_keeping_the_recall_target(scores, hits, num_gt, target):
    rows = brute_force(scores, hits, num_gt)
    best = max(tp for _, tp, _ in rows) / float(num_gt)
    expected = max(t for t, tp, _ in rows if tp / float(num_gt) >= target * best - 1e-12)
    point = fit.critical_threshold(curve_from(scores, hits, num_gt), target)
    assert point.threshold == pytest.approx(expected)
    assert point.recall >= target * best - 1e-12
    t, tp, kept = next(r for r in rows if r[0] == pytest.approx(expected))
    assert (point.tp, point.kept, point.precision) == (tp, kept, pytest.approx(tp / float(kept)))


@pytest.mark.parametrize("scores, hits, num_gt", TABLES)
@pytest.mark.parametrize("target", [0.5, 0.9, 1.0])
@pytest.mark.parametrize("floor", [0.3, 0.6, 0.7, 1.0])
def test_critical_threshold_under_a_precision_floor(scores, hits, num_gt, target, floor):
    rows = [(t, tp, kept) for t, tp, kept in brute_force(scores, hits, num_gt)]
    allowed = [r for r in rows if r[1] / float(r[2]) >= floor - 1e-12]
    point = fit.critical_threshold(curve_from(scores, hits, num_gt), target, floor)
    if not allowed or not any(tp for _, tp, _ in rows):
        assert point is None
        return
    wanted = target * max(tp for _, tp, _ in rows) / float(num_gt)
    meets = [t for t, tp, _ in allowed if tp / float(num_gt) >= wanted - 1e-12]
    if meets:
        expected = max(meets)
    else:  # the highest recall the floor allows, at the highest threshold giving it
        top = max(tp for _, tp, _ in allowed)
        expected = max(t for t, tp, _ in allowed if tp == top)
    assert point.threshold == pytest.approx(expected)
    assert point.precision >= floor - 1e-12
    assert ("caps recall" in point.rule) == (not meets)


def test_hand_table_precision_floor():
    # TABLES[0] by threshold: precision 1 .5 .667 .75 .6 .667, recall .2 .2 .4 .6 .6 .8.
    curve = curve_from(*TABLES[0])
    point = fit.critical_threshold(curve, 0.9, 0.65)     # 0.4 keeps 0.667 >= 0.65 and reaches recall 0.8
    assert (point.threshold, point.recall) == (pytest.approx(0.4), pytest.approx(0.8))
    assert point.rule.endswith("precision >= 0.65")
    point = fit.critical_threshold(curve, 0.9, 0.7)      # only 0.9 and 0.6 keep 0.7: the better recall, 0.6
    assert (point.threshold, point.recall, point.precision) == (pytest.approx(0.6), pytest.approx(0.6),
                                                                pytest.approx(0.75))
    assert point.rule.startswith("precision >= 0.70")
    assert fit.critical_threshold(curve, 0.9, 0.0) == fit.critical_threshold(curve, 0.9)


def test_a_critical_class_below_the_floor_everywhere_takes_max_f1():
    curves = [curve_from([0.8, 0.5], [0, 1], 1, class_id=0)]      # precision 0 then 0.5
    point, = fit.choose_thresholds(curves, {0: "critical"}, 0.9, defaults=[0.15], min_precision=0.6)
    assert point.threshold == pytest.approx(fit.max_f1_threshold(curves[0]).threshold)
    assert point.rule == "max F1 (precision never reaches 0.60)"


@pytest.mark.parametrize("scores, hits, num_gt", TABLES)
def test_other_classes_take_the_max_f1_threshold(scores, hits, num_gt):
    rows = brute_force(scores, hits, num_gt)
    f1 = [2.0 * tp / (kept + num_gt) for _, tp, kept in rows]
    expected = rows[int(np.argmax(f1))][0]  # rows run from the highest threshold down: argmax takes it
    point = fit.max_f1_threshold(curve_from(scores, hits, num_gt))
    assert point.threshold == pytest.approx(expected)
    assert 2 * point.precision * point.recall / (point.precision + point.recall) == pytest.approx(max(f1))


def test_hand_table_thresholds():
    # 5 boxes, hits at 0.9 0.7 0.6 0.4: best recall 0.8; 0.9 x 0.8 = 0.72 needs 4 hits -> 0.4;
    # F1 by threshold: .333 .286 .5 .667 .6 .727 -> 0.4; with target 0.7 (0.56: 3 hits) -> 0.6.
    curve = curve_from(*TABLES[0])
    assert fit.critical_threshold(curve, 0.9).threshold == pytest.approx(0.4)
    assert fit.critical_threshold(curve, 0.7).threshold == pytest.approx(0.6)
    assert fit.max_f1_threshold(curve).threshold == pytest.approx(0.4)


def test_choose_thresholds_by_category_with_defaults_where_nothing_matched():
    curves = [curve_from(*TABLES[0], class_id=0), curve_from(*TABLES[1], class_id=1),
              curve_from([0.7, 0.2], [0, 0], 3, class_id=2), curve_from([], [], 0, class_id=3)]
    categories = {0: "critical", 1: "general", 2: "critical", 3: "important"}
    points = fit.choose_thresholds(curves, categories, 0.9, defaults=[0.15, 0.15, 0.3, 0.2])
    assert points[0].threshold == pytest.approx(fit.critical_threshold(curves[0], 0.9).threshold)
    assert points[1].threshold == pytest.approx(fit.max_f1_threshold(curves[1]).threshold)
    assert [p.threshold for p in points[2:]] == [0.3, 0.2]
    assert points[2].rule.startswith("default") and points[2].kept == 1 and points[2].tp == 0
    by_category = fit.category_points(points, categories)
    critical = [points[0], points[2]]
    assert by_category["critical"]["recall"] == pytest.approx(sum(p.tp for p in critical) /
                                                              float(sum(p.num_gt for p in critical)))
    assert by_category["important"]["recall"] is None and by_category["important"]["precision"] is None
    assert by_category["overall"]["gt"] == 5 + 6 + 3


def test_temperature_leaves_per_class_ap_unchanged():
    rng = np.random.default_rng(1)
    predictions, ground_truth = [], []
    for _ in range(12):
        gt = rng.uniform(0, 200, (6, 2)).astype(np.float32)
        gt = np.concatenate([gt, gt + rng.uniform(10, 40, (6, 2)).astype(np.float32)], axis=1)
        gt_cls = rng.integers(0, 3, 6)
        noisy = np.concatenate([gt + rng.normal(0, 3, gt.shape).astype(np.float32),
                                rng.uniform(0, 240, (8, 4)).astype(np.float32)])
        noisy[:, 2:] = np.maximum(noisy[:, 2:], noisy[:, :2] + 1)
        predictions.append(Detections(noisy, rng.random(14).astype(np.float32),
                                      np.concatenate([gt_cls, rng.integers(0, 3, 8)])))
        ground_truth.append((gt, gt_cls))
    temperatures = [0.4, 1.7, 3.0]
    calibrated = [d.with_scores(calibrate_scores(d.score, d.class_id, temperatures)) for d in predictions]
    before = fit.curves_of(predictions, ground_truth, 3, 0.5)
    after = fit.curves_of(calibrated, ground_truth, 3, 0.5)
    assert any(not np.allclose(a.scores, b.scores) for a, b in zip(after, before))
    for b, a in zip(before, after):
        assert a.ap50 == pytest.approx(b.ap50, abs=1e-12) and np.array_equal(a.tp, b.tp)


def test_matched_flags_follow_the_detections_order():
    gt = (np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([0, 1]))
    det = Detections(np.array([[50, 50, 60, 60], [0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32),
                     np.array([0.5, 0.4, 0.9, 0.3], np.float32), np.array([1, 0, 0, 1]))
    # class 0: the 0.9 box (IoU 0.81) takes the ground truth before the exact 0.4 box; class 1's 0.3 box misses.
    assert fit.matched_flags(det, gt, 0.5).tolist() == [True, False, True, False]
    assert fit.matched_flags(Detections.empty(), gt, 0.5).tolist() == []
