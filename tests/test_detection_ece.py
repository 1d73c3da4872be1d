"""D-ECE against netcal 1.4.0's ECE(bins, detection=True) on the same inputs, and on hand tables."""
import numpy as np
import pytest

from trainer.detection_ece import detection_ece, reliability_bins
from trainer.errors import TrainerError

netcal = pytest.importorskip("netcal.metrics")


@pytest.mark.parametrize("seed", range(8))
def test_equals_netcal_on_random_detections(seed):
    rng = np.random.default_rng(seed)
    n, bins = int(rng.integers(1, 4000)), int(rng.integers(2, 25))
    confidences = rng.random(n) ** float(rng.uniform(0.3, 3.0))
    if seed % 2:
        # values on bin edges, 0 and 1: the edge rules must agree too
        confidences[: n // 3] = np.round(confidences[: n // 3] * bins) / bins
    matched = (rng.random(n) < confidences ** 1.5).astype(int)
    expected = netcal.ECE(bins, detection=True).measure(confidences, matched)
    assert detection_ece(confidences, matched, bins) == pytest.approx(expected, abs=1e-9)


def test_equals_netcal_on_float32_scores_off_the_edges():
    # On float32 values lying exactly on a bin edge netcal disagrees with itself (numpy's histogramdd counts
    # them in the upper bin, scipy's binned_statistic_dd averages them in the lower one); off the edges it
    # is one rule, and ours (histogramdd's in float64) matches it.
    rng = np.random.default_rng(5)
    confidences = rng.random(3000).astype(np.float32)
    matched = (rng.random(3000) < confidences).astype(int)
    expected = netcal.ECE(10, detection=True).measure(confidences, matched)
    assert detection_ece(confidences, matched, 10) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("confidences, matched, bins, expected", [
    ([0.2, 0.2, 0.8, 0.8], [0, 0, 1, 1], 2, 0.5 * 0.2 + 0.5 * 0.2),          # each bin off by 0.2
    ([0.25, 0.75], [0, 1], 2, 0.25),
    ([0.9, 0.9, 0.9, 0.9], [1, 1, 1, 0], 10, abs(0.75 - 0.9)),
    ([0.05, 0.95], [0, 1], 10, 0.05),
    ([1.0, 0.0], [1, 0], 4, np.finfo(np.float64).eps),                         # clipped to [eps, 1 - eps]
])
def test_hand_tables(confidences, matched, bins, expected):
    assert detection_ece(confidences, matched, bins) == pytest.approx(expected, abs=1e-12)


def test_bins_hold_counts_confidences_and_precision():
    table = reliability_bins([0.05, 0.1, 0.15, 0.95, 1.0], [0, 1, 1, 1, 0], bins=2)
    assert table.edges.tolist() == [0.0, 0.5, 1.0]
    assert table.count.tolist() == [3, 2]
    assert table.confidence == pytest.approx([0.1, (0.95 + 1.0 - np.finfo(float).eps) / 2])
    assert table.precision == pytest.approx([2 / 3.0, 0.5])


def test_empty_and_bad_input():
    assert np.isnan(detection_ece([], [], 10))
    assert reliability_bins([], [], 3).count.tolist() == [0, 0, 0]
    with pytest.raises(TrainerError, match="3 confidences for 2 matched flags"):
        detection_ece([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(TrainerError, match="bins"):
        reliability_bins([0.1], [1], 0)
