"""Inference profiles, their order, the cascade and its escalation rule: the one home of these names.

    single         the balanced model (or the first), no TTA
    ensemble       every model, no TTA
    ensemble_flip  every model, identity + horizontal flip
    ensemble_full  every model, the bundle's own view plan
    cascade        single first; ensemble_full when `should_escalate` says so

Profiles are arguments of the same `Pipeline.detect` call, never copies of
the pipeline. Nothing here measures energy: `run_profile` takes a `measure`
callable from its caller (the daemon's energy windows) and returns what it
measured per stage in the ProfileRun. Reasons for escalating are data (an
`Escalation` record with a `kind` from ESCALATION_KINDS); their text is only
for logs and the store. Stored profile labels are built by `profile_label`
and read back by `parse_label`, nowhere else.

This module imports only numpy and edge.errors, so edge.energy, edge.config
and edge.pipeline can import it without a cycle.
"""
import collections
import time

import numpy as np

from edge.errors import ConfigError

CASCADE = "cascade"
STATIC_PROFILES = ("single", "ensemble", "ensemble_flip", "ensemble_full")  # one pipeline call each
PROFILES = STATIC_PROFILES + (CASCADE,)
# Richness order for the governor, poorest first. Cascade sits above single:
# it equals single on easy frames and the full ensemble+TTA on hard ones.
DEFAULT_PROFILE_ORDER = ("single", CASCADE, "ensemble", "ensemble_flip", "ensemble_full")
CASCADE_FIRST, CASCADE_ESCALATION = "single", "ensemble_full"
CASCADE_STAGES = (CASCADE_FIRST, CASCADE_ESCALATION)
LABEL_SEPARATOR = ":"

# Why the cascade escalated (the first two) or stopped at its first stage (the last two).
ESCALATION_KINDS = ("critical", "uncertain", "empty", "confident")
ESCALATING_KINDS = ("critical", "uncertain")
BAND_EXPECTED = "[lo, hi] with 0 <= lo <= hi <= 1"

CascadeSettings = collections.namedtuple("CascadeSettings", "band critical_ids critical_min_score")


def check_profile(profile, choices=PROFILES):
    """`profile` when it is one of `choices`, else ConfigError listing them."""
    if profile not in choices:
        raise ConfigError("unknown inference profile {!r}; expected one of {}".format(profile, ", ".join(choices)))
    return profile


def stages_of(profile):
    """The single-stage profiles `profile` runs, in order: (profile,) or, for the cascade, CASCADE_STAGES."""
    return CASCADE_STAGES if check_profile(profile) == CASCADE else (profile,)


def profile_label(profile, stage=None):
    """The label a frame is stored under: the profile, or 'cascade:<stage that produced the detections>'."""
    if check_profile(profile) != CASCADE:
        return profile
    return CASCADE + LABEL_SEPARATOR + check_profile(stage, CASCADE_STAGES)


def parse_label(label):
    """A stored label -> (profile, stage); the inverse of `profile_label`. ConfigError on anything else."""
    profile, sep, stage = str(label).partition(LABEL_SEPARATOR)
    if not sep and profile in STATIC_PROFILES:
        return profile, profile
    if sep and profile == CASCADE and stage in CASCADE_STAGES:
        return profile, stage
    raise ConfigError("profile label {!r}; expected one of {} or {}".format(
        label, ", ".join(STATIC_PROFILES), ", ".join(CASCADE + LABEL_SEPARATOR + s for s in CASCADE_STAGES)))


def check_band(band, name="cascade band"):
    """(lo, hi) floats of an uncertain-score band; ConfigError naming `name` unless 0 <= lo <= hi <= 1."""
    try:
        lo, hi = band
        ok = not isinstance(lo, bool) and not isinstance(hi, bool)
        lo, hi = float(lo), float(hi)
    except (TypeError, ValueError):
        ok = False
    if not ok or not 0.0 <= lo <= hi <= 1.0:  # NaN fails the comparison too
        raise ConfigError("{}={!r}: expected {}".format(name, band, BAND_EXPECTED))
    return lo, hi


class Escalation(collections.namedtuple("Escalation", "escalate kind class_id score count band min_score")):
    """Why the cascade did or did not escalate a frame.

    `kind` is one of ESCALATION_KINDS; `count` the boxes of that kind (all
    boxes for 'confident'); `class_id` and `score` the top box of that kind
    (None for 'empty' and 'confident'); `band` the (lo, hi) used and
    `min_score` the critical-candidate threshold.
    """

    __slots__ = ()

    @property
    def message(self):
        lo, hi = self.band
        if self.kind == "critical":
            return "critical class {} candidate at score {:.3f} >= {:g}".format(self.class_id, self.score,
                                                                                 self.min_score)
        if self.kind == "uncertain":
            return "{} detection(s) in uncertain band [{:g}, {:g}]".format(self.count, lo, hi)
        if self.kind == "empty":
            return "no detections"
        return "{} detection(s) outside [{:g}, {:g}], no critical candidate".format(self.count, lo, hi)


def _escalation(kind, band, min_score, count, class_id=None, score=None):
    return Escalation(kind in ESCALATING_KINDS, kind, None if class_id is None else int(class_id),
                      None if score is None else float(score), int(count), band, float(min_score))


def should_escalate(detections, band, critical_ids, critical_min_score):
    """The cascade rule -> Escalation: escalate on a critical candidate or a score inside the band.

    `band` = (lo, hi) inclusive; a critical candidate is a detection whose
    class is in `critical_ids` with score >= `critical_min_score`; a
    confident critical detection escalates too (the rarest species get the
    richest look).
    """
    band = check_band(band)
    if len(detections) == 0:
        return _escalation("empty", band, critical_min_score, 0)
    score, class_id = detections.score, detections.class_id
    critical = np.isin(class_id, np.asarray(list(critical_ids), dtype=np.int64)) & (score >= critical_min_score)
    uncertain = (score >= band[0]) & (score <= band[1])
    for kind, mask in (("critical", critical), ("uncertain", uncertain)):
        if mask.any():
            i = int(np.argmax(np.where(mask, score, -1.0)))
            return _escalation(kind, band, critical_min_score, mask.sum(), class_id[i], score[i])
    return _escalation("confident", band, critical_min_score, len(detections))


def single_model(bundle):
    """The model the single profile runs: the balanced variant, else the bundle's first."""
    for spec in bundle.models:
        if spec.variant == "balanced":
            return spec
    return bundle.models[0]


def profile_spec(bundle, profile):
    """(model names, view plan) of a single-stage profile for `bundle`."""
    if profile == CASCADE:
        raise ConfigError("profile 'cascade' runs two stages ({} then {}); call run_profile, not profile_spec"
                          .format(CASCADE_FIRST, CASCADE_ESCALATION))
    check_profile(profile)
    names = [m.name for m in bundle.models]
    plans = {"single": ([single_model(bundle).name], "none"), "ensemble": (names, "none"),
             "ensemble_flip": (names, "flip"), "ensemble_full": (names, bundle.plan)}
    return plans[profile]


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
    return CascadeSettings(check_band(band), resolve_class_ids(bundle, critical_classes), float(critical_min_score))


def settings_from_config(bundle, config):
    return cascade_settings(bundle, config.cascade_band, config.critical_classes, config.critical_min_score)


StageRun = collections.namedtuple("StageRun", "profile models energy_j latency_s")
StageRun.__doc__ = """One pipeline call: the stage's profile, its models, energy_j (None: not measured), latency_s."""


class ProfileRun(collections.namedtuple("ProfileRun", "detections label escalated")):
    """What `run_profile` returns; unpacks as (detections, label, escalated).

    `stages` holds a StageRun per pipeline call, in order; `escalation` the
    cascade's Escalation (None for other profiles).
    """

    def __new__(cls, detections, label, stages, escalation=None):
        escalated = escalation is not None and escalation.escalate
        self = super(ProfileRun, cls).__new__(cls, detections, label, bool(escalated))
        self.stages = tuple(stages)
        self.escalation = escalation
        return self

    @property
    def reason(self):
        """The escalation's message ('' for a single-stage profile): what the store keeps."""
        return "" if self.escalation is None else self.escalation.message

    @property
    def models(self):
        """Model names used by any stage, first use first."""
        return tuple(collections.OrderedDict((m, None) for s in self.stages for m in s.models))

    @property
    def energy_j(self):
        """Energy of every stage together; None when a stage was not measured."""
        values = [s.energy_j for s in self.stages]
        return None if any(v is None for v in values) else float(sum(values))

    @property
    def latency_s(self):
        return float(sum(s.latency_s for s in self.stages))

    def stage(self, profile):
        """The StageRun of `profile`, or None when it did not run."""
        for s in self.stages:
            if s.profile == profile:
                return s
        return None


def timed(profile, call):
    """The default `measure`: latency by the performance counter, energy not measured -> (result, None, s)."""
    t0 = time.perf_counter()
    result = call()
    return result, None, time.perf_counter() - t0


def _run_stage(pipeline, frame, profile, measure, all_scores=False):
    models, plan = profile_spec(pipeline.bundle, profile)
    detections, energy_j, latency_s = measure(
        profile, lambda: pipeline.detect(frame, models=models, plan=plan, profile=profile, all_scores=all_scores))
    return detections, StageRun(profile, tuple(models), energy_j, latency_s)


def run_profile(pipeline, frame, profile, cascade_settings=None, measure=None, all_scores=False):
    """Run `profile` on one BGR frame -> ProfileRun (detections, label, escalated) with its stages.

    `measure(stage profile, call) -> (call(), energy_j, latency_s)` is wrapped
    around each pipeline call (default `timed`: latency only). With
    `all_scores` the detections are every fused box (for an evaluator); the
    cascade still decides on what its first stage reports at its operating point.
    """
    measure = measure or timed
    if profile != CASCADE:
        detections, stage = _run_stage(pipeline, frame, check_profile(profile), measure, all_scores)
        return ProfileRun(detections, profile_label(profile), (stage,))
    if cascade_settings is None:
        raise ConfigError("the cascade profile needs cascade settings (band, critical classes)")
    first, first_stage = _run_stage(pipeline, frame, CASCADE_FIRST, measure, all_scores)
    reported = first
    if all_scores:
        from edge.pipeline import at_operating_point

        reported = at_operating_point(first, pipeline.bundle.profile_settings(CASCADE_FIRST))
    escalation = should_escalate(reported, cascade_settings.band, cascade_settings.critical_ids,
                                 cascade_settings.critical_min_score)
    if not escalation.escalate:
        return ProfileRun(first, profile_label(CASCADE, CASCADE_FIRST), (first_stage,), escalation)
    full, full_stage = _run_stage(pipeline, frame, CASCADE_ESCALATION, measure, all_scores)
    return ProfileRun(full, profile_label(CASCADE, CASCADE_ESCALATION), (first_stage, full_stage), escalation)
