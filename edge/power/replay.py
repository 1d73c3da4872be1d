"""Replay a recorded power trace (a CSV file or a list of rows) as a meter.

CSV layout: an optional '#' comment block (device, software version), a
header `t_s,power_w[,<rail>...]` (any first column name), then one row per
sample. The trace is replayed in real time from `open()`: a read at elapsed
time e returns the trace linearly interpolated at t0 + e, looping by default.
"""
import csv
import io
import time

import numpy as np

from edge.errors import ConfigError, MeterUnavailable
from edge.power.base import Meter, make_sample


class Trace(object):
    """A recorded trace: times (s, increasing), total watts and per-rail watts."""

    __slots__ = ("t_s", "power_w", "rails_w")

    def __init__(self, t_s, power_w, rails_w=None):
        self.t_s = np.asarray(t_s, dtype=np.float64)
        self.power_w = np.asarray(power_w, dtype=np.float64)
        self.rails_w = {k: np.asarray(v, dtype=np.float64) for k, v in (rails_w or {}).items()}
        n = self.t_s.shape[0] if self.t_s.ndim == 1 else -1
        if n < 1 or self.power_w.shape != (n,):
            raise ConfigError(
                "replay trace needs 1-D t_s and power_w of equal length >= 1, got shapes {} and {}".format(
                    self.t_s.shape, self.power_w.shape))
        for name, values in self.rails_w.items():
            if values.shape != (n,):
                raise ConfigError("replay rail {!r} has shape {}, expected ({},)".format(name, values.shape, n))
        for name, values in [("t_s", self.t_s), ("power_w", self.power_w)] + sorted(self.rails_w.items()):
            if not np.all(np.isfinite(values)):
                raise ConfigError("replay {} holds {} at sample {}; expected finite numbers".format(
                    name, values[~np.isfinite(values)][0], int(np.argmin(np.isfinite(values)))))
        if n > 1 and np.any(np.diff(self.t_s) <= 0):
            raise ConfigError("replay trace times must increase strictly")

    @classmethod
    def from_rows(cls, rows):
        """Build from [(t_s, power_w), ...]."""
        rows = list(rows)
        if not rows:
            raise ConfigError("replay trace is empty")
        t, w = zip(*[(float(r[0]), float(r[1])) for r in rows])
        return cls(t, w)

    @property
    def duration_s(self):
        return float(self.t_s[-1] - self.t_s[0])


def parse_replay_csv(text, origin="replay CSV"):
    """Parse replay CSV text into a `Trace`; ConfigError names `origin` and the bad line."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if len(lines) < 2:
        raise ConfigError("{} needs a header and at least one row".format(origin))
    reader = csv.reader(io.StringIO("\n".join(lines)))
    header = [h.strip() for h in next(reader)]
    if len(header) < 2:
        raise ConfigError("{} header needs at least 't_s,power_w', got {!r}".format(origin, lines[0]))
    columns = [[] for _ in header]
    for number, row in enumerate(reader, start=2):
        if len(row) != len(header):
            raise ConfigError("{} row {} has {} fields, header has {}".format(origin, number, len(row), len(header)))
        try:
            for column, value in zip(columns, row):
                column.append(float(value))
        except ValueError as e:
            raise ConfigError("{} row {}: {}".format(origin, number, e)) from e
    rails = {name: values for name, values in zip(header[2:], columns[2:])}
    try:
        return Trace(columns[0], columns[1], rails)
    except ConfigError as e:
        raise ConfigError("{}: {}".format(origin, e)) from e


def load_replay_csv(path):
    """Read a UTF-8 replay CSV file into a `Trace`; every fault names the file."""
    from edge.images import display_name

    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise MeterUnavailable("cannot read replay file {}: {}".format(display_name(path), e.strerror or e)) from e
    except ValueError as e:  # not UTF-8
        raise ConfigError("replay file {} is not a UTF-8 CSV: {}".format(display_name(path), e)) from e
    return parse_replay_csv(text, origin="replay file {}".format(display_name(path)))


class ReplayMeter(Meter):
    """Replays a `Trace` in real time; `measured` says what the trace was."""

    name = "replay"

    def __init__(self, trace, measured=True, loop=True, label="replay", clock=time.monotonic):
        self.trace = trace if isinstance(trace, Trace) else Trace.from_rows(trace)
        self.measured = bool(measured)
        self.loop = loop
        self.label = label
        self.clock = clock
        self._t_open = None

    @property
    def source(self):
        return self.label

    def open(self):
        self._t_open = self.clock()
        return self

    def value_at(self, elapsed_s):
        """(power_w, rails_w) of the trace `elapsed_s` after its start."""
        tr = self.trace
        rel = tr.t_s - tr.t_s[0]
        if self.loop and tr.duration_s > 0:
            elapsed_s = elapsed_s % tr.duration_s
        power_w = float(np.interp(elapsed_s, rel, tr.power_w))
        rails = {name: float(np.interp(elapsed_s, rel, values)) for name, values in tr.rails_w.items()}
        return power_w, rails

    def read(self):
        if self._t_open is None:
            raise MeterUnavailable("replay meter read before open()")
        t = self.clock()
        power_w, rails = self.value_at(t - self._t_open)
        return make_sample(t, power_w, rails, self.source, self.measured)

    def close(self):
        self._t_open = None
