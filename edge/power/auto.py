"""Meter factories by name, and `auto`: the best meter available here.

`auto` tries jtop, INA3221 (iio, then hwmon), tegrastats, NVML, RAPL and the
estimate, in that order, and reports why each earlier one was skipped. A
meter asked for by name raises MeterUnavailable rather than falling back.
"""
import collections

from edge.errors import ConfigError, MeterUnavailable
from edge.power.estimated import DEFAULT_BUSY_W, DEFAULT_IDLE_W, EstimatedMeter
from edge.power.ina3221 import Ina3221Meter
from edge.power.jtop import JtopMeter
from edge.power.nvml import NvmlMeter
from edge.power.rapl import RaplMeter
from edge.power.replay import ReplayMeter, load_replay_csv
from edge.power.tegrastats import TegrastatsMeter

AUTO = "auto"
AUTO_ORDER = ("jtop", "ina3221", "tegrastats", "nvml", "rapl", "estimated")


class MeterOptions(object):
    """Everything a meter factory may need; tests pass fakes for the modules."""

    __slots__ = ("root", "interval_s", "idle_w", "busy_w", "replay_file", "jtop_module",
                 "nvml_module", "tegrastats_command")

    def __init__(self, root="/", interval_s=0.5, idle_w=DEFAULT_IDLE_W, busy_w=DEFAULT_BUSY_W,
                 replay_file=None, jtop_module=None, nvml_module=None, tegrastats_command=None):
        self.root = root
        self.interval_s = float(interval_s)
        self.idle_w = float(idle_w)
        self.busy_w = float(busy_w)
        self.replay_file = replay_file
        self.jtop_module = jtop_module
        self.nvml_module = nvml_module
        self.tegrastats_command = tegrastats_command


# What `open_meter` returns: the opened meter, and (name, reason) for each
# meter `auto` tried and skipped before it.
MeterChoice = collections.namedtuple("MeterChoice", ("meter", "skipped"))


def _jtop(o):
    return JtopMeter(interval_s=o.interval_s, root=o.root, module=o.jtop_module)


def _ina3221(o):
    return Ina3221Meter(root=o.root)


def _tegrastats(o):
    return TegrastatsMeter(interval_s=o.interval_s, command=o.tegrastats_command)


def _nvml(o):
    return NvmlMeter(module=o.nvml_module)


def _rapl(o):
    return RaplMeter(root=o.root)


def _estimated(o):
    # psutil reads the live system; an overridden root means /proc/stat there.
    return EstimatedMeter(idle_w=o.idle_w, busy_w=o.busy_w, root=o.root, use_psutil=(o.root == "/"))


def _replay(o):
    if not o.replay_file:
        raise MeterUnavailable("the replay meter needs a recorded CSV (--replay-file)")
    from edge.images import display_name

    # The label is printed and stored: a file name that is not UTF-8 goes in escaped.
    return ReplayMeter(load_replay_csv(o.replay_file), label="replay:{}".format(display_name(o.replay_file)))


METER_FACTORIES = {
    "jtop": _jtop,
    "ina3221": _ina3221,
    "tegrastats": _tegrastats,
    "nvml": _nvml,
    "rapl": _rapl,
    "estimated": _estimated,
    "replay": _replay,
}


def meter_names():
    """Every name `open_meter` accepts."""
    return [AUTO] + sorted(METER_FACTORIES)


def _open_named(name, options):
    meter = METER_FACTORIES[name](options)
    return meter.open()


def auto_meter(options=None):
    """Open the first meter that works, in AUTO_ORDER; a `MeterChoice`."""
    options = options or MeterOptions()
    skipped = []
    for name in AUTO_ORDER:
        try:
            return MeterChoice(_open_named(name, options), skipped)
        except MeterUnavailable as e:
            skipped.append((name, str(e)))
    raise MeterUnavailable(
        "no power meter works here; tried " + "; ".join("{}: {}".format(n, r) for n, r in skipped)
    )


def open_meter(name=AUTO, options=None):
    """Open the meter `name` ("auto" picks one); a `MeterChoice`.

    A meter asked for by name raises MeterUnavailable when absent; an unknown
    name raises ConfigError listing the valid ones.
    """
    options = options or MeterOptions()
    if name == AUTO:
        return auto_meter(options)
    if name not in METER_FACTORIES:
        raise ConfigError("unknown power meter {!r}; choose one of {}".format(name, ", ".join(meter_names())))
    return MeterChoice(_open_named(name, options), [])
