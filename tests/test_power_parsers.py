"""Pure parsers: tegrastats lines, jtop power shapes, /proc/stat, replay CSV."""
import os

import numpy as np
import pytest

from edge.errors import ConfigError, MeterUnavailable
from edge.power.estimated import busy_fraction, estimate_power_w, parse_proc_stat_cpu
from edge.power.jtop import parse_jtop_power
from edge.power.replay import parse_replay_csv
from edge.power.tegrastats import parse_tegrastats_power, parse_tegrastats_rails_w

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "power")


def fixture_text(name):
    with open(os.path.join(FIXTURES, name)) as f:
        return f.read()


def fixture_lines(name):
    """Data lines of a fixture (its first-line '#' header says device and version)."""
    lines = fixture_text(name).splitlines()
    assert lines[0].startswith("# device:"), "fixture {} must name its device".format(name)
    return [ln for ln in lines[1:] if ln.strip()]


def token_mw(line, rail):
    """Current mW of `rail`, read by splitting on spaces: 'VDD_IN 5299mW/5299mW' -> 5299."""
    tokens = line.split()
    value = tokens[tokens.index(rail) + 1]
    return int(value.split("/")[0].replace("mW", ""))


@pytest.mark.parametrize(
    "fixture, input_rail, rails",
    [
        ("tegrastats_nano_jp461.txt", "POM_5V_IN", ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"]),
        ("tegrastats_xavier_nx_jp5.txt", "VDD_IN", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]),
        ("tegrastats_orin_nano_jp6.txt", "VDD_IN", ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]),
        ("tegrastats_jp7_three_value.txt", "VDD_IN", ["VDD_IN", "VDD_CPU_SOC_MSS"]),
    ],
)
def test_tegrastats_fixture_lines(fixture, input_rail, rails):
    lines = fixture_lines(fixture)
    assert len(lines) >= 2
    for line in lines:
        power_w, rails_w = parse_tegrastats_power(line)
        assert sorted(rails_w) == sorted(rails)  # RAM, SWAP, IRAM, APE... are not rails
        for rail in rails:
            assert rails_w[rail] == pytest.approx(token_mw(line, rail) / 1000.0)
        assert power_w == pytest.approx(token_mw(line, input_rail) / 1000.0)


def test_tegrastats_nano_values_are_in_realistic_range():
    idle, _, load, _ = [parse_tegrastats_power(ln)[0] for ln in fixture_lines("tegrastats_nano_jp461.txt")]
    assert 1.0 <= idle <= 2.0
    assert 4.0 <= load <= 7.0


@pytest.mark.parametrize(
    "line, expected_total_w, expected_rails",
    [
        ("POM_5V_IN 933/933", 0.933, {"POM_5V_IN": 0.933}),
        ("VDD_IN 5299mW/5299mW", 5.299, {"VDD_IN": 5.299}),
        # three values: the first is the current one, never the average
        ("VDD_IN 5299mW/4100mW/6000mW", 5.299, {"VDD_IN": 5.299}),
        # no board input rail: total is the sum of rails (AGX Xavier JetPack 4)
        ("GPU 0/0 CPU 311/311 SOC 932/932 CV 0/0 VDDRQ 621/621 SYS5V 1482/1482",
         (0 + 311 + 932 + 0 + 621 + 1482) / 1000.0,
         {"GPU": 0.0, "CPU": 0.311, "SOC": 0.932, "CV": 0.0, "VDDRQ": 0.621, "SYS5V": 1.482}),
        # memory figures look like rails but end in a unit
        ("RAM 1180/3965MB (lfb 1x2MB) IRAM 0/252kB(lfb 252kB) POM_5V_IN 4520/4680", 4.52, {"POM_5V_IN": 4.52}),
    ],
)
def test_tegrastats_line_table(line, expected_total_w, expected_rails):
    power_w, rails = parse_tegrastats_power(line)
    assert power_w == pytest.approx(expected_total_w)
    assert rails == pytest.approx(expected_rails)


def test_tegrastats_line_without_rails_raises_with_the_line():
    (line,) = fixture_lines("tegrastats_nano_2gb_jp461.txt")
    assert parse_tegrastats_rails_w(line) == {}
    with pytest.raises(MeterUnavailable, match="no power rails.*RAM 812/1980MB"):
        parse_tegrastats_power(line)


JTOP_4X = (
    {"cur": 4512, "avg": 3000},
    {"5V GPU": {"cur": 1804, "avg": 900}, "5V CPU": {"cur": 1155, "avg": 700}},
)
JTOP_42 = {
    "rail": {
        "POM_5V_GPU": {"online": True, "type": "INA3221", "status": "ok", "volt": 5000, "curr": 360,
                       "warn": 32760, "crit": 32760, "power": 1804, "avg": 900},
        "POM_5V_CPU": {"online": True, "type": "INA3221", "status": "ok", "volt": 5000, "curr": 231,
                       "warn": 32760, "crit": 32760, "power": 1155, "avg": 700},
    },
    "tot": {"volt": 5016, "curr": 900, "warn": 32760, "crit": 32760, "power": 4512, "avg": 3000,
            "name": "POM_5V_IN"},
}


@pytest.mark.parametrize("power", [JTOP_4X, JTOP_42], ids=["4.x tuple", "4.2+ dict"])
def test_jtop_power_uses_instant_not_avg(power):
    total_w, rails = parse_jtop_power(power)
    assert total_w == pytest.approx(4512 / 1000.0)
    assert sum(rails.values()) == pytest.approx((1804 + 1155) / 1000.0)


def test_jtop_power_without_total_sums_rails():
    total_w, rails = parse_jtop_power({"rail": JTOP_42["rail"], "tot": {}})
    assert total_w == pytest.approx((1804 + 1155) / 1000.0)


@pytest.mark.parametrize("power", [None, 42, {"unexpected": 1}, (1, 2, 3), {"rail": {"A": {"avg": 5}}}])
def test_jtop_power_unknown_shape_raises(power):
    with pytest.raises(MeterUnavailable, match="jtop"):
        parse_jtop_power(power)


def test_proc_stat_fixture_and_busy_fraction():
    busy, total = parse_proc_stat_cpu(fixture_text("proc_stat_nano_idle.txt"))
    user, nice, system, idle, iowait, irq, softirq, steal = 42913, 120, 10512, 1893410, 1520, 0, 311, 0
    expected_total = user + nice + system + idle + iowait + irq + softirq + steal
    assert total == expected_total
    assert busy == expected_total - idle - iowait


@pytest.mark.parametrize(
    "previous, current, expected",
    [
        ((100, 1000), (150, 1100), 0.5),
        ((100, 1000), (100, 1100), 0.0),
        ((0, 0), (400, 400), 1.0),
        ((5, 10), (5, 10), 0.0),
    ],
)
def test_busy_fraction(previous, current, expected):
    assert busy_fraction(previous, current) == pytest.approx(expected)


@pytest.mark.parametrize("u", [0.0, 0.25, 1.0])
def test_estimate_is_linear_between_idle_and_busy(u):
    assert estimate_power_w(u, 1.5, 6.5) == pytest.approx(1.5 + 5.0 * u)


def test_replay_csv_fixture():
    trace = parse_replay_csv(fixture_text("nano_yolov8n_replay.csv"))
    np.testing.assert_allclose(trace.t_s, np.arange(9) * 0.5)
    assert set(trace.rails_w) == {"POM_5V_GPU", "POM_5V_CPU"}
    assert trace.power_w.min() > 1.0 and trace.power_w.max() < 7.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("t_s,power_w\n", "header and at least one row"),
        ("t_s\n0\n", "at least 't_s,power_w'"),
        ("t_s,power_w\n0,1\n1\n", "row 3 has 1 fields"),
        ("t_s,power_w\n0,abc\n", "row 2"),
        ("t_s,power_w\n1,1\n0,1\n", "increase"),
    ],
)
def test_replay_csv_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_replay_csv(text)
