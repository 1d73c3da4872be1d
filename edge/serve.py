"""The `serve` command: run the daemon under systemd (or by hand) until SIGTERM.

    python -m edge serve --config /etc/reefwatch/edge.json
    python -m edge serve --bundle DIR --source SRC --store detections.sqlite [--interval S]
                         [--budget-wh-day W] [--http 127.0.0.1:8080] [--meter auto] [--max-frames N]

Flags override the config file's values; the budget and frame rate given by
neither come from the bundle's deployment profile (else the defaults).
SIGTERM/SIGINT stop taking frames, finish the one in flight and close
everything (exit 0); SIGHUP reloads the bundle, keeping the old one when the
new one does not load and rolling back to it when the new one's first frames
all fail. Signal handlers are installed here only, for the duration of the
command.
"""
import contextlib
import logging
import os
import signal
import threading

from edge.config import default_values, load_edge_config
from edge.errors import ConfigError
from edge.images import display_name
from edge.power.auto import MeterOptions, meter_names, open_meter

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "onnxruntime", "tensorrt")
# flag attribute -> config key
_OVERRIDES = (("bundle", "bundle"), ("source", "source"), ("store", "store_path"), ("interval", "interval_s"),
              ("budget_wh_day", "budget_wh_day"), ("http", "http_address"), ("meter", "meter"),
              ("profile", "profile"), ("crops", "crops_dir"))


def add_serve_parser(subparsers):
    """Add the `serve` subparser; returns it."""
    parser = subparsers.add_parser("serve", help="run the detection daemon (source -> ensemble -> store)",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="daemon config JSON (edge/config.py lists the keys)")
    parser.add_argument("--bundle", default=None, help="bundle folder or .tar.gz")
    parser.add_argument("--source", default=None, help="csi://0, 0, /dev/video0, rtsp://..., a video or a folder")
    parser.add_argument("--store", default=None, help="SQLite store of frames and detections")
    parser.add_argument("--crops", default=None, help="folder for crops of critical species "
                                                      "(default: 'crops' beside --store)")
    parser.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between frames (default: the bundle's deployment, else 10)")
    parser.add_argument("--budget-wh-day", type=float, default=None, metavar="WH",
                        help="energy budget in Wh/day (default: the bundle's deployment, else 14.4)")
    parser.add_argument("--http", default=None, metavar="HOST:PORT", help="status server address; '' turns it off")
    parser.add_argument("--meter", default=None, choices=meter_names(), help="power meter (config default: auto)")
    parser.add_argument("--profile", default=None, help="auto (the governor) or one fixed inference profile")
    parser.add_argument("--backend", default="auto", choices=BACKENDS)
    parser.add_argument("--measure-idle", type=float, default=0.0, metavar="SECONDS",
                        help="measure idle power for this long before the first frame (default: off)")
    parser.add_argument("--max-frames", type=int, default=None, metavar="N", help="stop after N frames")
    return parser


def serve_config(args):
    """The EdgeConfig for parsed `serve` arguments: defaults, then --config, then flags."""
    overrides = {key: getattr(args, attr, None) for attr, key in _OVERRIDES}
    config = load_edge_config(args.config, overrides)
    defaults = default_values()
    if args.crops is None and config.crops_dir == defaults["crops_dir"] and config.store_path != defaults["store_path"]:
        config = config._replace(crops_dir=os.path.join(os.path.dirname(os.path.abspath(config.store_path)), "crops"))
    return config


@contextlib.contextmanager
def _signal_handlers(daemon):
    def stop(signum, frame):
        logger.info("signal %d: finishing the frame in flight, then stopping", signum)
        # Event.set takes a lock the interrupted main thread may hold: set it from another thread.
        threading.Thread(target=daemon.request_stop, name="stop-request", daemon=True).start()

    def reload(signum, frame):
        logger.info("SIGHUP: the bundle will be reloaded between frames")
        daemon.request_reload()

    handlers = {signal.SIGTERM: stop, signal.SIGINT: stop, signal.SIGHUP: reload}
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _check_args(args, config):
    """ConfigError for flags and paths the daemon would only trip over later (or never: a crops file)."""
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError("--max-frames {}: expected a positive number of frames".format(args.max_frames))
    if not 0 <= args.measure_idle < float("inf"):  # NaN fails too
        raise ConfigError("--measure-idle {}: expected a finite number of seconds >= 0".format(args.measure_idle))
    if os.path.lexists(config.crops_dir) and not os.path.isdir(config.crops_dir):
        raise ConfigError("crops folder {} exists and is not a folder; name a new or existing folder (--crops)"
                          .format(display_name(config.crops_dir)))


def run_serve(args, out):
    """Run the daemon until it is stopped or its source ends; 0 on a clean stop."""
    from edge.daemon import Daemon, open_pipeline_factory
    from edge.systemd import SystemdNotifier, watchdog_interval_s

    config = serve_config(args)
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(config.log_level)
    _check_args(args, config)
    choice = open_meter(config.meter, MeterOptions(idle_w=config.idle_power_w))
    try:
        daemon = Daemon(config, pipeline_factory=open_pipeline_factory(args.backend), meter=choice.meter,
                        meter_skipped=choice.skipped, notifier=SystemdNotifier(), watchdog_s=watchdog_interval_s(),
                        measure_idle_s=args.measure_idle)
        with _signal_handlers(daemon):
            summary = daemon.run(max_frames=args.max_frames)
    finally:
        choice.meter.close()
    out.write("served %(frames)d frames: %(processed)d processed (%(retried)d of them retried after a reload), "
              "%(skipped_budget)d skipped for budget, %(skipped_corrupt)d corrupt, %(failed)d failed, "
              "%(detections)d detections; %(reloads)d reloads, %(rollbacks)d rolled back\n" % summary)
    return 0
