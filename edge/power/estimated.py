"""An estimate for hosts with no power sensor: idle_w + (busy_w - idle_w) x CPU utilisation.

The figures are a model, never a measurement: every sample says
measured=False and its source starts with "estimated".
"""
import time

from edge.errors import ConfigError, MeterUnavailable
from edge.power.base import Meter, make_sample, read_text, under_root

PROC_STAT = "/proc/stat"
# Jetson Nano 4GB in 10 W mode: ~1.5 W idle, ~6.5 W with CPU and GPU busy.
DEFAULT_IDLE_W = 1.5
DEFAULT_BUSY_W = 6.5


def parse_proc_stat_cpu(text):
    """Return (busy_jiffies, total_jiffies) from the aggregate `cpu` line of /proc/stat."""
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            values = [float(v) for v in fields[1:]]
            # user nice system idle iowait irq softirq steal [guest guest_nice];
            # guest time is already counted in user/nice.
            values = values[:8]
            idle = values[3] + (values[4] if len(values) > 4 else 0.0)
            total = sum(values)
            return total - idle, total
    raise MeterUnavailable("/proc/stat text has no aggregate 'cpu' line")


def busy_fraction(previous, current):
    """CPU utilisation in [0, 1] between two (busy, total) jiffy readings."""
    d_busy = current[0] - previous[0]
    d_total = current[1] - previous[1]
    if d_total <= 0:
        return 0.0
    return min(1.0, max(0.0, d_busy / d_total))


def estimate_power_w(utilisation, idle_w, busy_w):
    """Linear model between declared idle and busy power."""
    return idle_w + (busy_w - idle_w) * utilisation


class EstimatedMeter(Meter):
    """Estimated power from CPU utilisation since the previous read.

    Utilisation comes from psutil when `use_psutil` and it is installed,
    else from `<root>/proc/stat`.
    """

    name = "estimated"
    measured = False

    def __init__(self, idle_w=DEFAULT_IDLE_W, busy_w=DEFAULT_BUSY_W, root="/", use_psutil=True,
                 clock=time.monotonic):
        idle_w, busy_w = float(idle_w), float(busy_w)
        if not 0.0 <= idle_w <= busy_w:
            raise ConfigError(
                "estimated meter needs 0 <= idle_w <= busy_w, got idle_w={} busy_w={}".format(idle_w, busy_w)
            )
        self.idle_w = idle_w
        self.busy_w = busy_w
        self.root = root
        self.use_psutil = use_psutil
        self.clock = clock
        self._psutil = None
        self._last = None
        self._opened = False

    @property
    def source(self):
        return "estimated:{}".format("psutil" if self._psutil is not None else "proc-stat")

    def open(self):
        self._psutil = None
        if self.use_psutil:
            try:
                import psutil
            except ImportError:
                psutil = None  # optional: /proc/stat does the same job on Linux
            self._psutil = psutil
        self._last = self._read_cpu_times()
        self._opened = True
        return self

    def _read_cpu_times(self):
        """(busy, total) CPU time; psutil's cpu_times, not cpu_percent, whose state is process-wide."""
        if self._psutil is None:
            return parse_proc_stat_cpu(read_text(under_root(self.root, PROC_STAT)))
        times = self._psutil.cpu_times()
        names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
        total = sum(float(getattr(times, n, 0.0)) for n in names)
        idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
        return total - idle, total

    def utilisation(self):
        """CPU utilisation in [0, 1] since the previous call (or open)."""
        current = self._read_cpu_times()
        fraction = busy_fraction(self._last, current)
        self._last = current
        return fraction

    def read(self):
        if not self._opened:
            raise MeterUnavailable("estimated meter read before open()")
        u = self.utilisation()
        power_w = estimate_power_w(u, self.idle_w, self.busy_w)
        return make_sample(self.clock(), power_w, {}, self.source, False)

    def close(self):
        self._opened = False
        self._last = None
