"""The power `Meter` interface and the `Sample` record every meter returns.

A meter is opened, read any number of times (each read is one timestamped
sample) and closed. Readers take their sysfs root, text or module as an
argument so tests point them at fixtures or fakes.
"""
import collections
import os

from edge.errors import MeterUnavailable

_SAMPLE_FIELDS = (
    "t_monotonic_s",  # time.monotonic() when the figure was taken
    "power_w",  # total power: board input rail when known, else sum of rails
    "rails_w",  # dict rail name -> watts (may be empty)
    "source",  # meter name, e.g. "ina3221:iio", "estimated:cpu"
    "measured",  # False when the figure is a model, not a sensor
    "energy_j",  # cumulative energy counter since open (J), None without one
)


class Sample(collections.namedtuple("Sample", _SAMPLE_FIELDS)):
    """One timestamped power reading.

    `energy_j` is set only by meters with a hardware energy counter (NVML
    total energy, RAPL): windows then use counter differences instead of
    integrating `power_w`.
    """

    __slots__ = ()


def make_sample(t_monotonic_s, power_w, rails_w=None, source="", measured=True, energy_j=None):
    """Build a `Sample` with floats and a plain dict of rails."""
    rails = {} if rails_w is None else {str(k): float(v) for k, v in rails_w.items()}
    counter = None if energy_j is None else float(energy_j)
    return Sample(float(t_monotonic_s), float(power_w), rails, str(source), bool(measured), counter)


class Meter(object):
    """Base of every power meter: `open()`, `read() -> Sample`, `close()`.

    Subclasses set `name` (the factory name) and `source` (what produced the
    figures, said in every sample). `has_energy_counter` says whether samples
    carry `energy_j`.
    """

    name = "meter"
    measured = True
    has_energy_counter = False

    @property
    def source(self):
        return self.name

    def open(self):
        """Acquire the sensor; raise MeterUnavailable with the reason when absent."""
        return self

    def read(self):
        """Return one `Sample` taken now."""
        raise NotImplementedError

    def close(self):
        """Release the sensor; safe to call twice."""

    def __enter__(self):
        return self.open()

    def __exit__(self, exc_type, exc, tb):
        self.close()
        return False


def read_text(path):
    """Return the stripped text of a sysfs file; MeterUnavailable when unreadable."""
    try:
        with open(path, "r") as f:
            return f.read().strip()
    except PermissionError as e:
        raise MeterUnavailable("cannot read {}: permission denied".format(path)) from e
    except OSError as e:
        raise MeterUnavailable("cannot read {}: {}".format(path, e)) from e


def read_number(path):
    """Return a sysfs file's value as a float; MeterUnavailable names the file."""
    text = read_text(path)
    try:
        return float(text)
    except ValueError as e:
        raise MeterUnavailable("{} holds {!r}, expected a number".format(path, text)) from e


def under_root(root, path):
    """Join an absolute system path under `root` ("/" for the live system)."""
    return os.path.join(root, path.lstrip("/"))


def total_power_w(rails_w, input_rails):
    """Board input rail when present (first of `input_rails`), else the sum of rails."""
    for name in input_rails:
        if name in rails_w:
            return rails_w[name]
    return float(sum(rails_w.values()))
