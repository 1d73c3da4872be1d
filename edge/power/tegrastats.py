"""tegrastats: parse its power rails and run it as a subprocess meter.

Rail formats, current value first:
  Nano, JetPack 4.x:            POM_5V_IN 933/933            (cur/avg mW)
  Xavier/Orin, JetPack 5-6:     VDD_IN 5299mW/5299mW         (cur/avg)
  JetPack 6/7 (newer builds):   VDD_IN 5299mW/5299mW/6000mW  (three values)
Only the current value is used: tegrastats' average runs since it started, so
it says nothing about a window.
"""
import re
import subprocess
import threading
import time

from edge.errors import MeterUnavailable
from edge.power.base import Meter, make_sample, total_power_w

BOARD_INPUT_RAILS = ("POM_5V_IN", "VDD_IN")
# NAME cur[mW]/avg[mW][/third[mW]] followed by whitespace or end of line. The
# boundary keeps "RAM 1180/3965MB" and "IRAM 0/252kB(lfb" out.
_RAIL_RE = re.compile(
    r"(?:^|\s)([A-Za-z][A-Za-z0-9_]*)\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?:/(\d+)(?:mW)?)?(?=\s|$)"
)


def parse_tegrastats_rails_w(line):
    """Return {rail: current W} from one tegrastats line ({} when it has none)."""
    return {m.group(1): int(m.group(2)) / 1000.0 for m in _RAIL_RE.finditer(line)}


def parse_tegrastats_power(line):
    """Return (power_w, rails_w) for one tegrastats line.

    Total is the board input rail (POM_5V_IN, VDD_IN) when present, else the
    sum of rails. Raises MeterUnavailable when the line has no power rails
    (the Nano 2GB has no INA3221).
    """
    rails = parse_tegrastats_rails_w(line)
    if not rails:
        raise MeterUnavailable(
            "tegrastats line has no power rails (expected e.g. 'POM_5V_IN 933/933' or "
            "'VDD_IN 5299mW/5299mW'): {!r}".format(line.strip()[:200])
        )
    return total_power_w(rails, BOARD_INPUT_RAILS), rails


class TegrastatsMeter(Meter):
    """Runs `tegrastats --interval <ms>` and keeps the latest parsed line.

    A reader thread consumes every line so the pipe never backs up with stale
    figures; `read()` returns the newest one, stamped with its arrival time,
    and waits for the first line up to `first_line_timeout_s`. `command`
    replaces the whole command line (tests run a script that prints a fixture).
    """

    name = "tegrastats"

    def __init__(self, interval_s=0.5, command=None, first_line_timeout_s=5.0, clock=time.monotonic):
        self.interval_s = float(interval_s)
        interval_ms = max(1, int(round(self.interval_s * 1000)))
        self.command = list(command) if command else ["tegrastats", "--interval", str(interval_ms)]
        self.first_line_timeout_s = float(first_line_timeout_s)
        self.clock = clock
        self._proc = None
        self._thread = None
        self._lock = threading.Lock()
        self._have_line = threading.Event()
        self._latest = None  # (t, power_w, rails_w)
        self._error = None

    def open(self):
        self._have_line.clear()
        self._latest, self._error = None, None
        try:
            self._proc = subprocess.Popen(
                self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True
            )
        except OSError as e:
            raise MeterUnavailable("cannot run {!r}: {}".format(" ".join(self.command), e)) from e
        self._thread = threading.Thread(target=self._read_lines, name="tegrastats-reader", daemon=True)
        self._thread.start()
        return self

    def _read_lines(self):
        proc = self._proc
        try:
            for line in proc.stdout:
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                power_w, rails = parse_tegrastats_power(line)
                with self._lock:
                    self._latest = (self.clock(), power_w, rails)
                self._have_line.set()
        except (MeterUnavailable, OSError, ValueError) as e:
            with self._lock:
                self._error = e
        finally:
            self._have_line.set()

    def read(self):
        if self._proc is None:
            raise MeterUnavailable("tegrastats meter read before open()")
        if not self._have_line.wait(self.first_line_timeout_s):
            raise MeterUnavailable(
                "{!r} printed no line in {:.1f} s".format(" ".join(self.command), self.first_line_timeout_s)
            )
        with self._lock:
            latest, error = self._latest, self._error
        if error is not None:
            raise MeterUnavailable("tegrastats output unusable: {}".format(error)) from error
        if latest is None or self._proc.poll() is not None:
            # An exited tegrastats leaves only a stale figure behind.
            raise MeterUnavailable(self._exit_message())
        t, power_w, rails = latest
        return make_sample(t, power_w, rails, self.source, True)

    def _exit_message(self):
        try:
            # stdout reached EOF, so the process is exiting: give it a moment.
            code = self._proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            code = None
        err = self._proc.stderr.read() if code is not None and self._proc.stderr else ""
        return "{!r} exited (code {}); stderr: {}".format(
            " ".join(self.command), code, err.strip()[:300]
        )

    def close(self):
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
