"""The `power` subcommand: live readings from a meter, then the window's energy.

    python -m edge power [--meter auto] [--seconds 10] [--interval 0.5]

`add_power_parser(subparsers)` adds the subparser; `run_power(args, out)`
does the work and writes to `out`. Errors are raised as EdgeError subclasses
for `main(argv)` to turn into a message and an exit code.
"""
import os
import sys
import time

from edge.errors import ConfigError
from edge.images import display_name
from edge.power.auto import AUTO, MeterOptions, meter_names, open_meter
from edge.power.estimated import DEFAULT_BUSY_W, DEFAULT_IDLE_W
from edge.power.sampler import PowerSampler

WINDOW = "power"


def add_power_parser(subparsers):
    """Add the `power` subparser to an argparse subparsers object; returns it."""
    parser = subparsers.add_parser(
        "power",
        help="print live power readings and the energy over a window",
        description="Sample a power meter, print each reading, then the window's energy "
                    "(trapezoid over timestamped samples, or counter differences).",
    )
    parser.add_argument("--meter", default=AUTO, choices=meter_names(),
                        help="power meter; auto tries jtop, ina3221, tegrastats, nvml, rapl, estimated "
                             "(default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="window length in seconds (default: %(default)s)")
    parser.add_argument("--interval", type=float, default=0.5,
                        help="sampling interval in seconds (default: %(default)s)")
    parser.add_argument("--root", default="/",
                        help="filesystem root for sysfs and /proc readers (default: %(default)s)")
    parser.add_argument("--idle-w", type=float, default=DEFAULT_IDLE_W,
                        help="estimated meter: power at idle in W (default: %(default)s, Jetson Nano 10 W mode)")
    parser.add_argument("--busy-w", type=float, default=DEFAULT_BUSY_W,
                        help="estimated meter: power at full CPU load in W (default: %(default)s)")
    parser.add_argument("--replay-file", default=None,
                        help="replay meter: recorded CSV (t_s,power_w[,rail...])")
    parser.set_defaults(func=run_power)
    return parser


def _check_args(args):
    # NaN fails every comparison and inf would sample for ever: both are refused by `< inf`.
    if not 0 < args.seconds < float("inf"):
        raise ConfigError("--seconds {}: expected a finite window length > 0 in seconds".format(args.seconds))
    if not 0 < args.interval < float("inf"):
        raise ConfigError("--interval {}: expected a finite sampling interval > 0 in seconds".format(args.interval))
    for flag, value in (("--idle-w", args.idle_w), ("--busy-w", args.busy_w)):
        if not 0 <= value < float("inf"):
            raise ConfigError("{} {}: expected a finite power >= 0 in W".format(flag, value))
    if args.busy_w < args.idle_w:
        raise ConfigError("--busy-w {} is below --idle-w {}: the busy power must be at least the idle power".format(
            args.busy_w, args.idle_w))
    if not os.path.isdir(args.root):
        raise ConfigError("--root {}: {}; expected the filesystem root the sysfs and /proc readers look under".format(
            display_name(args.root), "is not a folder" if os.path.exists(args.root) else "does not exist"))


def _options(args):
    return MeterOptions(
        root=args.root,
        interval_s=args.interval,
        idle_w=args.idle_w,
        busy_w=args.busy_w,
        replay_file=getattr(args, "replay_file", None),
    )


def format_sample(sample, t0_s):
    """One live line: elapsed time, total watts, rails."""
    rails = "  ".join("{}={:.3f}W".format(k, v) for k, v in sorted(sample.rails_w.items()))
    kind = "" if sample.measured else " (estimated)"
    return "{:7.2f} s  {:7.3f} W{}  {}".format(sample.t_monotonic_s - t0_s, sample.power_w, kind, rails).rstrip()


def format_measurement(m):
    """The window summary line."""
    return (
        "window {!r}: {:.2f} s, {:.3f} J, mean {:.3f} W, {} samples, source {}, {}".format(
            m.name, m.duration_s, m.energy_j, m.mean_power_w, m.sample_count, m.source,
            "measured" if m.measured else "ESTIMATED (no power sensor)",
        )
    )


def _live(sampler, seconds, interval_s, out):
    first = sampler.latest()
    t_zero = first.t_monotonic_s if first is not None else time.monotonic()
    t_start = time.monotonic()
    # Look a little after each expected sample so the line shows the new one.
    margin_s = min(0.05, interval_s / 4.0)
    last_t = None
    k = 0
    while True:
        sample = sampler.latest()
        if sample is not None and sample.t_monotonic_s != last_t:
            out.write(format_sample(sample, t_zero) + "\n")
            last_t = sample.t_monotonic_s
        if time.monotonic() - t_start >= seconds:
            return
        k += 1
        wake = min(t_start + k * interval_s + margin_s, t_start + seconds)
        time.sleep(max(0.0, wake - time.monotonic()))


def run_power(args, out=None):
    """Sample the chosen meter for `args.seconds`, writing live lines and a summary to `out`."""
    out = sys.stdout if out is None else out
    _check_args(args)
    choice = open_meter(args.meter, _options(args))
    meter = choice.meter
    try:
        out.write("meter: {} ({})\n".format(meter.source, "measured" if meter.measured else "estimated"))
        for name, reason in choice.skipped:
            out.write("  skipped {}: {}\n".format(name, reason))
        with PowerSampler(meter, interval_s=args.interval) as sampler:
            sampler.begin_window(WINDOW)
            _live(sampler, args.seconds, args.interval, out)
            measurement = sampler.end_window(WINDOW)
    finally:
        meter.close()
    out.write(format_measurement(measurement) + "\n")
    out.flush()
    return 0
