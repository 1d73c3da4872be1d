"""The bundle the daemon serves: the first load, reloads on probation, rollback, and frames kept to retry.

A reload loads, verifies and opens `config.bundle` again; when that fails
the old pipeline keeps serving. A reloaded bundle is on probation: the one it
replaced stays open until a frame succeeds on the new one (`succeeded`). If
the first `probation_frames` attempts on it all fail with a model fault
(`failed`), it is closed and the old one serves again: a rollback.

Each frame that failed with a model fault is kept (the last `retry_frames`)
with the load generations it failed on, and runs again (`retry_due`) once a
bundle it has not failed on serves, i.e. after a reload or a rollback.
"""
import collections
import logging

from edge.energy import DeploymentProfile
from edge.profiles import settings_from_config

logger = logging.getLogger(__name__)

# One opened bundle: its pipeline, cascade settings, deployment profile (and where each value came from), and the
# number of the load that opened it, so a kept frame knows which bundles it already failed on.
Loaded = collections.namedtuple("Loaded", "pipeline cascade deployment origin generation")


def open_pipeline_factory(backend="auto", **options):
    """pipeline_factory(bundle_path) -> Pipeline: load and verify the bundle, open every backend."""
    def factory(path):
        from edge.bundle import load_bundle
        from edge.pipeline import Pipeline

        return Pipeline.open(load_bundle(path), backend=backend, **options)
    return factory


def bundle_deployment(bundle):
    """The bundle's DeploymentProfile, or None (none in its manifest, or a bundle object without one)."""
    return getattr(bundle, "deployment", None)


class ServingBundle(object):
    """The Loaded bundle serving now (`current`) and, while it is on probation, the last good one (`previous`).

    `pipeline_factory(bundle_path)` opens a Pipeline; the cascade settings and
    the deployment profile come from `config` and the bundle
    (EdgeConfig.resolve_deployment). `counters` (the daemon's) counts
    reloads, reload_failures and rollbacks.
    """

    def __init__(self, config, pipeline_factory, counters, probation_frames=3, retry_frames=8):
        self.config = config
        self.pipeline_factory = pipeline_factory
        self.counters = counters
        self.probation_frames = int(probation_frames)
        self.current = self.previous = None
        self._generation = 0
        self._retry = collections.deque(maxlen=int(retry_frames))  # (frame, generations it failed on)
        self._retrying = False
        self._probation_failures = 0

    @property
    def pipeline(self):
        return None if self.current is None else self.current.pipeline

    def open(self):
        """Load the first bundle (close() closes whatever is open at the end); returns its Loaded."""
        self.current = self._load()
        self._log("bundle", self.current)
        return self.current

    def close(self):
        for loaded in (self.previous, self.current):
            if loaded is not None:
                loaded.pipeline.close()
        self.previous = None

    def _load(self):
        """Loaded: a new pipeline for config.bundle, its cascade settings and deployment; closed again on failure."""
        pipeline = self.pipeline_factory(self.config.bundle)
        try:
            cascade = settings_from_config(pipeline.bundle, self.config)
            deployment, origin = self.config.resolve_deployment(bundle_deployment(pipeline.bundle))
            deployment.check_budget()
        except BaseException:
            pipeline.close()
            raise
        self._generation += 1
        return Loaded(pipeline, cascade, deployment, origin, self._generation)

    def _log(self, what, loaded):
        bundle = loaded.pipeline.bundle
        logger.info("%s %s: models %s", what, bundle.root, [m.name for m in bundle.models])
        logger.info("deployment profile: %s", ", ".join(
            "%s=%s (%s)" % (k, getattr(loaded.deployment, k), loaded.origin[k]) for k in DeploymentProfile.FIELDS))

    def reload(self):
        """Load config.bundle again: True when it now serves (on probation), False when refused (the old serves)."""
        logger.info("reloading bundle %s", self.config.bundle)
        try:
            loaded = self._load()
        except Exception as e:  # any failure to open the new bundle leaves the old one serving
            self.counters["reload_failures"] += 1
            logger.error("reload refused, still serving %s: %s", self.pipeline.bundle.root, e)
            return False
        if self.previous is None:
            self.previous = self.current  # kept open: the rollback target until a frame succeeds
        else:
            self.current.pipeline.close()  # still on probation, never proved itself: the last good one stays
        self.current, self._probation_failures = loaded, 0
        self.counters["reloads"] += 1
        self._log("reloaded bundle", loaded)
        return True

    def succeeded(self):
        """A frame succeeded: a reload on probation has proved itself, close the bundle it replaced."""
        if self.previous is not None:
            self.previous.pipeline.close()
            self.previous = None
            logger.info("bundle %s serves; the one it replaced is closed", self.pipeline.bundle.root)

    def failed(self, frame, error, failed_on=None):
        """A model fault on `frame` (`failed_on`: the generations of earlier failures): keep it to retry.

        Returns True when this failure ended a probation with a rollback.
        """
        self._retry.append((frame, (failed_on or frozenset()) | {self.current.generation}))
        if self.previous is None:
            return False
        self._probation_failures += 1
        if self._probation_failures < self.probation_frames:
            return False
        self._rollback(error)
        return True

    def _rollback(self, error):
        bad, self.current, self.previous = self.current, self.previous, None
        bad.pipeline.close()
        self.counters["rollbacks"] += 1
        logger.error("reload rolled back to bundle %s: the first %d frames on the reloaded bundle %s failed with "
                     "a model fault (last: %s)", self.pipeline.bundle.root, self._probation_failures,
                     bad.pipeline.bundle.root, error)

    def retry_due(self, attempt, stopped):
        """attempt(frame, failed_on), oldest first, for each kept frame that has not failed on the current bundle,
        until none is left or stopped() is true."""
        if self._retrying:  # a rollback during a retry: the running loop picks up what is due now
            return
        self._retrying = True
        try:
            while not stopped():
                due = [entry for entry in self._retry if self.current.generation not in entry[1]]
                if not due:
                    break
                self._retry.remove(due[0])
                frame, failed_on = due[0]
                logger.info("retrying frame %s from %s on bundle %s", frame.frame_id, frame.source,
                            self.pipeline.bundle.root)
                attempt(frame, failed_on)
        finally:
            self._retrying = False
