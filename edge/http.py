"""Local status server: /healthz, /metrics (Prometheus text 0.0.4) and /detections.

State comes from a `LiveStatus` the daemon updates (or any object with a
`snapshot()` method returning the same keys) and from a `detections(since_t,
since_id, limit)` callable (Store.detections_since), so the server is tested
without the daemon. Bound to 127.0.0.1 by default; runs in background
threads (`start()` / `stop()`): one accepts connections and holds each until
its request starts arriving, a fixed pool of workers answers them. Idle or
slow clients cost no thread and are closed after `connection_timeout_s`;
beyond `max_connections` a client gets a 503 at once.
"""
import collections
import glob
import json
import logging
import math
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlsplit

from edge.errors import EdgeError
from edge.http_gate import ConnectionGate

logger = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# A `since` at or above this is a Unix time, below it a detection id (1e9 s is 2001).
SINCE_TIME_MIN = 1.0e9
# 10000-01-01T00:00:00Z: a later "time" is a typo or a probe, not a query (and not a date Python can show).
SINCE_TIME_MAX = 253402300800.0
MAX_DETECTIONS_LIMIT = 5000
# Connection limits: a status server on a Nano must not let idle or slow clients pin threads or descriptors.
CONNECTION_TIMEOUT_S = 5.0  # longest silence: before the request starts, and between reads or writes
MAX_WORKERS = 8  # threads answering requests; each answer takes milliseconds
MAX_CONNECTIONS = 256  # accepted and not yet closed (waiting, queued or being answered); beyond: 503
LISTEN_BACKLOG = 128  # kernel queue of connections not yet accepted (5 dropped SYNs under 200 clients)


SKIP_REASONS = ("corrupt", "budget", "failed")  # exported even at 0, so a rate() has a series from the start


class LiveStatus(object):
    """Thread-safe counters and gauges the daemon updates and the server reads.

    `snapshot()` keys: frames_total, frames_skipped, frames_skipped_by_reason
    (list of (reason, count), SKIP_REASONS first), frames_retried,
    detections_total, latency_buckets (list of (le, cumulative count)),
    latency_sum_s, latency_count, power_w, energy_today_wh, budget_left_wh,
    profile, profiles, last_heartbeat_s (monotonic), started_s (monotonic).
    """

    def __init__(self, profiles=(), clock=time.monotonic, buckets_s=LATENCY_BUCKETS_S, skip_reasons=SKIP_REASONS):
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets = tuple(float(b) for b in buckets_s)
        self._bucket_counts = [0] * len(self._buckets)
        self._skipped = collections.OrderedDict((str(r), 0) for r in skip_reasons)
        self._values = {"frames_total": 0, "frames_skipped": 0, "frames_retried": 0, "detections_total": 0,
                        "latency_sum_s": 0.0, "latency_count": 0, "power_w": None, "energy_today_wh": None,
                        "budget_left_wh": None, "profile": "", "profiles": list(profiles),
                        "last_heartbeat_s": None, "started_s": clock()}

    def beat(self):
        """The loop is alive: call once per iteration."""
        with self._lock:
            self._values["last_heartbeat_s"] = self.clock()

    def record_frame(self, latency_s=None, skipped=False, n_detections=0, reason="other", retried=False):
        """One frame: processed (latency, detections) or skipped for `reason`.

        `retried` is a frame taken earlier and run again (after a bundle
        reload): it counts in frames_retried, not again in frames_total.
        """
        with self._lock:
            v = self._values
            v["frames_retried" if retried else "frames_total"] += 1
            if skipped:
                v["frames_skipped"] += 1
                self._skipped[str(reason)] = self._skipped.get(str(reason), 0) + 1
            v["detections_total"] += int(n_detections)
            if latency_s is not None:
                v["latency_sum_s"] += float(latency_s)
                v["latency_count"] += 1
                for i, bound in enumerate(self._buckets):
                    if latency_s <= bound:
                        self._bucket_counts[i] += 1

    def set(self, **values):
        """Update gauges: power_w, energy_today_wh, budget_left_wh, profile, profiles."""
        allowed = ("power_w", "energy_today_wh", "budget_left_wh", "profile", "profiles")
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise EdgeError("LiveStatus.set: unknown gauges {}; expected {}".format(unknown, allowed))
        with self._lock:
            self._values.update(values)

    def snapshot(self):
        with self._lock:
            snap = dict(self._values)
            snap["profiles"] = list(snap["profiles"])
            snap["latency_buckets"] = list(zip(self._buckets, self._bucket_counts))
            snap["frames_skipped_by_reason"] = list(self._skipped.items())
        return snap


def read_thermal_zones_c(root="/"):
    """{zone: (type, °C)} from <root>/sys/class/thermal/thermal_zone*/temp (millidegrees); unreadable zones skipped."""
    zones = {}
    pattern = os.path.join(root, "sys", "class", "thermal", "thermal_zone*")
    for zone_dir in sorted(glob.glob(pattern)):
        zone = os.path.basename(zone_dir)
        try:
            with open(os.path.join(zone_dir, "temp")) as f:
                temp_c = int(f.read().strip()) / 1000.0
        except (OSError, ValueError) as e:  # a sensor the kernel cannot read (e.g. EINVAL): skip that zone only
            logger.debug("thermal zone %s unreadable: %s", zone, e)
            continue
        try:
            with open(os.path.join(zone_dir, "type")) as f:
                kind = f.read().strip()
        except OSError:
            kind = zone
        zones[zone] = (kind, temp_c)
    return zones


def _escape_label(value):
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value):
    if value is None:
        return None
    value = float(value)
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def format_metrics(snapshot, thermal=None, heartbeat_age_s=None):
    """Prometheus text exposition 0.0.4 for a LiveStatus snapshot and thermal zones."""
    lines = []

    def metric(name, kind, help_text, samples):
        samples = [(labels, _number(v)) for labels, v in samples if v is not None]
        if not samples:
            return
        lines.append("# HELP {} {}".format(name, help_text))
        lines.append("# TYPE {} {}".format(name, kind))
        for labels, value in samples:
            text = ",".join('{}="{}"'.format(k, _escape_label(v)) for k, v in labels)
            lines.append("{}{} {}".format(name, "{" + text + "}" if text else "", value))

    s = snapshot
    metric("reefwatch_frames_total", "counter", "Frames taken from the source.", [((), s["frames_total"])])
    # One series per reason; a snapshot without the split (an older status object) keeps the plain total.
    by_reason = s.get("frames_skipped_by_reason")
    metric("reefwatch_frames_skipped_total", "counter",
           "Frames not processed, by reason (corrupt image, over the energy budget, failed in the pipeline).",
           [((("reason", r),), n) for r, n in by_reason] if by_reason is not None else [((), s["frames_skipped"])])
    metric("reefwatch_frames_retried_total", "counter", "Failed frames run again after a bundle reload.",
           [((), s.get("frames_retried"))])
    metric("reefwatch_detections_total", "counter", "Detections stored.", [((), s["detections_total"])])
    buckets = [((("le", _number(le)),), count) for le, count in s["latency_buckets"]]
    buckets.append(((("le", "+Inf"),), s["latency_count"]))
    lines.append("# HELP reefwatch_frame_latency_seconds Time to process one frame.")
    lines.append("# TYPE reefwatch_frame_latency_seconds histogram")
    for labels, count in buckets:
        lines.append('reefwatch_frame_latency_seconds_bucket{{le="{}"}} {}'.format(labels[0][1], int(count)))
    lines.append("reefwatch_frame_latency_seconds_sum {}".format(_number(s["latency_sum_s"])))
    lines.append("reefwatch_frame_latency_seconds_count {}".format(int(s["latency_count"])))
    metric("reefwatch_power_watts", "gauge", "Board power at the last reading.", [((), s["power_w"])])
    metric("reefwatch_energy_today_wh", "gauge", "Energy counted against today's budget (Wh).",
           [((), s["energy_today_wh"])])
    metric("reefwatch_budget_left_wh", "gauge", "Energy budget left today (Wh).", [((), s["budget_left_wh"])])
    profiles = list(s["profiles"]) or ([s["profile"]] if s["profile"] else [])
    if s["profile"] and s["profile"] not in profiles:
        profiles.append(s["profile"])
    metric("reefwatch_profile", "gauge", "Inference profile in use (1) and the others (0).",
           [((("profile", p),), 1 if p == s["profile"] else 0) for p in profiles])
    metric("reefwatch_temperature_celsius", "gauge", "Thermal zone temperature.",
           [((("zone", zone), ("type", kind)), temp) for zone, (kind, temp) in sorted((thermal or {}).items())])
    metric("reefwatch_heartbeat_age_seconds", "gauge", "Seconds since the loop last beat.", [((), heartbeat_age_s)])
    return "\n".join(lines) + "\n"


def _query_number(key, value):
    try:
        number = float(value)
    except ValueError as e:
        raise EdgeError("{}={!r} is not a number".format(key, value)) from e
    if not math.isfinite(number):
        raise EdgeError("{}={!r} must be a finite number".format(key, value))
    if number < 0:
        raise EdgeError("{}={!r} must be >= 0".format(key, value))
    return number


def parse_detections_query(query):
    """Query string of /detections -> (since_t_unix_s, since_id, limit); EdgeError on a bad value."""
    params = parse_qs(query, keep_blank_values=True)
    since_t = since_id = None
    limit = 1000
    for key, values in params.items():
        if key not in ("since", "limit"):
            raise EdgeError("unknown parameter {!r}; expected since=<unix time or detection id>, limit=<n>".format(key))
        number = _query_number(key, values[-1])
        if key == "limit":
            limit = int(min(number, MAX_DETECTIONS_LIMIT))
        elif number >= SINCE_TIME_MAX:
            raise EdgeError("since={!r} is after year 9999; expected a Unix time in seconds or a detection id"
                            .format(values[-1]))
        elif number >= SINCE_TIME_MIN:
            since_t = number
        else:
            since_id = int(number)
    return since_t, since_id, limit


class _Handler(BaseHTTPRequestHandler):
    """One request per connection (HTTP/1.0, the default): a keep-alive client cannot pin a worker."""
    server_version = "reefwatch"

    def setup(self):
        # Bounds every read and write, so a client that stops mid-request frees its worker.
        self.timeout = self.server.connection_timeout_s
        BaseHTTPRequestHandler.setup(self)

    def do_GET(self):
        self._answer(send_body=True)

    def do_HEAD(self):
        # Probes use HEAD: the same status and headers (Content-Length included) as GET, no body.
        self._answer(send_body=False)

    def _answer(self, send_body):
        app = self.server.app
        url = urlsplit(self.path)
        try:
            status, content_type, body = app.respond(url.path, url.query)
        except Exception as e:  # a handler error must not kill the worker: log it with the traceback, answer 500
            logger.exception("HTTP %s failed", self.path)
            status, content_type, body = 500, "application/json", _json({"error": str(e)})
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def log_message(self, fmt, *args):
        logger.debug("%s - %s", self.address_string(), fmt % args)


class _Server(HTTPServer):
    """Binds and listens; `ConnectionGate` runs the accept loop and the workers instead of serve_forever."""
    allow_reuse_address = True


def _json(value):
    return json.dumps(value, sort_keys=True)


class EdgeHttpServer(object):
    """Serves /healthz, /metrics and /detections from `status` and `detections`.

    /healthz is 200 while the heartbeat is younger than `heartbeat_max_age_s`
    (measured with `clock`, the same monotonic clock as the status), else 503.
    Port 0 picks a free port; `address` says which after `start()`.
    """

    def __init__(self, status, detections=None, host="127.0.0.1", port=8080, heartbeat_max_age_s=120.0,
                 thermal_root="/", clock=time.monotonic, connection_timeout_s=CONNECTION_TIMEOUT_S,
                 max_workers=MAX_WORKERS, max_connections=MAX_CONNECTIONS, listen_backlog=LISTEN_BACKLOG):
        self.status = status
        self.detections = detections
        self.host, self.port = host, int(port)
        self.heartbeat_max_age_s = float(heartbeat_max_age_s)
        self.thermal_root = thermal_root
        self.clock = clock
        limits = (("connection_timeout_s", connection_timeout_s), ("max_workers", max_workers),
                  ("max_connections", max_connections), ("listen_backlog", listen_backlog))
        for name, value in limits:
            if not value > 0:
                raise EdgeError("EdgeHttpServer: {}={!r} must be > 0".format(name, value))
        self.connection_timeout_s = float(connection_timeout_s)
        self.max_workers, self.max_connections = int(max_workers), int(max_connections)
        self.listen_backlog = int(listen_backlog)
        self._server = None
        self._gate = None

    @property
    def address(self):
        if self._server is None:
            raise EdgeError("HTTP server not started")
        return self._server.server_address[:2]

    def start(self):
        server = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        server.request_queue_size = self.listen_backlog  # listen() backlog, used by server_activate
        try:
            server.server_bind()
            server.server_activate()
        except OSError as e:
            server.server_close()
            raise EdgeError("cannot serve HTTP on {}:{}: {}".format(self.host, self.port, e)) from e
        server.app, server.connection_timeout_s = self, self.connection_timeout_s
        self._server = server
        self._gate = ConnectionGate(server, self.connection_timeout_s, self.max_connections, self.max_workers)
        self._gate.start()
        logger.info("HTTP status on http://%s:%d", *self.address)
        return self

    def stop(self):
        if self._server is not None:
            self._gate.stop()
            self._server = self._gate = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        self.stop()
        return False

    def heartbeat_age_s(self, snapshot):
        last = snapshot.get("last_heartbeat_s")
        return None if last is None else max(0.0, self.clock() - last)

    def respond(self, path, query):
        """(status, content type, body) for a GET (HEAD sends the same without the body); reads state only."""
        if path == "/healthz":
            snap = self.status.snapshot()
            age = self.heartbeat_age_s(snap)
            alive = age is not None and age <= self.heartbeat_max_age_s
            body = {"status": "ok" if alive else "stalled", "heartbeat_age_s": age,
                    "heartbeat_max_age_s": self.heartbeat_max_age_s, "profile": snap.get("profile"),
                    "frames_total": snap.get("frames_total")}
            return (200 if alive else 503), "application/json", _json(body)
        if path == "/metrics":
            snap = self.status.snapshot()
            text = format_metrics(snap, read_thermal_zones_c(self.thermal_root), self.heartbeat_age_s(snap))
            return 200, PROMETHEUS_CONTENT_TYPE, text
        if path == "/detections":
            if self.detections is None:
                return 404, "application/json", _json({"error": "no detection store attached"})
            try:
                since_t, since_id, limit = parse_detections_query(query)
            except EdgeError as e:
                return 400, "application/json", _json({"error": str(e)})
            rows = self.detections(since_t, since_id, limit)
            next_id = rows[-1]["id"] if rows else since_id
            return 200, "application/json", _json({"detections": rows, "next_since": next_id})
        return 404, "application/json", _json({"error": "unknown path {}; try /healthz, /metrics, /detections"
                                                .format(path)})
