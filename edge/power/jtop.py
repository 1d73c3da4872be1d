"""jetson-stats (`jtop`) as a power meter.

Two shapes of `jtop.power`:
  4.x (< 4.2):   (total, power) with total = {'cur': mW, 'avg': mW} and
                 power = {rail: {'cur': mW, 'avg': mW}}
  4.2+ and 7.x:  {'rail': {rail: {'power': mW, 'avg': mW, 'volt': mV,
                 'curr': mA, ...}}, 'tot': {'power': mW, 'avg': mW, ...}}
The instantaneous figure ('cur' / 'power') is used, never 'avg': jtop's avg is
(power + old_avg) // 2, a decaying mean that cannot be integrated.
"""
import os
import time

from edge.errors import MeterUnavailable
from edge.power.base import Meter, make_sample, under_root

JTOP_SOCKET = "/run/jtop.sock"
MIN_INTERVAL_S = 0.5  # jtop refuses shorter intervals


def _instant_mw(entry, where):
    for key in ("power", "cur"):
        if key in entry:
            return float(entry[key])
    raise MeterUnavailable("jtop power entry {} has no 'power' or 'cur' field: {!r}".format(where, entry))


def parse_jtop_power(power):
    """Return (power_w, rails_w) from either shape of `jtop.power`."""
    if isinstance(power, dict) and ("rail" in power or "tot" in power):
        rails_src, total_src = power.get("rail", {}), power.get("tot")
    elif isinstance(power, (tuple, list)) and len(power) == 2:
        total_src, rails_src = power
    else:
        raise MeterUnavailable(
            "jtop.power has an unknown shape (expected (total, power) or "
            "{{'rail': ..., 'tot': ...}}): {!r}".format(power)
        )
    rails = {name: _instant_mw(entry, repr(name)) / 1000.0 for name, entry in rails_src.items()}
    if total_src:
        total_w = _instant_mw(total_src, "'tot'") / 1000.0
    else:
        total_w = float(sum(rails.values()))
    return total_w, rails


class JtopMeter(Meter):
    """Reads `jtop.power` from a running jtop client.

    `module` is the imported `jtop` package (a fake in tests); `None` imports
    jetson-stats when the meter opens. `root` locates /run/jtop.sock.
    """

    name = "jtop"

    def __init__(self, interval_s=0.5, root="/", module=None, clock=time.monotonic):
        self.interval_s = max(MIN_INTERVAL_S, float(interval_s))
        self.root = root
        self.module = module
        self.clock = clock
        self._jetson = None

    def _import(self):
        if self.module is not None:
            return self.module
        try:
            import jtop as module
        except ImportError as e:
            raise MeterUnavailable(
                "jetson-stats is not installed (pip install 'jetson-stats<5' on a Python 3.6 Nano)"
            ) from e
        return module

    def open(self):
        sock = under_root(self.root, JTOP_SOCKET)
        if not os.path.exists(sock):
            raise MeterUnavailable(
                "the jtop service is not running: {} is missing "
                "(sudo systemctl restart jtop.service)".format(sock)
            )
        module = self._import()
        jtop_error = getattr(module, "JtopException", None) or RuntimeError
        try:
            jetson = module.jtop(interval=self.interval_s)
            jetson.start()
        except jtop_error as e:
            raise MeterUnavailable("jtop could not start: {}".format(e)) from e
        self._jetson = jetson
        return self

    def read(self):
        if self._jetson is None:
            raise MeterUnavailable("jtop meter read before open()")
        power_w, rails = parse_jtop_power(self._jetson.power)
        return make_sample(self.clock(), power_w, rails, self.source, True)

    def close(self):
        jetson, self._jetson = self._jetson, None
        if jetson is not None:
            jetson.close()
