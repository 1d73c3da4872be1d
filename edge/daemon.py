"""The edge daemon: source -> governor picks the profile -> pipeline -> store, HTTP status, systemd pings.

One owner per resource, opened in this order and closed in reverse by
`run()`: store, crops, pipeline (backends), power sampler, HTTP server,
source. The meter is opened and closed by the caller (it chose it).

After a restart the store is the memory: the governor gets back today's
spend, each profile's recent energy and the cascade's escalation rate, and
a folder source skips the files whose frames are already stored (each frame
records its origin), so only the frame in flight at a crash is read again.

The deployment profile (budget, frame rate, powered hours, idle and sleep
power) is the bundle's, with each value the config gives explicitly taking
its place (EdgeConfig.resolve_deployment); which value came from where is
logged at start and on reload.

Each frame: the governor plans a profile and a frame fraction (frames over
the share it can afford are recorded as skipped, reason "budget");
`run_profile` runs each stage through `_measure` (an energy window and the
latency) and returns those per-stage records with the detections, so every
stored frame carries its energy_j and latency_s; the frame and its
detections are one store transaction; the governor then observes what each
stage cost.

Faults: an image the pipeline cannot use (FrameError) is a skipped frame,
reason "corrupt", and says nothing about the bundle. A model fault
(BackendError, DecodeError) is a failed frame: `max_failures` of them in a
row stop the daemon (DaemonError), and the frame is kept (the last
`retry_frames`) to run again once another bundle serves.

Control is by flags checked between frames: `request_stop()` (stop taking
frames; the one in flight finishes) and `request_reload()` (load, verify and
open the bundle again; on failure keep the old pipeline). Both are safe from
signal handlers and other threads. A reloaded bundle is on probation: if the
first `reload_probation_frames` attempts on it all fail with a model fault,
the daemon rolls back to the old one and runs those frames again (which
bundle serves, probation, rollback, kept frames: edge.daemon_reload).
"""
import collections
import contextlib
import logging
import threading
import time

from edge.bundle import gate_warning
from edge.crops import CropStore
from edge.daemon_reload import ServingBundle, open_pipeline_factory  # edge.serve imports the factory from here
from edge.errors import BackendError, ConfigError, DaemonError, DecodeError, FrameError  # DaemonError: old home
from edge.governor import Governor, restore_from_store
from edge.http import EdgeHttpServer, LiveStatus
from edge.power.sampler import PowerSampler
from edge.profiles import CASCADE, CASCADE_ESCALATION, CASCADE_FIRST, parse_label, run_profile, stages_of
from edge.store import Store, StoreError

logger = logging.getLogger(__name__)

BUNDLE_ERRORS = (BackendError, DecodeError)  # the model failed, not the image: count it, retry after a reload
# counter -> reason label of reefwatch_frames_skipped_total
SKIP_COUNTERS = collections.OrderedDict((("skipped_corrupt", "corrupt"), ("skipped_budget", "budget"),
                                         ("failed", "failed")))
# frames == processed - retried + skipped_corrupt + skipped_budget + failed
COUNTERS = ("frames", "processed", "skipped_corrupt", "skipped_budget", "failed", "retried", "escalated", "probes",
            "reloads", "reload_failures", "rollbacks", "detections")


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
    frames to `interval_s`; `max_failures` consecutive failed frames raise
    DaemonError; `reload_probation_frames` and `retry_frames`: see the
    module docstring.
    """

    def __init__(self, config, pipeline_factory=None, source_factory=None, meter=None, meter_skipped=(),
                 clock=time.time, monotonic=time.monotonic, pace=True, notifier=None, watchdog_s=None,
                 sampler_interval_s=0.5, measure_idle_s=0.0, max_failures=5, store_check="integrity",
                 reload_probation_frames=3, retry_frames=8):
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
        self.reload_probation_frames = int(reload_probation_frames)
        self.counters = collections.OrderedDict((name, 0) for name in COUNTERS)
        # A probation longer than max_failures would stop the daemon before it could roll back.
        self.bundles = ServingBundle(config, self.pipeline_factory, self.counters,
                                     min(self.reload_probation_frames, self.max_failures), retry_frames)
        self.store_check = store_check
        fixed = config.profile != "auto"
        self.profiles = (config.profile,) if fixed else tuple(config.profiles)
        self.status = LiveStatus(self.profiles, clock=monotonic)
        self.by_label = collections.Counter()
        self.http = self.store = self.crops = self.sampler = self.governor = None
        self._stop = threading.Event()
        self._reload_requested = False
        self._credit = 0.0
        self._failures = 0
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

    @property
    def pipeline(self):
        return self.bundles.pipeline

    @property
    def interval_s(self):
        """Seconds between frames: the deployment's capture interval, else (frames_per_day) config.interval_s."""
        current = self.bundles.current
        deployment = None if current is None else current.deployment
        if deployment is None or deployment.capture_interval_s is None:
            return self.config.interval_s
        return deployment.capture_interval_s

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
        # What can be refused (the bundle, the source) is opened before anything is written.
        stack.callback(self.bundles.close)  # whichever pipelines are open at exit
        self.bundles.open()
        warning = gate_warning(getattr(self.pipeline, "bundle", None))
        if warning:
            logger.warning("%s; its figures are under the floors it was validated against", warning)
        source = self.source_factory(self._stop, self._idle)
        if hasattr(source, "close"):
            stack.callback(source.close)
        self.store = Store(config.store_path, synchronous=config.store_synchronous, check=self.store_check)
        stack.callback(self.store.close)
        self.crops = CropStore(config.crops_dir, config.crops_max_bytes, config.min_free_bytes)
        self.sampler = stack.enter_context(PowerSampler(self.meter, self.sampler_interval_s, clock=self.monotonic))
        self._log_meter()
        # Waiting for a sample past each window's end is free when frames are paced far apart.
        self._wait_for_sample = self.pace and self.interval_s >= 2.0 * self.sampler_interval_s
        self.governor = Governor(self.bundles.current.deployment, profiles=self.profiles,
                                 escalation_prior=config.escalation_prior, clock=self.clock)
        restore_from_store(self.governor, self.store, self.clock())
        address = config.http_host_port
        if address is not None:
            self.http = EdgeHttpServer(self.status, detections=self.store.detections_since, host=address[0],
                                       port=address[1], heartbeat_max_age_s=config.heartbeat_max_age_s,
                                       clock=self.monotonic)
            stack.enter_context(self.http)
            stack.callback(setattr, self, "http", None)
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
            deployment, origin = self.bundles.current.deployment, self.bundles.current.origin
            logger.info("idle power %.2f W over %.1f s (deployment idle_power_w %.2f W, from the %s)", idle_w,
                        self.measure_idle_s, deployment.idle_power_w, origin["idle_power_w"])

    def _resume(self, source):
        """Tell a source that can skip what is already stored (a folder) which origins those are."""
        resume_from = getattr(source, "resume_from", None)
        if resume_from is None:
            return
        done = self.store.recorded_origins(source.name)
        resume_from(done)
        if done:
            logger.info("resuming %s: %d files already in the store are skipped", source.name, len(done))

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
            if self.bundles.reload():
                self.governor.set_deployment(self.bundles.current.deployment)
                self._retry_failed()

    def _retry_failed(self):
        """Run again the kept frames that failed on bundles other than the one now serving."""
        self.bundles.retry_due(lambda frame, failed_on: self._attempt(frame, self.governor.plan().profile,
                                                                      failed_on=failed_on), self._stop.is_set)

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
                next_slot = max(next_slot + self.interval_s, time.monotonic())
                self._idle(next_slot - time.monotonic())

    # ---- one frame ------------------------------------------------------------
    def _handle(self, frame):
        self.counters["frames"] += 1
        if frame.image is None:
            self._skip(frame, "skipped_corrupt", frame.reason or "corrupt frame")
            return
        decision = self.governor.plan()
        # Credit carries the unused share over: a fraction of 0.4 processes 2 frames in 5, evenly spread.
        self._credit += decision.frame_fraction
        if self._credit < 1.0 - 1e-9:
            self._skip(frame, "skipped_budget", "budget", profile=decision.profile)
            return
        self._credit -= 1.0
        self._attempt(frame, self._probe(decision) or decision.profile)

    def _attempt(self, frame, profile, failed_on=None):
        """Run, store and observe one frame; `failed_on` (generations) marks a retry of a failed frame."""
        try:
            run = run_profile(self.pipeline, frame.image, profile, self.bundles.current.cascade,
                              measure=self._measure)
        except FrameError as e:  # the image, not the bundle: a corrupt frame, not a failure
            self._skip(frame, "skipped_corrupt", "corrupt: %s" % e, profile=profile)
            return
        except BUNDLE_ERRORS as e:
            self._failed(frame, profile, e, failed_on)
            return
        self._failures = 0
        self.bundles.succeeded()
        self._store(frame, run, retried=failed_on is not None)
        self._observe(run)

    def _probe(self, decision):
        """An unmeasured profile to run once, so the governor can weigh it; None when none is due."""
        if decision.frame_fraction < 1.0:
            return None
        for profile in self.governor.unmeasured():
            if profile == decision.profile:
                continue
            for stage in stages_of(profile):
                if self.governor.estimate_j(stage) is None:
                    self.counters["probes"] += 1
                    return stage
        return None

    def _measure(self, profile, call):
        """run_profile's measure: an energy window on the sampler and the latency, around one stage."""
        window = "frame:" + profile
        self.sampler.begin_window(window)
        t0 = self.monotonic()
        ok = False
        try:
            result = call()
            ok = True
        finally:
            latency_s = self.monotonic() - t0
            measurement = self.sampler.end_window(window, wait=ok and self._wait_for_sample)
        return result, measurement.energy_j, latency_s

    def _failed(self, frame, profile, error, failed_on=None):
        self._failures += 1
        if failed_on is None:
            self._skip(frame, "failed", "error: %s" % error, profile=profile)
        logger.error("frame %s from %s failed%s on bundle %s (%d in a row): %s", frame.frame_id, frame.source,
                     "" if failed_on is None else " again", self.pipeline.bundle.root, self._failures, error)
        if self.bundles.failed(frame, error, failed_on):  # rolled back: the old bundle serves again
            self.governor.set_deployment(self.bundles.current.deployment)
            self._failures = 0  # those failures were the withdrawn bundle's
            self._retry_failed()
            return
        if self._failures >= self.max_failures:
            raise DaemonError("%d consecutive frames failed; last error: %s" % (self._failures, error)) from error

    def _skip(self, frame, counter, reason, profile=""):
        self.counters[counter] += 1
        self.store.record_frame(frame.t_unix_s, frame.source, frame.frame_id, status="skipped", reason=reason,
                                profile=profile, origin=frame.origin)
        self.status.record_frame(skipped=True, reason=SKIP_COUNTERS[counter])

    def _store(self, frame, run, retried=False):
        bundle = self.pipeline.bundle
        versions = {m.name: m.sha256[:12] for m in bundle.models if m.name in run.models}
        self.store.record_frame(frame.t_unix_s, frame.source, frame.frame_id, run.detections, profile=run.label,
                                latency_s=run.latency_s, energy_j=run.energy_j, reason=run.reason,
                                model_versions=versions, class_names=bundle.names,
                                crop_paths=self._crops(frame, run.detections), origin=frame.origin)
        self.counters["processed"] += 1
        self.counters["retried"] += int(retried)
        self.counters["detections"] += len(run.detections)
        self.counters["escalated"] += int(run.escalated)
        self.by_label[run.label] += 1
        self.status.record_frame(latency_s=run.latency_s, n_detections=len(run.detections), retried=retried)

    def _crops(self, frame, detections):
        critical_ids = self.bundles.current.cascade.critical_ids
        if len(detections) == 0 or not critical_ids:
            return None
        try:
            return self.crops.save_critical(frame.image, detections, critical_ids, frame.t_unix_s,
                                            frame.source, frame.frame_id, max_crops=self.config.crops_per_frame)
        except StoreError as e:  # a full or broken crops disk must not stop detection
            logger.warning("crops of frame %s not saved: %s", frame.frame_id, e)
            return None

    def _observe(self, run):
        if parse_label(run.label)[0] == CASCADE:
            first, full = run.stage(CASCADE_FIRST), run.stage(CASCADE_ESCALATION)
            self.governor.observe_cascade(first.energy_j, run.escalated, None if full is None else full.energy_j,
                                          first.latency_s, None if full is None else full.latency_s)
        else:
            stage = run.stages[0]
            self.governor.observe(stage.profile, stage.energy_j, stage.latency_s)
        latest = self.sampler.latest()
        self.status.set(power_w=latest.power_w, energy_today_wh=self.governor.spent_wh(),
                        budget_left_wh=self.governor.budget_left_wh(), profile=self.governor.profile,
                        profiles=list(self.profiles))
