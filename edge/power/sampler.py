"""A background thread that samples a meter, with named energy windows.

    sampler = PowerSampler(meter, interval_s=0.5)
    with sampler:
        idle_w = sampler.measure_idle(10.0)
        sampler.begin_window("batch")
        ...                                  # run frames
        m = sampler.end_window("batch")      # Measurement: energy_j, mean_power_w, ...

Samples live in a bounded deque; an exception in the thread is raised to the
owner on its next call. The sampler does not open or close the meter.
"""
import collections
import logging
import threading
import time

from edge.errors import ConfigError, EdgeError, MeterUnavailable
from edge.power.window import measure_samples

logger = logging.getLogger(__name__)

IDLE_WINDOW = "idle"


class PowerSampler(object):
    """Reads `meter` every `interval_s` on a thread and keeps the last `max_samples`."""

    def __init__(self, meter, interval_s=0.5, max_samples=7200, clock=time.monotonic):
        if not interval_s > 0:
            raise ConfigError("sampler interval_s must be > 0, got {!r}".format(interval_s))
        if int(max_samples) < 2:
            raise ConfigError("sampler max_samples must be >= 2, got {!r}".format(max_samples))
        self.meter = meter
        self.interval_s = float(interval_s)
        self.max_samples = int(max_samples)
        self.clock = clock
        self.idle_power_w = None
        self._samples = collections.deque(maxlen=self.max_samples)
        self._evicted = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = None
        self._error = None
        self._windows = {}

    # ---- thread -------------------------------------------------------------
    def start(self):
        """Take a first sample now (so a broken meter fails here), then sample on a thread."""
        if self._thread is not None:
            raise ConfigError("power sampler already started")
        self._append(self.meter.read())
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="power-sampler", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval_s):
            try:
                sample = self.meter.read()
            except Exception as e:  # handed to the owner on its next call
                with self._cond:
                    self._error = e
                    self._cond.notify_all()
                return
            self._append(sample)

    def _append(self, sample):
        with self._cond:
            if self._samples and sample.t_monotonic_s <= self._samples[-1].t_monotonic_s:
                return  # the meter had nothing new (tegrastats between lines)
            if len(self._samples) == self.max_samples:
                self._evicted = True
            self._samples.append(sample)
            self._cond.notify_all()

    def stop(self):
        """Stop the thread; does not raise a pending thread error (next call does)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    def _raise_pending(self):
        with self._cond:
            error = self._error
        if error is None:
            return
        if isinstance(error, EdgeError):
            raise error
        raise MeterUnavailable(
            "power sampler thread failed reading {}: {!r}".format(self.meter.source, error)
        ) from error

    # ---- samples ------------------------------------------------------------
    def samples(self):
        """A copy of the samples kept, oldest first."""
        self._raise_pending()
        with self._cond:
            return list(self._samples)

    def latest(self):
        """The newest sample, or None before the first."""
        self._raise_pending()
        with self._cond:
            return self._samples[-1] if self._samples else None

    def wait_for_sample_after(self, t_monotonic_s, timeout_s):
        """Block until a sample at or after `t_monotonic_s` exists; False on timeout."""
        deadline = self.clock() + timeout_s
        with self._cond:
            while not (self._samples and self._samples[-1].t_monotonic_s >= t_monotonic_s):
                remaining = deadline - self.clock()
                if self._error is not None or remaining <= 0 or self._thread is None:
                    return False
                self._cond.wait(remaining)
        return True

    # ---- windows ------------------------------------------------------------
    def begin_window(self, name):
        """Open the window `name` now; a name already open raises."""
        self._raise_pending()
        if name in self._windows:
            raise ConfigError("power window {!r} is already open".format(name))
        self._windows[name] = self.clock()

    def end_window(self, name, wait=True):
        """Close the window `name` and return its `Measurement`.

        With `wait`, blocks (up to two intervals) for a sample at or after the
        window end so the end edge is interpolated, not extrapolated; without,
        the last sample is held to the end.
        """
        self._raise_pending()
        if name not in self._windows:
            raise ConfigError(
                "no power window named {!r} is open (open: {})".format(name, sorted(self._windows) or "none")
            )
        t_begin = self._windows.pop(name)
        t_end = self.clock()
        if wait and not self.wait_for_sample_after(t_end, 2.0 * self.interval_s + 1.0):
            self._raise_pending()
            logger.warning("power window %r: no sample after its end; holding the last value", name)
        with self._cond:
            samples = list(self._samples)
            evicted = self._evicted
        if evicted and samples and samples[0].t_monotonic_s > t_begin:
            raise ConfigError(
                "power window {!r} began before the oldest kept sample: raise max_samples "
                "(now {} at {} s)".format(name, self.max_samples, self.interval_s)
            )
        return measure_samples(name, samples, t_begin, t_end)

    def open_windows(self):
        """Names of the windows currently open."""
        return sorted(self._windows)

    def measure_idle(self, seconds):
        """Mean power (W) over `seconds` of idling; also kept as `idle_power_w`."""
        if not seconds > 0:
            raise ConfigError("idle measurement needs seconds > 0, got {!r}".format(seconds))
        self.begin_window(IDLE_WINDOW)
        time.sleep(seconds)
        self.idle_power_w = self.end_window(IDLE_WINDOW).mean_power_w
        return self.idle_power_w
