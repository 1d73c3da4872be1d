"""Inference profiles as (models, view plan) of one bundle, and the cascade that escalates between them.

    single         the balanced model (or the first), no TTA
    ensemble       every model, no TTA
    ensemble_flip  every model, identity + horizontal flip
    ensemble_full  every model, the bundle's own view plan
    cascade        single first; ensemble_full when `energy.should_escalate` says so

Profiles are arguments of the same `Pipeline.detect` call, never copies of
the pipeline. Nothing here measures anything: `run_profile` takes a `stage`
context-manager factory that the daemon wraps around each pipeline call.
"""
import collections
import contextlib

from edge.energy import CASCADE_ESCALATION, CASCADE_FIRST, PROFILES, should_escalate
from edge.errors import ConfigError

CASCADE = "cascade"
STATIC_PROFILES = ("single", "ensemble", "ensemble_flip", "ensemble_full")

CascadeSettings = collections.namedtuple("CascadeSettings", "band critical_ids critical_min_score")


class ProfileRun(collections.namedtuple("ProfileRun", "detections label escalated")):
    """What `run_profile` returns; unpacks as (detections, label, escalated).

    `reason` says why a cascade escalated or not ('' for other profiles);
    `stages` lists the profiles run, in order; `models` the model names used.
    """

    def __new__(cls, detections, label, escalated, reason="", stages=(), models=()):
        self = super(ProfileRun, cls).__new__(cls, detections, label, bool(escalated))
        self.reason = reason
        self.stages = tuple(stages)
        self.models = tuple(models)
        return self


def single_model(bundle):
    """The model the single profile runs: the balanced variant, else the bundle's first."""
    for spec in bundle.models:
        if spec.variant == "balanced":
            return spec
    return bundle.models[0]


def profile_spec(bundle, profile):
    """(model names, view plan) of a single-stage profile for `bundle`."""
    names = [m.name for m in bundle.models]
    if profile == "single":
        return [single_model(bundle).name], "none"
    if profile == "ensemble":
        return names, "none"
    if profile == "ensemble_flip":
        return names, "flip"
    if profile == "ensemble_full":
        return names, bundle.plan
    if profile == CASCADE:
        raise ConfigError("profile 'cascade' runs two stages ({} then {}); call run_profile, not profile_spec"
                          .format(CASCADE_FIRST, CASCADE_ESCALATION))
    raise ConfigError("unknown inference profile {!r}; expected one of {}".format(profile, ", ".join(PROFILES)))


def resolve_class_ids(bundle, classes):
    """Class names or ids -> sorted ids of `bundle`; None -> the bundle's critical category."""
    if classes is None:
        return tuple(bundle.ids_in("critical"))
    by_name = {c.name: c.id for c in bundle.classes}
    ids = set()
    for item in classes:
        if isinstance(item, str) and not item.isdigit():
            if item not in by_name:
                raise ConfigError("critical class {!r} is not in bundle {}; its classes are {}".format(
                    item, bundle.root, ", ".join(sorted(by_name))))
            ids.add(by_name[item])
            continue
        class_id = int(item)
        if not 0 <= class_id < bundle.num_classes:
            raise ConfigError("critical class id {} is out of range for bundle {} ({} classes)".format(
                class_id, bundle.root, bundle.num_classes))
        ids.add(class_id)
    return tuple(sorted(ids))


def cascade_settings(bundle, band=(0.25, 0.6), critical_classes=None, critical_min_score=0.3):
    """CascadeSettings for `bundle` (config's cascade_band, critical_classes, critical_min_score)."""
    lo, hi = float(band[0]), float(band[1])
    if not 0.0 <= lo <= hi <= 1.0:
        raise ConfigError("cascade band {!r}; expected 0 <= lo <= hi <= 1".format(band))
    return CascadeSettings((lo, hi), resolve_class_ids(bundle, critical_classes), float(critical_min_score))


def settings_from_config(bundle, config):
    return cascade_settings(bundle, config.cascade_band, config.critical_classes, config.critical_min_score)


@contextlib.contextmanager
def _no_stage(name):
    yield


def _run_stage(pipeline, frame, profile, stage):
    models, plan = profile_spec(pipeline.bundle, profile)
    with stage(profile):
        detections = pipeline.detect(frame, models=models, plan=plan)
    return detections, models


def run_profile(pipeline, frame, profile, cascade_settings=None, stage=None):
    """Run `profile` on one BGR frame -> ProfileRun (detections, label, escalated).

    `label` is the profile, or for the cascade "cascade:<stage that produced
    the detections>". `stage(name)` is a context manager wrapped around each
    pipeline call (default: none).
    """
    stage = stage or _no_stage
    if profile != CASCADE:
        detections, models = _run_stage(pipeline, frame, profile, stage)
        return ProfileRun(detections, profile, False, "", (profile,), models)
    if cascade_settings is None:
        raise ConfigError("the cascade profile needs cascade settings (band, critical classes)")
    first, models = _run_stage(pipeline, frame, CASCADE_FIRST, stage)
    escalate, reason = should_escalate(first, cascade_settings.band, cascade_settings.critical_ids,
                                       cascade_settings.critical_min_score)
    if not escalate:
        return ProfileRun(first, "%s:%s" % (CASCADE, CASCADE_FIRST), False, reason, (CASCADE_FIRST,), models)
    full, full_models = _run_stage(pipeline, frame, CASCADE_ESCALATION, stage)
    used = list(models) + [m for m in full_models if m not in models]
    return ProfileRun(full, "%s:%s" % (CASCADE, CASCADE_ESCALATION), True, reason,
                      (CASCADE_FIRST, CASCADE_ESCALATION), used)


def escalation_kind(reason):
    """A short category of a cascade reason, for counting: critical, uncertain, empty or confident."""
    if reason.startswith("critical class"):
        return "critical candidate"
    if "uncertain band" in reason and "outside" not in reason:
        return "uncertain band"
    if reason == "no detections":
        return "no detections"
    return "confident, no critical"
