"""Inference profiles: names, labels, the band check, the cascade rule as data, and per-stage run records."""
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from edge.detections import Detections
from edge.errors import ConfigError
from edge.profiles import (CASCADE, CASCADE_ESCALATION, CASCADE_FIRST, CASCADE_STAGES, DEFAULT_PROFILE_ORDER,
                           ESCALATING_KINDS, ESCALATION_KINDS, PROFILES, STATIC_PROFILES, CascadeSettings, Escalation,
                           check_band, parse_label, profile_label, run_profile, should_escalate, stages_of)


def D(scores, classes):
    n = len(scores)
    return Detections(np.tile([[0, 0, 10, 10]], (n, 1)), scores, classes)


# ---- names ------------------------------------------------------------------------

def test_names_order_and_stages_are_one_set():
    assert set(DEFAULT_PROFILE_ORDER) == set(PROFILES) and len(DEFAULT_PROFILE_ORDER) == len(PROFILES)
    assert PROFILES == STATIC_PROFILES + (CASCADE,)
    assert CASCADE_STAGES == (CASCADE_FIRST, CASCADE_ESCALATION) and set(CASCADE_STAGES) <= set(STATIC_PROFILES)
    assert DEFAULT_PROFILE_ORDER[0] == CASCADE_FIRST  # the governor starts with the poorest


@pytest.mark.parametrize("profile", PROFILES)
def test_stages_of(profile):
    assert stages_of(profile) == (CASCADE_STAGES if profile == CASCADE else (profile,))


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match="'turbo'.*single, ensemble"):
        stages_of("turbo")


@pytest.mark.parametrize("profile, stage", [(p, p) for p in STATIC_PROFILES] + [(CASCADE, s) for s in CASCADE_STAGES])
def test_labels_round_trip(profile, stage):
    label = profile_label(profile, stage)
    assert parse_label(label) == (profile, stage)
    assert label == (profile if profile != CASCADE else "cascade:" + stage)


@pytest.mark.parametrize("label", ["", "turbo", "cascade", "cascade:ensemble", "single:single", "cascade:single:x"])
def test_unknown_labels_raise_naming_the_label(label):
    with pytest.raises(ConfigError, match="label %r" % label):
        parse_label(label)


def test_a_cascade_label_needs_a_cascade_stage():
    with pytest.raises(ConfigError, match="ensemble_flip"):
        profile_label(CASCADE, "ensemble_flip")


# ---- the band -----------------------------------------------------------------------

@pytest.mark.parametrize("band", [(0.25, 0.6), [0, 1], (0.5, 0.5), ["0.2", "0.7"]])
def test_good_bands(band):
    assert check_band(band) == (float(band[0]), float(band[1]))


@pytest.mark.parametrize("band", [(0.7, 0.2), (-0.1, 0.5), (0.2, 1.5), (0.1,), (0.1, 0.2, 0.3), None,
                                  (float("nan"), 0.5), (True, 1.0), ("low", "high")])
def test_bad_bands_name_the_rule(band):
    with pytest.raises(ConfigError, match=r"cascade band=.*expected \[lo, hi\] with 0 <= lo <= hi <= 1"):
        check_band(band)


# ---- the cascade rule ---------------------------------------------------------------

@pytest.mark.parametrize("scores, classes, expected, word", [
    ([], [], False, "no detections"),
    ([0.9, 0.1], [1, 1], False, "outside"),
    ([0.9, 0.5], [1, 1], True, "uncertain"),
    ([0.25], [1], True, "uncertain"),      # band is inclusive
    ([0.6], [1], True, "uncertain"),
    ([0.35], [7], True, "critical class 7"),
    ([0.95], [7], True, "critical class 7"),  # confident critical detections still escalate
    ([0.1], [7], False, "outside"),       # below the candidate threshold and the band
])
def test_should_escalate(scores, classes, expected, word):
    escalation = should_escalate(D(scores, classes), (0.25, 0.6), {7, 9}, 0.3)
    assert escalation.escalate is expected
    assert word in escalation.message


def test_should_escalate_rejects_bad_band():
    with pytest.raises(ConfigError, match="band"):
        should_escalate(D([0.5], [1]), (0.7, 0.2), set(), 0.3)


LO, HI, CRITICAL, MIN_SCORE = 0.25, 0.6, {7, 9}, 0.3


def expected_escalation(scores, classes):
    """The rule written out per box: critical candidates first, then scores in [LO, HI]."""
    boxes = list(zip(scores, classes))
    critical = [(s, c) for s, c in boxes if c in CRITICAL and s >= MIN_SCORE]
    uncertain = [(s, c) for s, c in boxes if LO <= s <= HI]
    if not boxes:
        return "empty", None, None, 0
    for kind, chosen in (("critical", critical), ("uncertain", uncertain)):
        if chosen:
            score, class_id = max(chosen)
            return kind, class_id, score, len(chosen)
    return "confident", None, None, len(boxes)


@pytest.mark.parametrize("scores, classes", [
    ([], []), ([0.9, 0.1], [1, 1]), ([0.9, 0.5, 0.3], [1, 2, 1]), ([0.35, 0.8], [7, 9]), ([0.5, 0.95], [1, 7]),
    ([0.1, 0.2], [7, 9]), ([0.4], [9]),
])
def test_escalation_is_data(scores, classes):
    escalation = should_escalate(D(scores, classes), (LO, HI), CRITICAL, MIN_SCORE)
    kind, class_id, score, count = expected_escalation(scores, classes)
    assert isinstance(escalation, Escalation) and escalation.kind in ESCALATION_KINDS
    assert (escalation.kind, escalation.class_id, escalation.count) == (kind, class_id, count)
    assert escalation.score == (None if score is None else pytest.approx(score))
    assert escalation.escalate is (kind in ESCALATING_KINDS)
    assert escalation.band == (LO, HI) and escalation.min_score == MIN_SCORE


@pytest.mark.parametrize("kind, class_id, score, count, text", [
    ("critical", 7, 0.35, 1, "critical class 7 candidate at score 0.350 >= 0.3"),
    ("uncertain", 1, 0.5, 2, "2 detection(s) in uncertain band [0.25, 0.6]"),
    ("empty", None, None, 0, "no detections"),
    ("confident", None, None, 3, "3 detection(s) outside [0.25, 0.6], no critical candidate"),
])
def test_escalation_message_is_made_from_its_fields(kind, class_id, score, count, text):
    escalation = Escalation(kind in ESCALATING_KINDS, kind, class_id, score, count, (0.25, 0.6), 0.3)
    assert escalation.message == text


# ---- run records ----------------------------------------------------------------------

class FakePipeline(object):
    """Records detect() calls; the single stage sees one box at `score`, the full ensemble at 0.9."""

    def __init__(self, score):
        spec = lambda name, variant: types.SimpleNamespace(name=name, variant=variant)  # noqa: E731
        self.bundle = types.SimpleNamespace(models=[spec("r", "recall"), spec("b", "balanced")], plan="full")
        self.score, self.calls = score, []

    def detect(self, frame, models=None, plan=None, profile=None, all_scores=False):
        self.calls.append((tuple(models), plan, profile))
        return D([self.score if profile == "single" else 0.9], [1])


class Meter(object):
    """A measure callable: stage k costs (k + 1) J and (k + 1) / 10 s, in call order."""

    def __init__(self):
        self.stages = []

    def __call__(self, profile, call):
        self.stages.append(profile)
        k = len(self.stages)
        return call(), float(k), k / 10.0


SETTINGS = CascadeSettings((0.25, 0.6), (), 0.3)


@pytest.mark.parametrize("profile, score, stages, label", [
    ("single", 0.9, ["single"], "single"),
    ("ensemble_flip", 0.9, ["ensemble_flip"], "ensemble_flip"),
    ("cascade", 0.9, ["single"], "cascade:single"),
    ("cascade", 0.45, ["single", "ensemble_full"], "cascade:ensemble_full"),
])
def test_run_records_each_stage_from_the_callers_measure(profile, score, stages, label):
    pipeline, meter = FakePipeline(score), Meter()
    run = run_profile(pipeline, np.zeros((8, 8, 3), np.uint8), profile, SETTINGS, measure=meter)
    assert meter.stages == stages and [c[2] for c in pipeline.calls] == stages  # profile= reaches the pipeline
    assert [s.profile for s in run.stages] == stages and run.label == label
    assert [s.energy_j for s in run.stages] == [float(k + 1) for k in range(len(stages))]
    assert run.energy_j == pytest.approx(sum(k + 1 for k in range(len(stages))))
    assert run.latency_s == pytest.approx(sum((k + 1) / 10.0 for k in range(len(stages))))
    assert run.escalated is (len(stages) == 2)
    assert (run.escalation is None) is (profile != CASCADE)
    if run.escalation is not None:
        assert run.reason == run.escalation.message
        assert run.escalation.kind == ("uncertain" if run.escalated else "confident")
    assert run.stage("ensemble_full") is (run.stages[-1] if "ensemble_full" in stages else None)


def test_stage_models_and_plans_follow_the_profile():
    pipeline = FakePipeline(0.45)
    run = run_profile(pipeline, np.zeros((8, 8, 3), np.uint8), "cascade", SETTINGS)
    assert pipeline.calls == [(("b",), "none", "single"), (("r", "b"), "full", "ensemble_full")]
    assert run.models == ("b", "r")
    assert run.energy_j is None and all(s.latency_s >= 0.0 for s in run.stages)  # default measure: time only


def test_cascade_without_settings_raises():
    with pytest.raises(ConfigError, match="cascade settings"):
        run_profile(FakePipeline(0.9), np.zeros((8, 8, 3), np.uint8), "cascade")


def test_profiles_imports_neither_energy_nor_pipeline():
    code = "import sys, edge.profiles; print(sorted(m for m in sys.modules if m.startswith('edge.')))"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.check_output([sys.executable, "-c", code], cwd=root).decode()
    assert "edge.energy" not in out and "edge.pipeline" not in out and "edge.profiles" in out


class AllScoresPipeline(FakePipeline):
    """The single stage finds a box at 0.45 that its operating threshold (0.5) does not report."""

    def __init__(self):
        FakePipeline.__init__(self, 0.45)
        thresholds = np.full(2, 0.5)
        self.bundle.profile_settings = lambda name: types.SimpleNamespace(thresholds=thresholds)

    def detect(self, frame, models=None, plan=None, profile=None, all_scores=False):
        self.calls.append((tuple(models), plan, profile, all_scores))
        found = D([0.45], [1])
        return found if all_scores or profile != "single" else found[found.score >= 0.5]


@pytest.mark.parametrize("all_scores, escalated, reported", [(False, False, 0), (True, False, 1)])
def test_cascade_decides_on_what_its_first_stage_reports(all_scores, escalated, reported):
    """With all_scores (an evaluator's run) the detections keep every score, but the decision to escalate is
    the device's: made on the first stage's boxes at its operating point, where the 0.45 box is not."""
    pipeline = AllScoresPipeline()
    run = run_profile(pipeline, np.zeros((8, 8, 3), np.uint8), "cascade", SETTINGS, all_scores=all_scores)
    assert run.escalated is escalated and len(run.detections) == reported
    assert [c[3] for c in pipeline.calls] == [all_scores]
