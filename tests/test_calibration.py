import numpy as np
import pytest

from edge.calibration import calibrate, calibrate_scores, check_temperatures
from edge.detections import Detections
from edge.errors import ConfigError


def test_temperature_one_is_identity():
    s = np.array([0.0, 1e-9, 0.3, 0.999999, 1.0], np.float32)
    np.testing.assert_array_equal(calibrate_scores(s, np.zeros(5, int), [1.0]), s)


@pytest.mark.parametrize("p,t", [(0.9, 2.0), (0.2, 0.5), (0.5, 3.0), (0.75, 1.5)])
def test_formula(p, t):
    expected = 1 / (1 + np.exp(-np.log(p / (1 - p)) / t))
    assert calibrate_scores([p], [1], [1.0, t])[0] == pytest.approx(expected, abs=1e-6)


def test_per_class_and_order_preserved():
    d = Detections([[0, 0, 1, 1]] * 3, [0.9, 0.9, 0.6], [0, 1, 1])
    out = calibrate(d, [1.0, 2.0])
    assert out.score[0] == np.float32(0.9) and out.score[1] < 0.9 and out.score[1] > out.score[2]


def test_empty():
    assert len(calibrate(Detections.empty(), [2.0])) == 0


@pytest.mark.parametrize("temps,n", [([1.0], 2), ([0.0, 1.0], 2), ([np.nan], 1), ([-1], 1)])
def test_bad_temperatures(temps, n):
    with pytest.raises(ConfigError):
        check_temperatures(temps, n)
