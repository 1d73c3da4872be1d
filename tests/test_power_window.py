"""Energy-window math: trapezoid over clipped samples, counters, per-frame helpers."""
import numpy as np
import pytest

from edge.errors import ConfigError, MeterUnavailable
from edge.power.base import make_sample
from edge.power.window import (
    clip_trace,
    count_samples,
    counter_window_energy_j,
    energy_per_frame_j,
    measure_samples,
    net_energy_per_frame_j,
    trapezoid_j,
    window_energy_j,
)


def ramp_energy_j(a, b, t0, t1):
    """Integral of a + b t from t0 to t1."""
    return a * (t1 - t0) + b / 2.0 * (t1 ** 2 - t0 ** 2)


CONSTANT_W = 4.2
RAMP_A, RAMP_B = 1.5, 0.75  # W, W/s: 1.5 W idle rising towards load


@pytest.mark.parametrize(
    "t, w, t0, t1, expected",
    [
        # constant power: P x duration, wherever the edges fall
        (np.arange(0.0, 4.0), np.full(4, CONSTANT_W), 0.0, 3.0, CONSTANT_W * 3.0),
        (np.arange(0.0, 4.0), np.full(4, CONSTANT_W), 0.3, 2.6, CONSTANT_W * 2.3),
        # linear ramp: trapezoid is exact, edges interpolated between samples
        (np.arange(0.0, 5.0), RAMP_A + RAMP_B * np.arange(0.0, 5.0), 0.0, 4.0, ramp_energy_j(RAMP_A, RAMP_B, 0.0, 4.0)),
        (np.arange(0.0, 5.0), RAMP_A + RAMP_B * np.arange(0.0, 5.0), 0.4, 3.7, ramp_energy_j(RAMP_A, RAMP_B, 0.4, 3.7)),
        # irregular sample times on the same ramp
        (np.array([0.0, 0.3, 1.9, 2.0, 3.5]), RAMP_A + RAMP_B * np.array([0.0, 0.3, 1.9, 2.0, 3.5]), 0.1, 3.2,
         ramp_energy_j(RAMP_A, RAMP_B, 0.1, 3.2)),
        # window strictly between two samples (w = t): (t1^2 - t0^2) / 2
        (np.array([0.0, 10.0]), np.array([0.0, 10.0]), 2.0, 5.0, (5.0 ** 2 - 2.0 ** 2) / 2.0),
        # before the first sample the first value is held: w0 x gap + trapezoid
        (np.array([1.0, 2.0]), np.array([2.0, 4.0]), 0.0, 2.0, 2.0 * 1.0 + (2.0 + 4.0) / 2.0 * 1.0),
        # after the last sample the last value is held
        (np.array([0.0, 1.0]), np.array([2.0, 4.0]), 0.0, 3.0, (2.0 + 4.0) / 2.0 + 4.0 * 2.0),
        # a step between samples is a straight line under the trapezoid rule
        (np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 5.0]), 0.0, 2.0, 1.0 * 1.0 + (1.0 + 5.0) / 2.0),
        # zero-length window
        (np.arange(0.0, 3.0), np.array([1.0, 2.0, 3.0]), 1.5, 1.5, 0.0),
        # a single sample: held over the whole window
        (np.array([5.0]), np.array([1.25]), 4.0, 6.0, 1.25 * 2.0),
    ],
)
def test_window_energy_matches_formula(t, w, t0, t1, expected):
    assert window_energy_j(t, w, t0, t1) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_trapezoid_of_fewer_than_two_samples_is_zero():
    assert trapezoid_j([], []) == 0.0
    assert trapezoid_j([1.0], [5.0]) == 0.0


def test_clip_trace_interpolates_edges_and_keeps_inner_samples():
    t = np.array([0.0, 1.0, 2.0, 3.0])
    w = np.array([1.0, 3.0, 5.0, 7.0])  # w = 1 + 2 t
    ct, cw = clip_trace(t, w, 0.5, 2.25)
    np.testing.assert_allclose(ct, [0.5, 1.0, 2.0, 2.25])
    np.testing.assert_allclose(cw, 1.0 + 2.0 * ct)


@pytest.mark.parametrize(
    "t0, t1",
    [(0.0, 5.0), (1.25, 3.5), (0.2, 0.7), (4.5, 4.5)],
)
def test_counter_energy_is_counter_difference(t0, t1):
    rate_w, offset_j = 3.0, 100.0
    t = np.arange(0.0, 6.0)
    counter = offset_j + rate_w * t
    assert counter_window_energy_j(t, counter, t0, t1) == pytest.approx(rate_w * (t1 - t0))


@pytest.mark.parametrize(
    "t, t0, t1, expected",
    [
        ([0.0, 1.0, 2.0, 3.0], 1.0, 2.0, 2),
        ([0.0, 1.0, 2.0, 3.0], 0.5, 2.5, 2),
        ([0.0, 1.0], 2.0, 3.0, 0),
        ([], 0.0, 1.0, 0),
    ],
)
def test_count_samples_is_inclusive(t, t0, t1, expected):
    assert count_samples(t, t0, t1) == expected


def _samples(t, w, counter=None, source="ina3221:iio", measured=True):
    counter = [None] * len(t) if counter is None else counter
    return [make_sample(ti, wi, {}, source, measured, ci) for ti, wi, ci in zip(t, w, counter)]


def test_measure_samples_integrates_power_without_counter():
    t = np.arange(0.0, 5.0)
    w = RAMP_A + RAMP_B * t
    m = measure_samples("batch", _samples(t, w), 0.5, 3.5)
    expected = ramp_energy_j(RAMP_A, RAMP_B, 0.5, 3.5)
    assert m.name == "batch"
    assert m.duration_s == pytest.approx(3.0)
    assert m.energy_j == pytest.approx(expected)
    assert m.mean_power_w == pytest.approx(expected / 3.0)
    assert m.sample_count == 3
    assert m.source == "ina3221:iio"
    assert m.measured is True


def test_measure_samples_prefers_the_energy_counter():
    t = np.arange(0.0, 5.0)
    rate_w = 2.0
    # power_w is deliberately wrong: the counter must win
    m = measure_samples("gpu", _samples(t, np.full(5, 999.0), counter=list(rate_w * t), source="nvml"), 1.0, 4.0)
    assert m.energy_j == pytest.approx(rate_w * 3.0)
    assert m.mean_power_w == pytest.approx(rate_w)


def test_measure_samples_zero_length_window_reports_instant_power():
    m = measure_samples("now", _samples([0.0, 2.0], [1.0, 3.0]), 1.0, 1.0)
    assert m.energy_j == 0.0
    assert m.mean_power_w == pytest.approx(2.0)


def test_measure_samples_is_estimated_when_any_sample_is():
    samples = _samples([0.0, 1.0], [2.0, 2.0], source="estimated:proc-stat", measured=False)
    m = measure_samples("est", samples, 0.0, 1.0)
    assert m.measured is False
    assert "estimated" in m.source


@pytest.mark.parametrize(
    "energy_j, duration_s, frames, idle_w", [(30.0, 5.0, 10, 1.5), (6.0, 2.0, 1, 2.0), (12.5, 4.0, 25, 0.0)]
)
def test_per_frame_energy_gross_and_net(energy_j, duration_s, frames, idle_w):
    m = measure_samples("x", _samples([0.0, duration_s], [energy_j / duration_s] * 2), 0.0, duration_s)
    assert energy_per_frame_j(m, frames) == pytest.approx(energy_j / frames)
    assert net_energy_per_frame_j(m, frames, idle_w) == pytest.approx((energy_j - idle_w * duration_s) / frames)


def test_errors_name_the_problem():
    with pytest.raises(ConfigError, match="before it begins"):
        window_energy_j([0.0, 1.0], [1.0, 1.0], 2.0, 1.0)
    with pytest.raises(MeterUnavailable, match="no power samples"):
        window_energy_j([], [], 0.0, 1.0)
    with pytest.raises(ConfigError, match="must not decrease"):
        window_energy_j([1.0, 0.0], [1.0, 1.0], 0.0, 1.0)
    with pytest.raises(ConfigError, match="2 times but 3 values"):
        window_energy_j([0.0, 1.0], [1.0, 1.0, 1.0], 0.0, 1.0)
    with pytest.raises(MeterUnavailable, match="'empty'"):
        measure_samples("empty", [], 0.0, 1.0)
    m = measure_samples("x", _samples([0.0, 1.0], [1.0, 1.0]), 0.0, 1.0)
    with pytest.raises(ConfigError, match="frames must be a positive"):
        energy_per_frame_j(m, 0)
