import math

import cv2
import numpy as np
import pytest

from trainer.active import uncertainty as unc
from trainer.active.select import choose, hamming, perceptual_hash
from trainer.errors import TrainerError


def binary_entropy_bits(p):
    return -sum(q * math.log2(q) for q in (p, 1 - p) if q > 0)


def entropy_with_background(s):
    q = list(s) + [1 - max(s)]
    total = sum(q)
    return -sum(v / total * math.log(v / total) for v in q if v > 0) / math.log(len(s) + 1)


SCORE_ROWS = [
    [0.9, 0.05, 0.01],
    [0.4, 0.35, 0.0],
    [0.6, 0.6, 0.1],
    [0.05, 0.02, 0.01],
    [1.0, 0.0, 0.0],
]


@pytest.mark.parametrize("row", SCORE_ROWS)
@pytest.mark.parametrize("low_conf", [0.7, 0.5])
def test_least_confidence(row, low_conf):
    expected = 1 - max(row) if max(row) < low_conf else 0.0
    assert unc.least_confidence([row], low_conf)[0] == pytest.approx(expected)


@pytest.mark.parametrize("row", SCORE_ROWS)
def test_margin_multiclass(row):
    p1, p2 = sorted(row)[-1], sorted(row)[-2]
    assert unc.margin([row])[0] == pytest.approx((1 - (p1 - p2)) ** 2)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 0.7, 0.99, 1.0])
def test_one_class_margin_and_entropy_use_the_complement(p):
    assert unc.margin([[p]])[0] == pytest.approx((1 - abs(p - (1 - p))) ** 2)
    assert unc.entropy([[p]])[0] == pytest.approx(binary_entropy_bits(p))


@pytest.mark.parametrize("row", SCORE_ROWS)
def test_entropy_multiclass(row):
    assert unc.entropy([row])[0] == pytest.approx(entropy_with_background(row))
    assert 0.0 <= unc.entropy([row])[0] <= 1.0


@pytest.mark.parametrize("strategy", ["least_confidence", "entropy", "margin"])
def test_empty_and_single_input(strategy):
    assert unc.detection_uncertainty(strategy, np.zeros((0, 3))).shape == (0,)
    assert unc.image_uncertainty(strategy, np.zeros((0, 3)), "sum", empty_score=0.25) == 0.25
    assert unc.detection_uncertainty(strategy, [[0.3, 0.2]]).shape == (1,)


VALUES = [0.2, 0.5, 0.1, 0.7]
INDEX = [0, 0, 2, 2]


@pytest.mark.parametrize("how, expected", [
    ("sum", [0.2 + 0.5, None, 0.1 + 0.7]),
    ("mean", [(0.2 + 0.5) / 2, None, (0.1 + 0.7) / 2]),
    ("max", [0.5, None, 0.7]),
])
@pytest.mark.parametrize("empty", [0.0, 9.0])
def test_aggregate(how, expected, empty):
    out = unc.aggregate(VALUES, INDEX, 3, how, empty_score=empty)
    assert out == pytest.approx([empty if e is None else e for e in expected])


def test_aggregate_rejects_unknown():
    with pytest.raises(TrainerError, match="sum, mean, max"):
        unc.aggregate([], [], 0, "median")


def box_iou_1(a, b):
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


A = [0, 0, 10, 10]
A_SHIFTED = [1, 0, 11, 10]
FAR = [50, 50, 60, 60]


@pytest.mark.parametrize("case, boxes, scores, classes, expected", [
    ("agree exactly", [[A], [A]], [[0.9], [0.8]], [[0], [0]], [[0.0], [0.0]]),
    ("shifted", [[A], [A_SHIFTED]], [[0.9], [0.8]], [[0], [0]],
     [[0.9 * (1 - box_iou_1(A, A_SHIFTED))], [0.8 * (1 - box_iou_1(A, A_SHIFTED))]]),
    ("class differs", [[A], [A]], [[0.9], [0.8]], [[0], [1]], [[0.9], [0.8]]),
    ("only one model", [[A, FAR], [A]], [[0.9, 0.6], [0.8]], [[0, 0], [0]], [[0.0, 0.6], [0.0]]),
    ("other empty", [[A], []], [[0.7], []], [[0], []], [[0.7], []]),
])
def test_disagreement_values(case, boxes, scores, classes, expected):
    out = unc.disagreement_values(boxes, scores, classes, match_iou=0.5)
    for got, want in zip(out, expected):
        assert got == pytest.approx(want), case


def test_disagreement_three_models_averages_the_others():
    out = unc.disagreement_values([[A], [A], [FAR]], [[1.0], [1.0], [0.5]], [[0], [0], [0]])
    assert out[0] == pytest.approx([1 - (1 + 0) / 2]) and out[2] == pytest.approx([0.5])
    assert unc.image_disagreement([[A], [A], [FAR]], [[1.0], [1.0], [0.5]], [[0], [0], [0]], "max") \
        == pytest.approx(0.5)


def test_disagreement_needs_two_models():
    with pytest.raises(TrainerError, match="two models"):
        unc.disagreement_values([[A]], [[0.5]], [[0]])


def smooth_image(seed, shape=(120, 160)):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, shape + (3,), dtype=np.uint8), (0, 0), 4)


def test_noised_copy_is_a_near_duplicate_and_another_image_is_not():
    image = smooth_image(1)
    noise = np.random.default_rng(9).normal(0, 3, image.shape)
    noisy = np.clip(image + noise, 0, 255).astype(np.uint8)
    h = perceptual_hash(image)
    assert h.shape == (64,) and h.dtype == bool
    assert hamming(h, perceptual_hash(noisy))[0] <= 4
    assert hamming(h, perceptual_hash(smooth_image(2)))[0] > 16


def test_choose_skips_near_duplicates_and_breaks_ties_by_name():
    images = [smooth_image(1), smooth_image(1), smooth_image(2), smooth_image(3)]
    hashes = np.stack([perceptual_hash(i) for i in images])
    # b duplicates a; c and d tie.
    picked = choose([0.9, 0.95, 0.5, 0.5], hashes, ["a", "b", "d", "c"], k=3, max_distance=8)
    assert picked == [1, 3, 2]
    assert choose([0.9, 0.95, 0.5, 0.5], hashes, ["a", "b", "d", "c"], k=3, max_distance=-1) == [1, 0, 3]
    assert choose([], np.zeros((0, 64), bool), [], k=3) == []
