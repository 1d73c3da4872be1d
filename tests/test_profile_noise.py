"""trainer.profile_noise: the paired bootstrap behind "the richer profile is not worse within noise"."""
import numpy as np
import pytest

from edge.detections import Detections
from edge.metrics import average_precision, class_curve, evaluate
from trainer.profile_noise import ladder_checks, map50_weighted, matched_by_class, paired_difference

NC = 3


def _scene(rng, images=40):
    """Ground truth and detections: most boxes found near their place with high scores, some false positives."""
    truth, found = [], []
    for _ in range(images):
        n = rng.randint(0, 4)
        xy = rng.uniform(0, 200, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(20, 60, (n, 2))], axis=1).astype(np.float32)
        cls = rng.randint(0, NC, n)
        keep = rng.uniform(size=n) < 0.8
        jitter = gt[keep] + rng.normal(0, 2, (int(keep.sum()), 4)).astype(np.float32)
        fp_xy = rng.uniform(0, 200, (2, 2))
        fp = np.concatenate([fp_xy, fp_xy + 30], axis=1).astype(np.float32)
        xyxy = np.concatenate([jitter, fp]).reshape(-1, 4)
        score = np.concatenate([rng.uniform(0.4, 1.0, len(jitter)), rng.uniform(0.0, 0.6, 2)]).astype(np.float32)
        found.append(Detections(xyxy, score, np.concatenate([cls[keep], rng.randint(0, NC, 2)]).astype(np.int32)))
        truth.append((gt, cls))
    return found, truth


def _worse(found, rng):
    """The same boxes with their scores shuffled within each image and a share of true boxes dropped."""
    out = []
    for d in found:
        keep = rng.uniform(size=len(d)) < 0.6
        out.append(Detections(d.xyxy[keep], rng.permutation(d.score[keep]), d.class_id[keep]))
    return out


def test_unit_weights_give_edge_metrics_map50():
    found, truth = _scene(np.random.RandomState(0))
    matched, counts = matched_by_class(found, truth, NC)
    assert map50_weighted(matched, counts, np.ones(len(truth), np.int64)) == pytest.approx(
        evaluate(found, truth, NC)["map50"], abs=1e-12)


def test_average_precision_is_class_curves_ap():
    found, truth = _scene(np.random.RandomState(1))
    curve = class_curve(1, found, truth)
    assert average_precision(curve.tp, curve.num_gt) == pytest.approx(curve.ap50, abs=1e-12)


def test_a_profile_against_itself_is_zero_and_holds():
    found, truth = _scene(np.random.RandomState(2))
    check = paired_difference(found, found, truth, NC, rounds=50)
    assert check["difference"] == 0.0 and check["interval"] == [0.0, 0.0] and check["holds"]


def test_a_clearly_worse_profile_fails_and_a_better_one_holds():
    rng = np.random.RandomState(3)
    found, truth = _scene(rng, images=60)
    worse = _worse(found, rng)
    down = paired_difference(worse, found, truth, NC, rounds=100)
    assert down["difference"] < 0 and down["interval"][1] < 0 and not down["holds"]
    up = paired_difference(found, worse, truth, NC, rounds=100)
    assert up["difference"] == pytest.approx(-down["difference"]) and up["holds"]
    assert up["interval"][0] <= up["difference"] <= up["interval"][1]


def test_ladder_compares_each_measured_profile_with_the_one_before():
    rng = np.random.RandomState(4)
    found, truth = _scene(rng)
    checks = ladder_checks({"single": found, "ensemble_flip": _worse(found, rng), "cascade": found}, truth, NC,
                           rounds=20)
    assert list(checks) == ["ensemble_flip"] and checks["ensemble_flip"]["than"] == "single"
