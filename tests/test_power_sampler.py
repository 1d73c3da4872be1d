"""Background sampler, energy windows, idle baseline and the `power` command."""
import argparse
import io
import os
import re
import time

import pytest

from edge.errors import ConfigError, EdgeError, MeterUnavailable
from edge.power.base import Meter, make_sample
from edge.power.command import add_power_parser, run_power
from edge.power.replay import ReplayMeter, Trace
from edge.power.sampler import PowerSampler
from edge.power.window import energy_per_frame_j, net_energy_per_frame_j

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "power")
FAST_S = 0.01


class RecordingClock(object):
    """time.monotonic that remembers its first reading (the replay meter's open time)."""

    def __init__(self):
        self.first = None

    def __call__(self):
        t = time.monotonic()
        if self.first is None:
            self.first = t
        return t


def constant_meter(power_w):
    return ReplayMeter(Trace([0.0, 1.0], [power_w, power_w]), label="replay:constant").open()


def test_window_on_constant_power_is_power_times_duration():
    power_w = 3.2
    with PowerSampler(constant_meter(power_w), interval_s=FAST_S) as sampler:
        sampler.begin_window("batch")
        time.sleep(0.15)
        m = sampler.end_window("batch")
    assert m.energy_j == pytest.approx(power_w * m.duration_s, rel=1e-9)
    assert m.mean_power_w == pytest.approx(power_w)
    assert m.duration_s >= 0.15
    assert m.sample_count >= 3
    assert m.source == "replay:constant" and m.measured is True


def test_window_on_linear_ramp_matches_integral():
    a_w, b_w_per_s = 1.0, 10.0  # power = a + b x (time since the meter opened)
    clock = RecordingClock()
    meter = ReplayMeter(Trace([0.0, 100.0], [a_w, a_w + b_w_per_s * 100.0]), loop=False, clock=clock).open()
    with PowerSampler(meter, interval_s=FAST_S) as sampler:
        time.sleep(0.03)
        sampler.begin_window("ramp")
        time.sleep(0.12)
        m = sampler.end_window("ramp")
    e0, e1 = m.t_begin_s - clock.first, m.t_end_s - clock.first
    expected = a_w * (e1 - e0) + b_w_per_s / 2.0 * (e1 ** 2 - e0 ** 2)
    assert m.energy_j == pytest.approx(expected, rel=1e-6)


def test_nested_windows_and_name_errors():
    with PowerSampler(constant_meter(2.0), interval_s=FAST_S) as sampler:
        sampler.begin_window("outer")
        sampler.begin_window("inner")
        with pytest.raises(ConfigError, match="'inner' is already open"):
            sampler.begin_window("inner")
        time.sleep(0.03)
        inner = sampler.end_window("inner")
        with pytest.raises(ConfigError, match=r"no power window named 'inner' is open \(open: \['outer'\]\)"):
            sampler.end_window("inner")
        outer = sampler.end_window("outer")
        with pytest.raises(ConfigError, match="'never'"):
            sampler.end_window("never")
    assert outer.duration_s > inner.duration_s
    assert sampler.open_windows() == []


class FailingMeter(Meter):
    name = "flaky"

    def __init__(self, error, good_reads=2):
        self.error = error
        self.good_reads = good_reads
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.reads > self.good_reads:
            raise self.error
        return make_sample(time.monotonic(), 1.0, {}, self.name)


@pytest.mark.parametrize(
    "error, expected_type, message",
    [
        (OSError(5, "Input/output error"), MeterUnavailable, "power sampler thread failed reading flaky.*Input/output"),
        (MeterUnavailable("rail went away"), MeterUnavailable, "^rail went away$"),
    ],
)
def test_thread_errors_reach_the_owner(error, expected_type, message):
    sampler = PowerSampler(FailingMeter(error), interval_s=FAST_S).start()
    try:
        time.sleep(0.1)
        with pytest.raises(expected_type, match=message):
            sampler.latest()
        with pytest.raises(EdgeError):
            sampler.begin_window("after-failure")
    finally:
        sampler.stop()


def test_memory_is_bounded_and_evicted_windows_raise():
    with PowerSampler(constant_meter(1.0), interval_s=0.002, max_samples=5) as sampler:
        sampler.begin_window("long")
        time.sleep(0.1)
        assert len(sampler.samples()) == 5
        with pytest.raises(ConfigError, match="'long' began before the oldest kept sample: raise max_samples"):
            sampler.end_window("long")


class CounterMeter(Meter):
    """Energy counter rising at `rate_w`; its power figure is deliberately wrong."""

    name = "counter"
    has_energy_counter = True

    def __init__(self, rate_w):
        self.rate_w = rate_w
        self.t0 = time.monotonic()

    def read(self):
        t = time.monotonic()
        return make_sample(t, 999.0, {}, self.name, True, energy_j=self.rate_w * (t - self.t0))


def test_counter_meter_windows_use_counter_differences():
    with PowerSampler(CounterMeter(rate_w=12.5), interval_s=FAST_S) as sampler:
        sampler.begin_window("gpu")
        time.sleep(0.05)
        m = sampler.end_window("gpu")
    assert m.energy_j == pytest.approx(12.5 * m.duration_s, rel=1e-6)


def test_idle_baseline_and_net_energy_per_frame():
    idle_w, busy_w, frames = 1.3, 5.5, 20
    with PowerSampler(constant_meter(idle_w), interval_s=FAST_S) as sampler:
        assert sampler.measure_idle(0.05) == pytest.approx(idle_w)
        assert sampler.idle_power_w == pytest.approx(idle_w)
    with PowerSampler(constant_meter(busy_w), interval_s=FAST_S) as sampler:
        sampler.begin_window("frames")
        time.sleep(0.05)
        m = sampler.end_window("frames")
    assert energy_per_frame_j(m, frames) == pytest.approx(busy_w * m.duration_s / frames)
    assert net_energy_per_frame_j(m, frames, idle_w) == pytest.approx((busy_w - idle_w) * m.duration_s / frames)


@pytest.mark.parametrize("kwargs, message", [({"interval_s": 0}, "interval_s"), ({"max_samples": 1}, "max_samples")])
def test_sampler_rejects_bad_settings(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PowerSampler(constant_meter(1.0), **kwargs)


# ---- the `power` command --------------------------------------------------------


def parse(argv):
    parser = argparse.ArgumentParser(prog="edge")
    subparsers = parser.add_subparsers(dest="command")
    add_power_parser(subparsers)
    return parser.parse_args(argv)


def test_power_parser_defaults():
    args = parse(["power"])
    assert (args.meter, args.seconds, args.interval, args.root) == ("auto", 10.0, 0.5, "/")
    assert args.func is run_power


def test_power_parser_rejects_unknown_meter(capsys):
    with pytest.raises(SystemExit):
        parse(["power", "--meter", "multimeter"])
    assert "invalid choice" in capsys.readouterr().err


def test_run_power_with_replay():
    path = os.path.join(FIXTURES, "nano_yolov8n_replay.csv")
    args = parse(["power", "--meter", "replay", "--replay-file", path, "--seconds", "0.3", "--interval", "0.05"])
    out = io.StringIO()
    assert run_power(args, out=out) == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "meter: replay:{} (measured)".format(path)
    live = [ln for ln in lines[1:-1] if re.match(r"^ +\d+\.\d\d s +\d+\.\d{3} W  POM_5V_CPU=", ln)]
    assert len(live) == len(lines) - 2 >= 3
    assert "POM_5V_GPU=" in live[0]
    summary = lines[-1]
    assert summary.startswith("window 'power': 0.3")
    assert "source replay:" in summary and summary.endswith("measured")


def test_run_power_with_estimated_meter_says_estimated(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "stat").write_text("cpu  100 0 0 900 0 0 0 0 0 0\n")
    args = parse(["power", "--meter", "estimated", "--root", str(tmp_path), "--seconds", "0.3", "--interval", "0.1",
                  "--idle-w", "1.5", "--busy-w", "6.0"])
    out = io.StringIO()
    assert run_power(args, out=out) == 0
    text = out.getvalue()
    assert text.startswith("meter: estimated:proc-stat (estimated)\n")
    assert "(estimated)" in text.splitlines()[1]
    # /proc/stat does not move in the fixture: 0 % busy, so the idle figure
    assert "mean 1.500 W" in text and "ESTIMATED (no power sensor)" in text


@pytest.mark.parametrize("flag", ["--seconds", "--interval"])
def test_run_power_rejects_non_positive_times(flag):
    args = parse(["power", "--meter", "estimated", flag, "0"])
    with pytest.raises(ConfigError, match=flag):
        run_power(args, out=io.StringIO())


def test_run_power_explicit_missing_meter_raises(tmp_path):
    args = parse(["power", "--meter", "ina3221", "--root", str(tmp_path), "--seconds", "0.1"])
    with pytest.raises(MeterUnavailable, match="no INA3221 under"):
        run_power(args, out=io.StringIO())
