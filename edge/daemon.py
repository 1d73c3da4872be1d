"""The edge daemon: source -> governor picks the profile -> pipeline -> store, HTTP status, systemd pings.

One owner per resource, opened in this order and closed in reverse by
`run()`: store, crops, pipeline (backends), power sampler, HTTP server,
source. The meter is opened and closed by the caller (it chose it).

After a restart the store is the memory: the governor gets back today's
spend, each profile's recent energy and the cascade's escalation rate, and
a folder source skips the files whose frames are already stored (each frame
records its origin), so only the frame in flight at a crash is read again.

Each frame: the governor plans a profile and a frame fraction (frames over
the share it can afford are recorded as skipped, reason "budget"); the
pipeline runs inside an energy window per stage, so every stored frame
carries its energy_j and latency_s; the frame and its detections are one
store transaction; the governor then observes what the frame cost.

Control is by flags checked between frames: `request_stop()` (stop taking
frames; the one in flight finishes) and `request_reload()` (load, verify and
open the bundle again; on failure keep the old pipeline). Both are safe from
signal handlers and other threads.
"""
import collections
import contextlib
import logging
import threading
import time

from edge.crops import CropStore
from edge.energy import CASCADE_ESCALATION, CASCADE_FIRST, Governor
from edge.errors import BackendError, ConfigError, DecodeError, EdgeError, FrameError
from edge.http import EdgeHttpServer, LiveStatus
from edge.power.sampler import PowerSampler
from edge.profiles import CASCADE, STATIC_PROFILES, run_profile, settings_from_config
from edge.store import Store, StoreError

logger = logging.getLogger(__name__)

FRAME_ERRORS = (BackendError, DecodeError, FrameError)  # one bad frame: count it, go on
ESCALATED_LABEL = "%s:%s" % (CASCADE, CASCADE_ESCALATION)  # the label run_profile gives an escalated frame
COUNTERS = ("frames", "processed", "skipped_corrupt", "skipped_budget", "failed", "escalated", "probes",
            "reloads", "reload_failures", "detections")


class DaemonError(EdgeError):
    """The daemon cannot go on (e.g. every recent frame failed); systemd should restart it."""


class _NoNotifier(object):
    """Stands in for SystemdNotifier outside systemd (tests, benchmarks)."""

    def ready(self, status=None):
        return False

    def watchdog(self):
        return False

    def stopping(self):
        return False

    def status(self, text):
        return False


def open_pipeline_factory(backend="auto", **options):
    """pipeline_factory(bundle_path) -> Pipeline: load and verify the bundle, open every backend."""
    def factory(path):
        from edge.bundle import load_bundle
        from edge.pipeline import Pipeline

        return Pipeline.open(load_bundle(path), backend=backend, **options)
    return factory


def source_factory_for(config, watch=True, clock=time.time):
    """source_factory(stop_event, wait) -> a frame source for `config.source`.

    `wait(seconds)` replaces the source's own sleeps (folder polls, reconnect
    backoff) so the daemon keeps beating and reloading while no frame comes.
    """
    def factory(stop_event, wait):
        from edge.sources import Backoff, FolderSource, open_source, parse_source_spec

        kind, target = parse_source_spec(config.source)
        if kind == "folder":
            return FolderSource(target, poll_interval_s=config.folder_poll_s, watch=watch, stop_event=stop_event,
                                wait=wait, clock=clock)
        backoff = Backoff(config.reconnect_initial_s, config.reconnect_factor, config.reconnect_max_s)
        return open_source(config.source, stop_event=stop_event, backoff=backoff, sleep=wait, clock=clock)
    return factory


class Daemon(object):
    """The capture-to-store loop for one config; see the module docstring.

    `pipeline_factory(bundle_path)` opens a Pipeline (also on reload);
    `source_factory(stop_event, wait)` opens the frame source; `meter` is an
    opened power Meter. `clock` gives Unix time (frame times, the governor's
    day), `monotonic` latency and energy windows. `pace` sleeps between
    frames to `config.interval_s`; `max_failures` consecutive failed frames
    raise DaemonError.
    """

    def __init__(self, config, pipeline_factory=None, source_factory=None, meter=None, meter_skipped=(),
                 clock=time.time, monotonic=time.monotonic, pace=True, notifier=None, watchdog_s=None,
                 sampler_interval_s=0.5, measure_idle_s=0.0, max_failures=5, store_check="integrity"):
        if meter is None:
            raise ConfigError("the daemon needs an opened power meter (edge.power.open_meter)")
        self.config = config
        self.pipeline_factory = pipeline_factory or open_pipeline_factory()
        self.source_factory = source_factory or source_factory_for(config, clock=clock)
        self.meter, self.meter_skipped = meter, list(meter_skipped)
        self.clock, self.monotonic = clock, monotonic
        self.pace = pace
        self.notifier = notifier or _NoNotifier()
        self.watchdog_s = watchdog_s
        self.sampler_interval_s = float(sampler_interval_s)
        self.measure_idle_s = float(measure_idle_s)
        self.max_failures = int(max_failures)
        self.store_check = store_check
        fixed = config.profile != "auto"
        self.profiles = (config.profile,) if fixed else tuple(config.profiles)
        self.status = LiveStatus(self.profiles, clock=monotonic)
        self.counters = collections.OrderedDict((name, 0) for name in COUNTERS)
        self.by_label = collections.Counter()
        self.http = self.store = self.crops = self.pipeline = self.sampler = self.governor = None
        self._cascade = None
        self._stop = threading.Event()
        self._reload_requested = False
        self._credit = 0.0
        self._failures = 0
        self._stages = {}
        self._last_ping = None
        self._wait_for_sample = False

    # ---- control (any thread, signal handlers) ------------------------------
    def request_stop(self):
        self._stop.set()

    def request_reload(self):
        self._reload_requested = True  # a plain attribute write: safe inside a signal handler

    @property
    def stopping(self):
        return self._stop.is_set()

    @property
    def http_address(self):
        return None if self.http is None else self.http.address

    # ---- run ------------------------------------------------------------------
    def run(self, max_frames=None):
        """Open everything, process frames until the source ends, stop or max_frames; returns a summary dict."""
        with contextlib.ExitStack() as stack:
            source = self._open(stack)
            start = self.monotonic()
            try:
                self._loop(source, max_frames)
            finally:
                self.notifier.stopping()
                loop_s = self.monotonic() - start
                logger.info("stopping after %d frames (%s); closing in reverse order", self.counters["frames"],
                            ", ".join("%s %d" % kv for kv in self.counters.items() if kv[1]))
        summary = dict(self.counters)
        summary.update(loop_s=loop_s, by_label=dict(self.by_label))
        return summary

    def _open(self, stack):
        config = self.config
        self.store = Store(config.store_path, synchronous=config.store_synchronous, check=self.store_check)
        stack.callback(self.store.close)
        self.crops = CropStore(config.crops_dir, config.crops_max_bytes, config.min_free_bytes)
        self.pipeline, self._cascade = self._load_pipeline()
        stack.callback(lambda: self.pipeline.close())  # whichever pipeline is current at exit
        logger.info("bundle %s: models %s", self.pipeline.bundle.root, [m.name for m in self.pipeline.bundle.models])
        self.sampler = stack.enter_context(PowerSampler(self.meter, self.sampler_interval_s, clock=self.monotonic))
        self._log_meter()
        # Waiting for a sample past each window's end is free when frames are paced far apart.
        self._wait_for_sample = self.pace and config.interval_s >= 2.0 * self.sampler_interval_s
        self.governor = Governor(config.deployment_profile(), profiles=self.profiles,
                                 escalation_prior=config.escalation_prior, clock=self.clock)
        self._restore_governor()
        address = config.http_host_port
        if address is not None:
            self.http = EdgeHttpServer(self.status, detections=self.store.detections_since, host=address[0],
                                       port=address[1], heartbeat_max_age_s=config.heartbeat_max_age_s,
                                       clock=self.monotonic)
            stack.enter_context(self.http)
            stack.callback(setattr, self, "http", None)
        source = self.source_factory(self._stop, self._idle)
        if hasattr(source, "close"):
            stack.callback(source.close)
        self._resume(source)
        self.status.beat()
        self.notifier.ready("serving %s with %s" % (config.source, ", ".join(self.profiles)))
        return source

    def _log_meter(self):
        for name, reason in self.meter_skipped:
            logger.info("power meter %s skipped: %s", name, reason)
        sample = self.sampler.latest()
        logger.info("power meter %s (%s): %.2f W now", self.meter.source,
                    "measured" if sample.measured else "estimated, not a measurement", sample.power_w)
        if self.measure_idle_s > 0:
            idle_w = self.sampler.measure_idle(self.measure_idle_s)
            logger.info("idle power %.2f W over %.1f s (config idle_power_w %.2f W)", idle_w,
                        self.measure_idle_s, self.config.idle_power_w)

    def _resume(self, source):
        """Tell a source that can skip what is already stored (a folder) which origins those are."""
        resume_from = getattr(source, "resume_from", None)
        if resume_from is None:
            return
        done = self.store.recorded_origins(source.name)
        resume_from(done)
        if done:
            logger.info("resuming %s: %d files already in the store are skipped", source.name, len(done))

    def _restore_governor(self):
        """Per-profile energy and the escalation rate from recent frames, today's spend from the store's totals."""
        recent = list(reversed(self.store.frame_rows(limit=1000)))  # oldest first
        rows = [r for r in recent[-200:]
                if r["status"] == "ok" and r["energy_j"] is not None and r["profile"] in STATIC_PROFILES]
        for row in rows:
            self.governor.observe(row["profile"], row["energy_j"], row["latency_s"], t_unix_s=row["t_unix_s"])
        cascade = [r["profile"] == ESCALATED_LABEL for r in recent
                   if r["status"] == "ok" and r["profile"].startswith(CASCADE + ":")]
        self.governor.restore_escalations(cascade)
        now = self.clock()
        totals = self.store.today_totals(now)
        self.governor.restore_spent(totals["energy_j"], totals["latency_s"], t_unix_s=now)
        logger.info("restored from store: %d frames today, %.3f Wh spent, energy of %d recent frames, "
                    "escalation rate %.2f over %d cascade frames", totals["frames"], totals["energy_j"] / 3600.0,
                    len(rows), self.governor.escalation_rate, len(cascade))

    def _load_pipeline(self):
        """A new pipeline for config.bundle and its cascade settings; closes it again if the settings fail."""
        pipeline = self.pipeline_factory(self.config.bundle)
        try:
            return pipeline, settings_from_config(pipeline.bundle, self.config)
        except BaseException:
            pipeline.close()
            raise

    # ---- between frames -------------------------------------------------------
    def _tick(self):
        """Heartbeat, systemd watchdog and a pending reload: once per frame and while idle."""
        self.status.beat()
        now = time.monotonic()
        if self.watchdog_s and (self._last_ping is None or now - self._last_ping >= self.watchdog_s):
            self.notifier.watchdog()
            self._last_ping = now
        if self._reload_requested and not self._stop.is_set():
            self._reload_requested = False
            self._reload()

    def _reload(self):
        logger.info("reloading bundle %s", self.config.bundle)
        try:
            pipeline, settings = self._load_pipeline()
        except Exception as e:  # any failure to open the new bundle leaves the old one serving
            self.counters["reload_failures"] += 1
            logger.error("reload refused, still serving %s: %s", self.pipeline.bundle.root, e)
            return
        old, self.pipeline, self._cascade = self.pipeline, pipeline, settings
        old.close()
        self.counters["reloads"] += 1
        logger.info("reloaded bundle %s: models %s", pipeline.bundle.root, [m.name for m in pipeline.bundle.models])

    def _idle(self, seconds):
        """Wait up to `seconds` (real time), ticking; returns at once when stopped."""
        deadline = time.monotonic() + max(0.0, float(seconds))
        step = min(1.0, self.watchdog_s or 1.0)
        while not self._stop.is_set():
            self._tick()
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.wait(min(remaining, step)):
                break

    def _loop(self, source, max_frames):
        next_slot = time.monotonic()
        for frame in source:
            if self._stop.is_set():
                break
            self._tick()
            self._handle(frame)
            if self._stop.is_set() or (max_frames is not None and self.counters["frames"] >= max_frames):
                break
            if self.pace:
                next_slot = max(next_slot + self.config.interval_s, time.monotonic())
                self._idle(next_slot - time.monotonic())

    # ---- one frame ------------------------------------------------------------
    def _handle(self, frame):
        self.counters["frames"] += 1
        if frame.image is None:
            self.counters["skipped_corrupt"] += 1
            self._skip(frame, frame.reason or "corrupt frame")
            return
        decision = self.governor.plan()
        # Credit carries the unused share over: a fraction of 0.4 processes 2 frames in 5, evenly spread.
        self._credit += decision.frame_fraction
        if self._credit < 1.0 - 1e-9:
            self.counters["skipped_budget"] += 1
            self._skip(frame, "budget", profile=decision.profile)
            return
        self._credit -= 1.0
        profile = self._probe(decision) or decision.profile
        try:
            run = self._infer(frame.image, profile)
        except FRAME_ERRORS as e:
            self._failed(frame, profile, e)
            return
        self._failures = 0
        self._store(frame, run)
        self._observe(profile, run)

    def _probe(self, decision):
        """An unmeasured profile to run once, so the governor can weigh it; None when none is due."""
        if decision.frame_fraction < 1.0:
            return None
        for profile in self.governor.unmeasured():
            if profile == decision.profile:
                continue
            stages = (CASCADE_FIRST, CASCADE_ESCALATION) if profile == CASCADE else (profile,)
            for stage in stages:
                if self.governor.estimate_j(stage) is None:
                    self.counters["probes"] += 1
                    return stage
        return None

    @contextlib.contextmanager
    def _measured(self, name):
        window = "frame:" + name
        self.sampler.begin_window(window)
        t0 = self.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            latency_s = self.monotonic() - t0
            measurement = self.sampler.end_window(window, wait=ok and self._wait_for_sample)
            self._stages[name] = (measurement.energy_j, latency_s)

    def _infer(self, image, profile):
        self._stages = {}
        return run_profile(self.pipeline, image, profile, self._cascade, stage=self._measured)

    def _failed(self, frame, profile, error):
        self._failures += 1
        self.counters["failed"] += 1
        logger.error("frame %s from %s failed (%d in a row): %s", frame.frame_id, frame.source, self._failures, error)
        self._skip(frame, "error: %s" % error, profile=profile)
        if self._failures >= self.max_failures:
            raise DaemonError("%d consecutive frames failed; last error: %s" % (self._failures, error)) from error

    def _skip(self, frame, reason, profile=""):
        self.store.record_frame(frame.t_unix_s, frame.source, frame.frame_id, status="skipped", reason=reason,
                                profile=profile, origin=frame.origin)
        self.status.record_frame(skipped=True)

    def _store(self, frame, run):
        bundle = self.pipeline.bundle
        energy_j = sum(e for e, _ in self._stages.values())
        latency_s = sum(t for _, t in self._stages.values())
        versions = {m.name: m.sha256[:12] for m in bundle.models if m.name in run.models}
        self.store.record_frame(frame.t_unix_s, frame.source, frame.frame_id, run.detections, profile=run.label,
                                latency_s=latency_s, energy_j=energy_j, reason=run.reason, model_versions=versions,
                                class_names=bundle.names, crop_paths=self._crops(frame, run.detections),
                                origin=frame.origin)
        self.counters["processed"] += 1
        self.counters["detections"] += len(run.detections)
        self.counters["escalated"] += int(run.escalated)
        self.by_label[run.label] += 1
        self.status.record_frame(latency_s=latency_s, n_detections=len(run.detections))

    def _crops(self, frame, detections):
        if len(detections) == 0 or not self._cascade.critical_ids:
            return None
        try:
            return self.crops.save_critical(frame.image, detections, self._cascade.critical_ids, frame.t_unix_s,
                                            frame.source, frame.frame_id, max_crops=self.config.crops_per_frame)
        except StoreError as e:  # a full or broken crops disk must not stop detection
            logger.warning("crops of frame %s not saved: %s", frame.frame_id, e)
            return None

    def _observe(self, profile, run):
        stages = self._stages
        if profile == CASCADE:
            full = stages.get(CASCADE_ESCALATION, (None, None))
            self.governor.observe_cascade(stages[CASCADE_FIRST][0], run.escalated, full[0],
                                          stages[CASCADE_FIRST][1], full[1])
        else:
            energy_j, latency_s = stages[profile]
            self.governor.observe(profile, energy_j, latency_s)
        latest = self.sampler.latest()
        self.status.set(power_w=latest.power_w, energy_today_wh=self.governor.spent_wh(),
                        budget_left_wh=self.governor.budget_left_wh(), profile=self.governor.profile,
                        profiles=list(self.profiles))
