"""Intel RAPL through the powercap sysfs interface (CPU package energy only).

/sys/class/powercap/intel-rapl:N/ holds `name` ("package-N" for package
domains), `energy_uj` (a counter that wraps at `max_energy_range_uj`).
Since Linux 5.10 `energy_uj` is readable by root only (CVE-2020-8694).
"""
import glob
import os
import time

from edge.errors import MeterUnavailable
from edge.power.base import Meter, make_sample, read_number, read_text, under_root

POWERCAP_DIR = "/sys/class/powercap"


def counter_delta(previous, current, max_range):
    """Counter increase from `previous` to `current`, undoing one wrap at `max_range`."""
    if current >= previous:
        return current - previous
    return current + max_range - previous


def find_package_domains(root):
    """Return [(name, domain_dir)] of RAPL package domains under `root`."""
    pattern = os.path.join(under_root(root, POWERCAP_DIR), "intel-rapl:*")
    domains = []
    for domain in sorted(glob.glob(pattern)):
        # Sub-domains (intel-rapl:0:0 core, :1 uncore/dram) are inside a package.
        if os.path.basename(domain).count(":") != 1:
            continue
        name_file = os.path.join(domain, "name")
        if os.path.isfile(name_file) and read_text(name_file).startswith("package"):
            domains.append((read_text(name_file), domain))
    return domains


def _read_energy_uj(domain):
    path = os.path.join(domain, "energy_uj")
    try:
        with open(path, "r") as f:
            return float(f.read().strip())
    except PermissionError as e:
        raise MeterUnavailable(
            "cannot read {}: permission denied; RAPL energy_uj is readable by root only "
            "since Linux 5.10 (CVE-2020-8694): run as root or grant read access".format(path)
        ) from e
    except (OSError, ValueError) as e:
        raise MeterUnavailable("cannot read {}: {}".format(path, e)) from e


class RaplMeter(Meter):
    """CPU package energy from RAPL counters; power is the mean since the previous read."""

    name = "rapl"
    has_energy_counter = True

    def __init__(self, root="/", clock=time.monotonic):
        self.root = root
        self.clock = clock
        self._domains = []  # [(name, dir, max_range_uj)]
        self._last_uj = []
        self._energy_j = 0.0
        self._last_t = None
        self._last_power_w = {}

    def open(self):
        found = find_package_domains(self.root)
        if not found:
            raise MeterUnavailable(
                "no RAPL package domain under {}".format(under_root(self.root, POWERCAP_DIR))
            )
        self._domains = [
            (name, d, read_number(os.path.join(d, "max_energy_range_uj"))) for name, d in found
        ]
        self._last_uj = [_read_energy_uj(d) for _, d, _ in self._domains]
        self._last_t = self.clock()
        self._energy_j = 0.0
        self._last_power_w = {name: 0.0 for name, _, _ in self._domains}
        return self

    def read(self):
        if self._last_t is None:
            raise MeterUnavailable("RAPL meter read before open()")
        now_uj = [_read_energy_uj(d) for _, d, _ in self._domains]
        t = self.clock()
        dt = t - self._last_t
        rails = {}
        for (name, _, max_uj), before, now in zip(self._domains, self._last_uj, now_uj):
            delta_j = counter_delta(before, now, max_uj) / 1.0e6
            self._energy_j += delta_j
            # Two reads at the same instant hold the previous figure.
            rails[name] = delta_j / dt if dt > 0 else self._last_power_w[name]
        self._last_uj, self._last_t, self._last_power_w = now_uj, t, rails
        return make_sample(t, sum(rails.values()), rails, self.source, True, self._energy_j)

    def close(self):
        self._last_t = None
