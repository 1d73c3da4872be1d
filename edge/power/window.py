"""Energy over a time window, as pure functions of sample arrays.

Power samples are integrated with the trapezoid rule after clipping to the
window; the power at each window edge is interpolated linearly between the
neighbouring samples (held constant beyond the first or last sample). Meters
with an energy counter use the counter difference over the window instead,
interpolated the same way at the edges.
"""
import collections

import numpy as np

from edge.errors import ConfigError, MeterUnavailable

_MEASUREMENT_FIELDS = (
    "name",
    "t_begin_s",
    "t_end_s",
    "duration_s",
    "energy_j",
    "mean_power_w",
    "sample_count",  # samples with t_begin_s <= t <= t_end_s
    "source",
    "measured",
)


class Measurement(collections.namedtuple("Measurement", _MEASUREMENT_FIELDS)):
    """Energy of one named window (the `end_window` result)."""

    __slots__ = ()


def _as_trace(t_s, values, what):
    t = np.asarray(t_s, dtype=np.float64).reshape(-1)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if t.shape[0] == 0:
        raise MeterUnavailable("no power samples to compute {} from".format(what))
    if v.shape != t.shape:
        raise ConfigError("{}: {} times but {} values".format(what, t.shape[0], v.shape[0]))
    if np.any(np.diff(t) < 0):
        raise ConfigError("{}: sample times must not decrease".format(what))
    return t, v


def _check_window(t_begin_s, t_end_s):
    if not t_end_s >= t_begin_s:
        raise ConfigError("window ends ({}) before it begins ({})".format(t_end_s, t_begin_s))


def trapezoid_j(t_s, power_w):
    """Trapezoid integral of power over time: sum of (w[i] + w[i+1]) / 2 * dt."""
    t = np.asarray(t_s, dtype=np.float64)
    w = np.asarray(power_w, dtype=np.float64)
    if t.shape[0] < 2:
        return 0.0
    return float(np.sum((w[1:] + w[:-1]) * np.diff(t)) / 2.0)


def clip_trace(t_s, power_w, t_begin_s, t_end_s):
    """Samples inside (t_begin_s, t_end_s) with interpolated values added at both edges."""
    _check_window(t_begin_s, t_end_s)
    t, w = _as_trace(t_s, power_w, "power window")
    inside = (t > t_begin_s) & (t < t_end_s)
    edges = np.interp([t_begin_s, t_end_s], t, w)
    clipped_t = np.concatenate(([t_begin_s], t[inside], [t_end_s]))
    clipped_w = np.concatenate(([edges[0]], w[inside], [edges[1]]))
    return clipped_t, clipped_w


def window_energy_j(t_s, power_w, t_begin_s, t_end_s):
    """Energy (J) between the window edges from power samples (W)."""
    return trapezoid_j(*clip_trace(t_s, power_w, t_begin_s, t_end_s))


def counter_window_energy_j(t_s, counter_j, t_begin_s, t_end_s):
    """Energy (J) between the window edges from a cumulative energy counter (J)."""
    _check_window(t_begin_s, t_end_s)
    t, c = _as_trace(t_s, counter_j, "energy counter window")
    edges = np.interp([t_begin_s, t_end_s], t, c)
    return float(edges[1] - edges[0])


def count_samples(t_s, t_begin_s, t_end_s):
    """Number of samples with t_begin_s <= t <= t_end_s."""
    t = np.asarray(t_s, dtype=np.float64)
    return int(np.count_nonzero((t >= t_begin_s) & (t <= t_end_s)))


def measure_samples(name, samples, t_begin_s, t_end_s):
    """A `Measurement` of `samples` (sequence of `Sample`) over the window.

    Uses the energy counter when every sample has one, else integrates power.
    """
    samples = list(samples)
    if not samples:
        raise MeterUnavailable("power window {!r} has no samples".format(name))
    t = [s.t_monotonic_s for s in samples]
    if all(s.energy_j is not None for s in samples):
        energy_j = counter_window_energy_j(t, [s.energy_j for s in samples], t_begin_s, t_end_s)
    else:
        energy_j = window_energy_j(t, [s.power_w for s in samples], t_begin_s, t_end_s)
    duration_s = float(t_end_s - t_begin_s)
    if duration_s > 0:
        mean_w = energy_j / duration_s
    else:
        mean_w = float(np.interp(t_begin_s, t, [s.power_w for s in samples]))
    sources = sorted(set(s.source for s in samples))
    return Measurement(
        name=name,
        t_begin_s=float(t_begin_s),
        t_end_s=float(t_end_s),
        duration_s=duration_s,
        energy_j=float(energy_j),
        mean_power_w=float(mean_w),
        sample_count=count_samples(t, t_begin_s, t_end_s),
        source="+".join(sources),
        measured=all(s.measured for s in samples),
    )


def _check_frames(frames):
    if int(frames) <= 0:
        raise ConfigError("frames must be a positive count, got {!r}".format(frames))
    return int(frames)


def energy_per_frame_j(measurement, frames):
    """Gross energy per frame (J): the whole window's energy over its frames."""
    return measurement.energy_j / _check_frames(frames)


def net_energy_per_frame_j(measurement, frames, idle_power_w):
    """Energy per frame above idle (J): (energy - idle_power_w x duration) / frames."""
    frames = _check_frames(frames)
    return (measurement.energy_j - float(idle_power_w) * measurement.duration_s) / frames
