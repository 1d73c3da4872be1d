"""Each meter on fixture trees, fake modules and fake commands; `auto` and explicit choice."""
import json
import os
import subprocess
import sys
import time
import types

import pytest

from edge.errors import ConfigError, MeterUnavailable
from edge.power import rapl as rapl_module
from edge.power.auto import AUTO_ORDER, MeterOptions, meter_names, open_meter
from edge.power.estimated import EstimatedMeter
from edge.power.ina3221 import Ina3221Meter
from edge.power.jtop import JtopMeter
from edge.power.nvml import NvmlMeter
from edge.power.rapl import RaplMeter, counter_delta
from edge.power.replay import ReplayMeter, Trace
from edge.power.tegrastats import TegrastatsMeter

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "power")
NANO_IIO = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
ORIN_HWMON = "sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
RAPL0 = "sys/class/powercap/intel-rapl:0"


def build_tree(root, fixture_name):
    """Write a JSON sysfs description under `root`; returns its `files` dict."""
    with open(os.path.join(FIXTURES, fixture_name)) as f:
        files = json.load(f)["files"]
    for rel, text in files.items():
        write(root, rel, text)
    return files


def write(root, rel, text):
    path = os.path.join(str(root), rel)
    if not os.path.isdir(os.path.dirname(path)):
        os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(text + "\n")


class FakeClock(object):
    def __init__(self, t=100.0):
        self.t = t

    def __call__(self):
        return self.t


# ---- INA3221 -------------------------------------------------------------------


def test_ina3221_nano_iio(tmp_path):
    files = build_tree(tmp_path, "sysfs_nano_ina3221x.json")
    with Ina3221Meter(root=str(tmp_path), clock=FakeClock(5.0)) as meter:
        s = meter.read()
    mw = {files[NANO_IIO + "/rail_name_{}".format(n)]: float(files[NANO_IIO + "/in_power{}_input".format(n)])
          for n in range(3)}
    assert s.source == "ina3221:iio"
    assert s.measured is True and s.energy_j is None
    assert s.t_monotonic_s == 5.0
    assert s.rails_w == pytest.approx({k: v / 1000.0 for k, v in mw.items()})
    assert s.power_w == pytest.approx(mw["POM_5V_IN"] / 1000.0)  # board rail, not the sum
    assert 1.0 <= s.power_w <= 2.0


def test_ina3221_orin_hwmon_skips_sum_channel(tmp_path):
    files = build_tree(tmp_path, "sysfs_orin_nano_hwmon.json")
    with Ina3221Meter(root=str(tmp_path)) as meter:
        s = meter.read()

    def watts(n):
        volt_mv = float(files[ORIN_HWMON + "/in{}_input".format(n)])
        curr_ma = float(files[ORIN_HWMON + "/curr{}_input".format(n)])
        return volt_mv * curr_ma / 1e6

    assert s.source == "ina3221:hwmon"
    assert s.rails_w == pytest.approx({"VDD_IN": watts(1), "VDD_CPU_GPU_CV": watts(2), "VDD_SOC": watts(3)})
    assert s.power_w == pytest.approx(watts(1))


def test_ina3221_without_board_rail_sums_rails(tmp_path):
    build_tree(tmp_path, "sysfs_orin_nano_hwmon.json")
    write(tmp_path, ORIN_HWMON + "/in1_label", "VDD_GPU")
    with Ina3221Meter(root=str(tmp_path)) as meter:
        s = meter.read()
    assert s.power_w == pytest.approx(sum(s.rails_w.values()))


@pytest.mark.parametrize("layout, tried", [("auto", "ina3221x and hwmon"), ("iio", "ina3221x"), ("hwmon", "hwmon")])
def test_ina3221_missing_keeps_the_reason(tmp_path, layout, tried):
    with pytest.raises(MeterUnavailable) as info:
        Ina3221Meter(root=str(tmp_path), layout=layout).open()
    assert str(info.value) == "no INA3221 under {}; tried {}".format(tmp_path, tried)


def test_ina3221_layout_choice_is_honoured(tmp_path):
    build_tree(tmp_path, "sysfs_nano_ina3221x.json")
    with pytest.raises(MeterUnavailable, match="tried hwmon"):
        Ina3221Meter(root=str(tmp_path), layout="hwmon").open()


# ---- tegrastats ---------------------------------------------------------------


def tegrastats_command(fixture, exit_after=False):
    """A stand-in for `tegrastats --interval N`: prints the fixture's lines, then waits."""
    script = (
        "import sys, time\n"
        "for line in open(sys.argv[1]):\n"
        "    sys.stdout.write(line); sys.stdout.flush(); time.sleep(0.01)\n"
        + ("" if exit_after else "time.sleep(60)\n")
    )
    return [sys.executable, "-c", script, os.path.join(FIXTURES, fixture)]


def test_tegrastats_meter_reads_latest_line():
    meter = TegrastatsMeter(interval_s=0.1, command=tegrastats_command("tegrastats_nano_jp461.txt"))
    with meter:
        last_line = open(os.path.join(FIXTURES, "tegrastats_nano_jp461.txt")).read().splitlines()[-1]
        expected_w = int(last_line.split("POM_5V_IN ")[1].split("/")[0]) / 1000.0
        for _ in range(200):
            s = meter.read()
            if s.power_w == pytest.approx(expected_w):
                break
            time.sleep(0.02)
        assert s.power_w == pytest.approx(expected_w)
        assert s.source == "tegrastats" and s.measured is True


def test_tegrastats_meter_default_command_uses_interval_ms():
    assert TegrastatsMeter(interval_s=0.5).command == ["tegrastats", "--interval", "500"]


def test_tegrastats_meter_missing_binary():
    with pytest.raises(MeterUnavailable, match="cannot run"):
        TegrastatsMeter(command=["/nonexistent/tegrastats", "--interval", "500"]).open()


def test_tegrastats_meter_on_nano_2gb_says_no_rails():
    with TegrastatsMeter(command=tegrastats_command("tegrastats_nano_2gb_jp461.txt")) as meter:
        with pytest.raises(MeterUnavailable, match="no power rails"):
            meter.read()


def test_tegrastats_meter_exit_is_reported():
    command = [sys.executable, "-c", "import sys; sys.stderr.write('tegrastats: permission denied'); sys.exit(3)"]
    with TegrastatsMeter(command=command, first_line_timeout_s=5.0) as meter:
        with pytest.raises(MeterUnavailable, match="code 3.*permission denied"):
            meter.read()


# ---- jtop ---------------------------------------------------------------------


def fake_jtop_module(power, start_error=None):
    class JtopException(Exception):
        pass

    class FakeJetson(object):
        def __init__(self, interval):
            self.interval = interval
            self.power = power
            self.closed = False

        def start(self):
            if start_error:
                raise JtopException(start_error)

        def close(self):
            self.closed = True

    module = types.SimpleNamespace(JtopException=JtopException, made=[])

    def jtop(interval=0.5):
        jetson = FakeJetson(interval)
        module.made.append(jetson)
        return jetson

    module.jtop = jtop
    return module


@pytest.fixture
def jtop_root(tmp_path):
    write(tmp_path, "run/jtop.sock", "")
    return str(tmp_path)


@pytest.mark.parametrize(
    "power",
    [
        ({"cur": 5482, "avg": 2549}, {"5V GPU": {"cur": 2153, "avg": 718}, "5V CPU": {"cur": 1397, "avg": 621}}),
        {"rail": {"POM_5V_GPU": {"power": 2153, "avg": 718, "volt": 5000, "curr": 430},
                  "POM_5V_CPU": {"power": 1397, "avg": 621, "volt": 5000, "curr": 279}},
         "tot": {"power": 5482, "avg": 2549, "volt": 5016, "curr": 1093, "name": "POM_5V_IN"}},
    ],
    ids=["4.x", "4.2+"],
)
def test_jtop_meter_with_fake_module(jtop_root, power):
    module = fake_jtop_module(power)
    meter = JtopMeter(interval_s=0.1, root=jtop_root, module=module)
    with meter:
        s = meter.read()
    assert module.made[0].interval == 0.5  # jtop's minimum
    assert module.made[0].closed
    assert s.power_w == pytest.approx(5.482)
    assert sum(s.rails_w.values()) == pytest.approx(2.153 + 1.397)
    assert s.source == "jtop"


def test_jtop_service_not_running(tmp_path):
    with pytest.raises(MeterUnavailable, match=r"jtop service is not running: .*run/jtop.sock is missing"):
        JtopMeter(root=str(tmp_path), module=fake_jtop_module({})).open()


def test_jtop_start_error_is_wrapped(jtop_root):
    with pytest.raises(MeterUnavailable, match="jtop could not start: jtop.service is not active"):
        JtopMeter(root=jtop_root, module=fake_jtop_module({}, start_error="jtop.service is not active")).open()


# ---- NVML ---------------------------------------------------------------------


class FakeNvml(object):
    class NVMLError(Exception):
        pass

    def __init__(self, power_mw, energy_mj=None, count=1, init_error=None):
        self.power_mw = list(power_mw)  # one value per read, for every GPU
        self.energy_mj = None if energy_mj is None else list(energy_mj)
        self.count = count
        self.init_error = init_error
        self.shutdowns = 0

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetPowerUsage(self, handle):
        return self.power_mw[0] if len(self.power_mw) == 1 else self.power_mw.pop(0)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if self.energy_mj is None:
            raise self.NVMLError("Not Supported")
        return self.energy_mj.pop(0)


def test_nvml_energy_counter():
    nvml = FakeNvml(power_mw=[70000], energy_mj=[1000000, 1000000 + 35000])
    with NvmlMeter(module=nvml) as meter:
        assert meter.has_energy_counter
        s = meter.read()
    assert s.energy_j == pytest.approx(35000 / 1000.0)
    assert s.power_w == pytest.approx(70.0)
    assert s.rails_w == {"gpu0": pytest.approx(70.0)}
    assert nvml.shutdowns == 1


def test_nvml_without_counter_falls_back_to_power():
    with NvmlMeter(module=FakeNvml(power_mw=[45500])) as meter:
        assert not meter.has_energy_counter
        s = meter.read()
    assert s.energy_j is None
    assert s.power_w == pytest.approx(45.5)


def test_nvml_sums_gpus():
    with NvmlMeter(module=FakeNvml(power_mw=[30000], count=2)) as meter:
        s = meter.read()
    assert s.power_w == pytest.approx(60.0)
    assert sorted(s.rails_w) == ["gpu0", "gpu1"]


def test_nvml_unavailable():
    with pytest.raises(MeterUnavailable, match="NVML did not initialise.*Driver Not Loaded"):
        NvmlMeter(module=FakeNvml([0], init_error="Driver Not Loaded")).open()
    nvml = FakeNvml([0], count=1)
    with pytest.raises(MeterUnavailable, match=r"asked for \[3\]"):
        NvmlMeter(indices=[3], module=nvml).open()
    assert nvml.shutdowns == 1


# ---- RAPL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "previous, current, max_range, expected",
    [(100, 250, 1000, 150), (900, 50, 1000, 1000 - 900 + 50), (5, 5, 1000, 0)],
)
def test_counter_delta(previous, current, max_range, expected):
    assert counter_delta(previous, current, max_range) == expected


def test_rapl_package_domains_and_wraparound(tmp_path):
    files = build_tree(tmp_path, "sysfs_rapl.json")
    max_uj = int(files[RAPL0 + "/max_energy_range_uj"])
    start_uj = int(files[RAPL0 + "/energy_uj"])
    clock = FakeClock(10.0)
    with RaplMeter(root=str(tmp_path), clock=clock) as meter:
        clock.t = 10.5
        step_uj = 7000000  # 7 J in 0.5 s
        write(tmp_path, RAPL0 + "/energy_uj", str(start_uj + step_uj - max_uj))  # wrapped
        s1 = meter.read()
        clock.t = 11.0
        write(tmp_path, RAPL0 + "/energy_uj", str(start_uj + 2 * step_uj - max_uj))
        s2 = meter.read()
    assert list(s1.rails_w) == ["package-0"]  # core sub-domain and psys are not packages
    assert s1.energy_j == pytest.approx(step_uj / 1e6)
    assert s1.power_w == pytest.approx(step_uj / 1e6 / 0.5)
    assert s2.energy_j == pytest.approx(2 * step_uj / 1e6)


def test_rapl_permission_denied_explains_root_only(tmp_path, monkeypatch):
    build_tree(tmp_path, "sysfs_rapl.json")
    real_open = open

    def deny_energy(path, *args, **kwargs):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(rapl_module, "open", deny_energy, raising=False)
    with pytest.raises(MeterUnavailable, match="root only since Linux 5.10"):
        RaplMeter(root=str(tmp_path)).open()


def test_rapl_missing(tmp_path):
    with pytest.raises(MeterUnavailable, match="no RAPL package domain"):
        RaplMeter(root=str(tmp_path)).open()


# ---- estimated and replay -------------------------------------------------------


def proc_stat(busy, idle):
    # user nice system idle iowait irq softirq steal guest guest_nice
    return "cpu  {} 0 0 {} 0 0 0 0 0 0\ncpu0 {} 0 0 {} 0 0 0 0 0 0\n".format(busy, idle, busy, idle)


def test_estimated_meter_from_proc_stat(tmp_path):
    write(tmp_path, "proc/stat", proc_stat(busy=1000, idle=9000))
    idle_w, busy_w = 1.5, 6.5
    meter = EstimatedMeter(idle_w=idle_w, busy_w=busy_w, root=str(tmp_path), use_psutil=False)
    with meter:
        write(tmp_path, "proc/stat", proc_stat(busy=1000 + 300, idle=9000 + 100))  # 75 % busy
        s = meter.read()
    assert s.power_w == pytest.approx(idle_w + (busy_w - idle_w) * 300 / 400.0)
    assert s.measured is False
    assert s.source == "estimated:proc-stat"


def test_estimated_meter_uses_psutil_cpu_times(monkeypatch):
    cpu_times = iter([
        types.SimpleNamespace(user=100.0, nice=0.0, system=50.0, idle=800.0, iowait=50.0),
        types.SimpleNamespace(user=130.0, nice=0.0, system=60.0, idle=850.0, iowait=60.0),
    ])
    monkeypatch.setitem(sys.modules, "psutil", types.SimpleNamespace(cpu_times=lambda: next(cpu_times)))
    with EstimatedMeter(idle_w=2.0, busy_w=6.0) as meter:
        s = meter.read()
    busy, total = (30.0 + 10.0), (30.0 + 10.0 + 50.0 + 10.0)
    assert s.power_w == pytest.approx(2.0 + 4.0 * busy / total)
    assert s.source == "estimated:psutil"


def test_estimated_meter_without_psutil_reads_proc_stat(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil raises ImportError
    write(tmp_path, "proc/stat", proc_stat(busy=10, idle=90))
    with EstimatedMeter(root=str(tmp_path), use_psutil=True) as meter:
        assert meter.read().source == "estimated:proc-stat"


def test_estimated_meter_with_psutil_is_still_estimated():
    with EstimatedMeter(idle_w=1.0, busy_w=5.0) as meter:
        s = meter.read()
    assert s.measured is False and s.source.startswith("estimated")
    assert 1.0 <= s.power_w <= 5.0


def test_estimated_meter_rejects_bad_declaration():
    with pytest.raises(ConfigError, match="idle_w=7.0 busy_w=2.0"):
        EstimatedMeter(idle_w=7.0, busy_w=2.0)


def test_replay_meter_interpolates_and_loops():
    clock = FakeClock(100.0)
    trace = Trace([0.0, 1.0, 2.0], [1.0, 3.0, 2.0], {"gpu": [0.0, 1.0, 0.5]})
    meter = ReplayMeter(trace, measured=True, clock=clock).open()
    clock.t = 100.25
    assert meter.read().power_w == pytest.approx(1.0 + 2.0 * 0.25)
    clock.t = 100.0 + 2.0 + 1.5  # loops: 1.5 s into the trace
    s = meter.read()
    assert s.power_w == pytest.approx(2.5)
    assert s.rails_w == {"gpu": pytest.approx(0.75)}
    assert s.t_monotonic_s == clock.t


def test_replay_meter_without_loop_holds_last_value():
    clock = FakeClock(0.0)
    meter = ReplayMeter([(0.0, 1.0), (1.0, 2.0)], loop=False, measured=False, clock=clock).open()
    clock.t = 10.0
    s = meter.read()
    assert s.power_w == 2.0 and s.measured is False


# ---- auto and explicit choice ------------------------------------------------------


def options(root, **kw):
    kw.setdefault("nvml_module", FakeNvml([0], init_error="Driver Not Loaded"))
    kw.setdefault("tegrastats_command", ["/nonexistent/tegrastats"])
    return MeterOptions(root=str(root), interval_s=0.5, **kw)


def test_auto_falls_back_to_estimated_and_says_why(tmp_path):
    write(tmp_path, "proc/stat", proc_stat(100, 900))
    choice = open_meter("auto", options(tmp_path))
    try:
        assert choice.meter.source == "estimated:proc-stat"
        assert [name for name, _ in choice.skipped] == list(AUTO_ORDER[:-1])
        reasons = dict(choice.skipped)
        assert reasons["ina3221"] == "no INA3221 under {}; tried ina3221x and hwmon".format(tmp_path)
        assert "jtop.sock" in reasons["jtop"]
        assert "Driver Not Loaded" in reasons["nvml"]
    finally:
        choice.meter.close()


@pytest.mark.parametrize(
    "fixture, source", [("sysfs_nano_ina3221x.json", "ina3221:iio"), ("sysfs_orin_nano_hwmon.json", "ina3221:hwmon")]
)
def test_auto_prefers_ina3221_over_later_meters(tmp_path, fixture, source):
    build_tree(tmp_path, fixture)
    choice = open_meter("auto", options(tmp_path))
    assert choice.meter.source == source
    assert [name for name, _ in choice.skipped] == ["jtop"]


def test_auto_takes_jtop_first(tmp_path):
    build_tree(tmp_path, "sysfs_nano_ina3221x.json")
    write(tmp_path, "run/jtop.sock", "")
    choice = open_meter("auto", options(tmp_path, jtop_module=fake_jtop_module(({"cur": 1}, {}))))
    assert choice.meter.name == "jtop" and choice.skipped == []


@pytest.mark.parametrize("name, message", [("ina3221", "no INA3221 under"), ("rapl", "no RAPL"), ("jtop", "jtop.sock"),
                                           ("nvml", "Driver Not Loaded"), ("replay", "--replay-file")])
def test_explicit_meter_raises_instead_of_falling_back(tmp_path, name, message):
    write(tmp_path, "proc/stat", proc_stat(100, 900))
    with pytest.raises(MeterUnavailable, match=message):
        open_meter(name, options(tmp_path))


def test_auto_with_nothing_lists_every_reason(tmp_path):
    with pytest.raises(MeterUnavailable) as info:
        open_meter("auto", options(tmp_path))
    for name in AUTO_ORDER:
        assert name + ":" in str(info.value)


def test_unknown_meter_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match="unknown power meter 'ina'.*auto, estimated, ina3221"):
        open_meter("ina", options(tmp_path))
    assert meter_names()[0] == "auto"


def test_importing_edge_power_loads_no_optional_dependency():
    code = (
        "import sys, edge.power, edge.power.command\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('jtop', 'pynvml', 'psutil'))\n"
        "assert not loaded, loaded\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.check_call([sys.executable, "-c", code], cwd=root)
