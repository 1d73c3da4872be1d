"""The daemon loop on fakes: a replaying backend that advances a fake clock, a constant-power meter.

Every backend call takes STEP_S of fake time at POWER_W, so a profile's
energy per frame is POWER_W x STEP_S x (backend calls it makes): single 1,
ensemble 3 models, ensemble_flip 3 x 2 views, ensemble_full 3 x 7 views.
"""
import json
import os
import threading
import time
import urllib.request

import numpy as np
import pytest

from edge.backends.fake import FakeBackend
from edge.bundle import DEFAULT_FUSION, Bundle, ClassSpec, ModelSpec
from edge.config import load_edge_config
from edge.daemon import Daemon, DaemonError
from edge.energy import local_day_bounds_unix_s
from edge.errors import BackendError, BundleError, ConfigError
from edge.pipeline import Pipeline
from edge.power.base import Meter, make_sample
from edge.profiles import cascade_settings, profile_spec, resolve_class_ids, run_profile
from edge.sources import Frame
from edge.tta import view_plan

POWER_W, STEP_S, SIZE, NC = 5.0, 0.1, 64, 3
CALLS = {"single": 1, "ensemble": 3, "ensemble_flip": 6, "ensemble_full": 21}
CLASSES = [ClassSpec(0, "turtle", "critical"), ClassSpec(1, "grouper", "important"), ClassSpec(2, "wrasse", "general")]
VARIANTS = ("recall", "balanced", "precision")


class FakeClock(object):
    def __init__(self):
        self.t = local_day_bounds_unix_s(time.time())[0] + 60.0  # just after local midnight
        self.mono = 1000.0
        self._lock = threading.Lock()

    def time(self):
        with self._lock:
            return self.t

    def monotonic(self):
        with self._lock:
            return self.mono

    def advance(self, seconds):
        with self._lock:
            self.t += seconds
            self.mono += seconds


class ConstantMeter(Meter):
    name = "constant"

    def __init__(self, clock, power_w=POWER_W):
        self.clock, self.power_w = clock, power_w

    def read(self):
        return make_sample(self.clock.monotonic(), self.power_w, source="constant", measured=True)


def sha(version, variant):
    return ("%s-%s" % (version, variant)).ljust(64, "0")


def fake_bundle(root, version="v1", variants=VARIANTS):
    models = [ModelSpec(v, v, os.path.join(root, v + ".onnx"), sha(version, v), "onnx",
                        (SIZE, SIZE), 1, 0.25, 0.7, 1.0, None) for v in variants]
    return Bundle(root, {}, models, CLASSES, [1.0] * NC, view_plan("full"), dict(DEFAULT_FUSION))


class Scene(object):
    """What the fake models see: one box of `class_id` at `score`, or a failure (of every bundle, or a faulty one)."""

    def __init__(self, clock):
        self.clock, self.class_id, self.score, self.step_s, self.fail, self.on_call = clock, 1, 0.9, STEP_S, False, None

    def outputs(self, batch, faulty=False):
        self.clock.advance(self.step_s)
        if self.on_call is not None:
            self.on_call()
        if self.fail or faulty:
            raise BackendError("fake engine fault")
        out = np.zeros((batch.shape[0], 4 + NC, 2), np.float32)
        out[:, :4, 0] = [32.0, 32.0, 20.0, 20.0]
        out[:, 4 + self.class_id, 0] = self.score
        return out


class FakeBundles(object):
    """pipeline_factory: a Pipeline over FakeBackends; `version`, `broken` and `deployment` control the next load,
    `faulty` lists the versions whose models fail on every frame."""

    def __init__(self, scene):
        self.scene, self.version, self.broken, self.opened, self.faulty, self.deployment = \
            scene, "v1", False, [], set(), None
        self.gate = None  # the manifest's budget-gate record of the next load

    def __call__(self, path):
        if self.broken:
            raise BundleError("%s/manifest.json: checksum of balanced.onnx does not match" % path)
        bundle = fake_bundle(path, self.version)
        bundle.deployment = self.deployment
        bundle.gate = self.gate
        faulty = self.version in self.faulty

        def outputs(batch):
            return self.scene.outputs(batch, faulty)

        backends = {m.name: FakeBackend(outputs, input_shape=(3, SIZE, SIZE)) for m in bundle.models}
        self.opened.append(Pipeline(bundle, backends))
        return self.opened[-1]


def frames(clock, count, hooks=None, corrupt=(), tiny=()):
    """source_factory yielding `count` grey frames (unreadable at `corrupt`, 1x1 at `tiny`); hooks[i]() runs
    before frame i is taken."""
    def factory(stop_event, wait):
        def generate():
            for i in range(count):
                if hooks and i in hooks:
                    hooks[i]()
                if stop_event.is_set():
                    return
                side = 1 if i in tiny else SIZE
                image = None if i in corrupt else np.full((side, side, 3), 90, np.uint8)
                yield Frame(i, clock.time(), image, "fake", "corrupt jpeg" if image is None else "", "fake#%d" % i)
        return generate()
    return factory


@pytest.fixture
def rig(tmp_path):
    clock = FakeClock()
    scene = Scene(clock)
    bundles = FakeBundles(scene)

    def make(count=10, hooks=None, corrupt=(), tiny=(), pace=False, max_failures=5, **settings):
        values = dict(bundle=str(tmp_path / "bundle"), source="fake", store_path=str(tmp_path / "s.sqlite"),
                      crops_dir=str(tmp_path / "crops"), store_synchronous="NORMAL", http_address="",
                      budget_wh_day=1000.0, profile="ensemble_flip", interval_s=10.0)
        values.update(settings)
        config = load_edge_config(None, values)
        return Daemon(config, pipeline_factory=bundles, source_factory=frames(clock, count, hooks, corrupt, tiny),
                      meter=ConstantMeter(clock), clock=clock.time, monotonic=clock.monotonic, pace=pace,
                      max_failures=max_failures)

    rig = type("Rig", (), {})()
    rig.clock, rig.scene, rig.bundles, rig.make, rig.tmp = clock, scene, bundles, make, tmp_path
    return rig


def stored(rig):
    from edge.store import Store

    with Store(str(rig.tmp / "s.sqlite"), check="none") as store:
        return list(reversed(store.frame_rows())), store.detections_since()


# ---- profiles -------------------------------------------------------------------

@pytest.mark.parametrize("profile, models, views", [
    ("single", ["balanced"], ["identity"]),
    ("ensemble", list(VARIANTS), ["identity"]),
    ("ensemble_flip", list(VARIANTS), ["identity", "hflip"]),
    ("ensemble_full", list(VARIANTS), list(v.name for v in view_plan("full"))),
])
def test_profile_spec_maps_name_to_models_and_plan(profile, models, views):
    got_models, plan = profile_spec(fake_bundle("/b"), profile)
    assert got_models == models
    assert [v.name for v in view_plan(plan)] == views


def test_single_profile_without_balanced_model_uses_the_first():
    assert profile_spec(fake_bundle("/b", variants=("recall", "precision")), "single")[0] == ["recall"]


@pytest.mark.parametrize("profile", ["cascade", "turbo"])
def test_profile_spec_refuses_two_stage_and_unknown_names(profile):
    with pytest.raises(ConfigError, match=profile):
        profile_spec(fake_bundle("/b"), profile)


@pytest.mark.parametrize("classes, expected", [
    (None, (0,)), (["grouper", 2], (1, 2)), (["2", "turtle"], (0, 2)), ([], ()),
])
def test_critical_classes_resolve_names_and_ids(classes, expected):
    assert resolve_class_ids(fake_bundle("/b"), classes) == expected


@pytest.mark.parametrize("classes, message", [(["shark"], "'shark' is not in bundle"), ([7], "out of range")])
def test_unknown_critical_classes_are_named(classes, message):
    with pytest.raises(ConfigError, match=message):
        resolve_class_ids(fake_bundle("/b"), classes)


# (class, score) of the first stage's only box -> escalated; band [0.25, 0.6], critical {turtle} from 0.3
@pytest.mark.parametrize("class_id, score, escalated, kind", [
    (1, 0.9, False, "outside"),
    (1, 0.45, True, "uncertain band"),
    (0, 0.9, True, "critical class 0"),
    (1, 0.1, False, "no detections"),  # below the model's conf_thr 0.25
])
def test_cascade_escalates_on_critical_or_uncertain(class_id, score, escalated, kind):
    scene = Scene(FakeClock())
    scene.class_id, scene.score = class_id, score
    pipeline = FakeBundles(scene)("/b")
    settings = cascade_settings(pipeline.bundle, (0.25, 0.6), None, 0.3)
    run = run_profile(pipeline, np.full((SIZE, SIZE, 3), 90, np.uint8), "cascade", settings)
    detections, label, did_escalate = run
    assert did_escalate == escalated and kind in run.reason
    assert label == ("cascade:ensemble_full" if escalated else "cascade:single")
    calls = sum(len(b.calls) for b in pipeline.backends.values())
    assert calls == CALLS["single"] + (CALLS["ensemble_full"] if escalated else 0)


# ---- the loop ---------------------------------------------------------------------

def test_each_frame_is_stored_with_energy_latency_versions_and_crops(rig):
    rig.scene.class_id = 0  # critical: every detection gets a crop
    summary = rig.make(count=4, profile="ensemble_flip").run()
    rows, detections = stored(rig)
    calls = CALLS["ensemble_flip"]
    assert summary["processed"] == 4 and [r["status"] for r in rows] == ["ok"] * 4
    for row in rows:
        assert row["profile"] == "ensemble_flip" and row["n_detections"] == 1
        assert row["latency_s"] == pytest.approx(calls * STEP_S)
        assert row["energy_j"] == pytest.approx(POWER_W * calls * STEP_S)
        assert json.loads(row["model_versions"]) == {v: sha("v1", v)[:12] for v in VARIANTS}
    assert [d["class_name"] for d in detections] == ["turtle"] * 4
    assert all(os.path.isfile(d["crop_path"]) for d in detections)
    assert [r["origin"] for r in rows] == ["fake#%d" % i for i in range(4)]


@pytest.mark.parametrize("gate, warned", [
    (None, False),
    ({"passed": True, "failures": [], "forced": False}, False),
    ({"passed": False, "failures": ["Wh/day of profile ensemble_flip is 31, over the budget 20"], "forced": True},
     True),
])
def test_a_bundle_shipped_past_a_failing_gate_is_warned_about_at_start(rig, caplog, gate, warned):
    rig.bundles.gate = gate
    with caplog.at_level("WARNING", logger="edge.daemon"):
        summary = rig.make(count=1).run()
    assert summary["processed"] == 1  # it still serves: the user forced it
    warnings = [r.getMessage() for r in caplog.records if r.name == "edge.daemon" and r.levelname == "WARNING"]
    gate_warnings = [w for w in warnings if "budget gate" in w]
    assert bool(gate_warnings) == warned
    if warned:
        assert "over the budget 20" in gate_warnings[0] and "--force" in gate_warnings[0]


def test_crops_per_frame_zero_saves_no_crop(rig):
    rig.scene.class_id = 0
    rig.make(count=2, profile="single", crops_per_frame=0).run()
    assert [d["crop_path"] for d in stored(rig)[1]] == [None, None]


def test_non_critical_detections_get_no_crop(rig):
    rig.make(count=2, profile="single").run()
    assert [d["crop_path"] for d in stored(rig)[1]] == [None, None]


def _projected_wh(profile, energy_scale=1.0):
    frames_per_day = 86400.0 / 10.0
    return frames_per_day * POWER_W * STEP_S * CALLS[profile] * energy_scale / 3600.0


def test_governor_probes_profiles_picks_richest_that_fits_and_switches_down(rig):
    budget = 8.0
    assert _projected_wh("ensemble_flip") < budget < _projected_wh("ensemble_full")
    assert _projected_wh("single", 4) < budget < _projected_wh("ensemble", 4)

    def costlier():
        rig.scene.step_s = 4 * STEP_S  # every profile now costs 4x

    rig.make(count=60, hooks={20: costlier}, profile="auto", budget_wh_day=budget).run()
    labels = [r["profile"] for r in stored(rig)[0]]
    # Frame 0 runs the poorest profile; then each unmeasured stage once, poorest first.
    assert labels[:4] == ["single", "ensemble_full", "ensemble", "ensemble_flip"]
    assert set(labels[4:20]) == {"ensemble_flip"}
    assert labels[-5:] == ["single"] * 5


def test_budget_too_small_processes_only_the_affordable_share(rig):
    budget = 0.5 * _projected_wh("single")
    summary = rig.make(count=40, profile="single", budget_wh_day=budget).run()
    rows = stored(rig)[0]
    skipped = [r for r in rows if r["status"] == "skipped"]
    assert summary["skipped_budget"] == len(skipped) and {r["reason"] for r in skipped} == {"budget"}
    assert 15 <= len(skipped) <= 22
    assert summary["processed"] + len(skipped) == 40


def test_cascade_escalations_are_recorded(rig):
    def scene(score):
        return lambda: setattr(rig.scene, "score", score)

    hooks = {i: scene(0.45 if i % 2 else 0.9) for i in range(6)}
    summary = rig.make(count=6, hooks=hooks, profile="cascade").run()
    rows = stored(rig)[0]
    assert [r["profile"] for r in rows] == ["cascade:single", "cascade:ensemble_full"] * 3
    assert all("uncertain band" in r["reason"] for r in rows[1::2])
    assert [r["origin"] for r in rows] == ["fake#%d" % i for i in range(6)]
    full_j = POWER_W * STEP_S * (CALLS["single"] + CALLS["ensemble_full"])
    assert [r["energy_j"] for r in rows[1::2]] == pytest.approx([full_j] * 3)
    assert summary["escalated"] == 3


def test_corrupt_frames_are_stored_as_skipped_and_counted(rig):
    daemon = rig.make(count=5, corrupt=(1, 3), profile="single")
    summary = daemon.run()
    rows = stored(rig)[0]
    assert [r["status"] for r in rows] == ["ok", "skipped", "ok", "skipped", "ok"]
    assert rows[1]["reason"] == "corrupt jpeg"
    assert summary["skipped_corrupt"] == 2 and daemon.status.snapshot()["frames_skipped"] == 2


def test_a_backend_error_skips_one_frame_and_the_loop_goes_on(rig):
    hooks = {2: lambda: setattr(rig.scene, "fail", True), 3: lambda: setattr(rig.scene, "fail", False)}
    summary = rig.make(count=5, hooks=hooks, profile="single").run()
    rows = stored(rig)[0]
    assert [r["status"] for r in rows] == ["ok", "ok", "skipped", "ok", "ok"]
    assert rows[2]["reason"].startswith("error:") and "fake engine fault" in rows[2]["reason"]
    assert summary["failed"] == 1 and summary["processed"] == 4


def test_consecutive_backend_failures_stop_the_daemon_and_close_everything(rig):
    daemon = rig.make(count=10, hooks={1: lambda: setattr(rig.scene, "fail", True)}, profile="single",
                      max_failures=3)
    with pytest.raises(DaemonError, match="3 consecutive frames failed"):
        daemon.run()
    assert [r["status"] for r in stored(rig)[0]] == ["ok", "skipped", "skipped", "skipped"]
    assert all(b.closed for b in rig.bundles.opened[0].backends.values())


def test_reload_swaps_to_the_new_bundle_between_frames(rig):
    daemon = None

    def new_bundle():
        rig.bundles.version = "v2"
        daemon.request_reload()

    daemon = rig.make(count=5, hooks={2: new_bundle}, profile="single")
    summary = daemon.run()
    versions = [json.loads(r["model_versions"]) for r in stored(rig)[0]]
    assert versions == [{"balanced": sha("v1", "balanced")[:12]}] * 2 + [{"balanced": sha("v2", "balanced")[:12]}] * 3
    assert summary["reloads"] == 1 and len(rig.bundles.opened) == 2
    assert all(b.closed for b in rig.bundles.opened[0].backends.values())


def test_reload_of_a_broken_bundle_keeps_the_old_one_serving(rig):
    daemon = None

    def broken_bundle():
        rig.bundles.broken = True
        daemon.request_reload()

    daemon = rig.make(count=5, hooks={2: broken_bundle}, profile="single")
    summary = daemon.run()
    rows = stored(rig)[0]
    assert [r["status"] for r in rows] == ["ok"] * 5
    assert {r["model_versions"] for r in rows} == {json.dumps({"balanced": sha("v1", "balanced")[:12]})}
    assert summary["reload_failures"] == 1 and summary["reloads"] == 0 and len(rig.bundles.opened) == 1


def test_stop_finishes_the_frame_in_flight_and_takes_no_more(rig):
    daemon = None

    def stop_during_inference():
        rig.scene.on_call = daemon.request_stop

    daemon = rig.make(count=10, hooks={3: stop_during_inference}, profile="ensemble")
    summary = daemon.run()
    rows = stored(rig)[0]
    assert summary["frames"] == 4 and [r["status"] for r in rows] == ["ok"] * 4
    assert rows[-1]["latency_s"] == pytest.approx(CALLS["ensemble"] * STEP_S)  # all three models ran


def test_stop_cuts_the_pacing_sleep_short(rig):
    daemon = rig.make(count=3, pace=True, interval_s=30.0, profile="single")
    timer = threading.Timer(0.3, daemon.request_stop)
    timer.start()
    start = time.monotonic()
    summary = daemon.run()
    timer.join()
    assert time.monotonic() - start < 5.0 and summary["frames"] == 1


def test_restart_restores_todays_spend_from_the_store(rig):
    rig.make(count=3, profile="single").run()
    daemon = rig.make(count=0, profile="single")
    daemon.run()
    spent_j = 3 * POWER_W * STEP_S * CALLS["single"]
    assert daemon.governor.spent_wh() == pytest.approx(spent_j / 3600.0)
    assert daemon.governor.estimate_j("single") == pytest.approx(POWER_W * STEP_S)


def test_restart_restores_the_cascade_escalation_rate(rig):
    hooks = {i: (lambda score: lambda: setattr(rig.scene, "score", score))(0.45 if i % 3 == 0 else 0.9)
             for i in range(9)}
    first = rig.make(count=9, hooks=hooks, profile="cascade")
    first.run()
    escalated = sum(1 for i in range(9) if i % 3 == 0)
    rate = (0.25 * 10 + escalated) / (10 + 9)  # config escalation_prior 0.25, prior weight 10
    assert first.governor.escalation_rate == pytest.approx(rate)
    restarted = rig.make(count=0, profile="cascade")
    restarted.run()
    assert restarted.governor.escalation_rate == pytest.approx(rate)


def test_restart_on_a_folder_reads_only_the_files_not_yet_stored(rig, tmp_path):
    import cv2
    from edge.daemon import source_factory_for

    folder = tmp_path / "in"
    folder.mkdir()
    old = time.time() - 60
    for i in range(5):
        cv2.imwrite(str(folder / ("%02d.png" % i)), np.full((SIZE, SIZE, 3), 50 + i, np.uint8))
        os.utime(str(folder / ("%02d.png" % i)), (old, old))

    def run(max_frames):
        daemon = rig.make(profile="single")
        config = daemon.config._replace(source=str(folder))
        daemon.source_factory = source_factory_for(config, watch=False, clock=rig.clock.time)
        return daemon.run(max_frames=max_frames)

    assert run(max_frames=2)["frames"] == 2
    assert run(max_frames=None)["frames"] == 3
    assert run(max_frames=None)["frames"] == 0
    origins = [r["origin"] for r in stored(rig)[0]]
    assert origins == [str(folder / ("%02d.png" % i)) for i in range(5)]


def test_http_metrics_and_detections_answer_while_running(rig):
    answers = {}
    daemon = None

    def query():
        host, port = daemon.http_address
        for path in ("/metrics", "/detections?since=0", "/healthz"):
            with urllib.request.urlopen("http://%s:%d%s" % (host, port, path), timeout=5) as response:
                answers[path] = (response.status, response.read().decode("utf-8"))

    daemon = rig.make(count=5, hooks={3: query}, profile="single", http_address="127.0.0.1:0")
    daemon.run()
    status, metrics = answers["/metrics"]
    assert status == 200 and "reefwatch_frames_total 3" in metrics
    assert 'reefwatch_profile{profile="single"} 1' in metrics
    status, body = answers["/detections?since=0"]
    assert status == 200 and len(json.loads(body)["detections"]) == 3
    assert answers["/healthz"][0] == 200
    assert daemon.http_address is None  # stopped with the daemon


# ---- faults: the image's or the bundle's ----------------------------------------------

def test_an_unusable_image_is_a_corrupt_skip_and_never_stops_the_daemon(rig):
    tiny = (1, 2, 3)  # three 1x1 frames in a row, more than max_failures
    summary = rig.make(count=5, tiny=tiny, profile="single", max_failures=2).run()
    rows = stored(rig)[0]
    assert [r["status"] for r in rows] == ["ok", "skipped", "skipped", "skipped", "ok"]
    assert all(r["reason"].startswith("corrupt:") and "too small" in r["reason"] for r in rows[1:4])
    assert (summary["skipped_corrupt"], summary["failed"], summary["processed"]) == (len(tiny), 0, 5 - len(tiny))


def test_frames_failed_by_a_bundle_are_retried_after_the_reload_that_replaces_it(rig):
    daemon = None
    rig.bundles.faulty = {"v1-bad"}
    rig.bundles.version = "v1-bad"

    def fixed_bundle():
        rig.bundles.version = "v2"
        daemon.request_reload()

    daemon = rig.make(count=5, hooks={3: fixed_bundle}, profile="single")
    summary = daemon.run()
    rows = stored(rig)[0]
    v2 = {"balanced": sha("v2", "balanced")[:12]}
    assert [(r["frame_id"], r["status"]) for r in rows] == [
        (0, "skipped"), (1, "skipped"), (2, "skipped"), (0, "ok"), (1, "ok"), (2, "ok"), (3, "ok"), (4, "ok")]
    assert all(json.loads(r["model_versions"]) == v2 for r in rows if r["status"] == "ok")
    assert (summary["frames"], summary["failed"], summary["retried"], summary["processed"]) == (5, 3, 3, 5)
    assert summary["frames"] == (summary["processed"] - summary["retried"] + summary["skipped_corrupt"]
                                 + summary["skipped_budget"] + summary["failed"])
    snap = daemon.status.snapshot()
    assert (snap["frames_total"], snap["frames_retried"]) == (5, 3)


def test_a_reload_whose_frames_all_fail_rolls_back_and_reruns_them(rig, caplog):
    daemon, probation = None, 3
    rig.bundles.faulty = {"v2"}

    def faulty_bundle():
        rig.bundles.version = "v2"
        daemon.request_reload()

    daemon = rig.make(count=8, hooks={2: faulty_bundle}, profile="single", max_failures=probation)
    with caplog.at_level("ERROR", logger="edge.daemon_reload"):
        summary = daemon.run()
    rows = stored(rig)[0]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = list(range(2, 2 + probation))
    assert [r["frame_id"] for r in rows if r["status"] == "skipped"] == failed
    assert sorted(r["frame_id"] for r in ok) == list(range(8))  # every frame stored once it ran on v1
    assert {r["model_versions"] for r in ok} == {json.dumps({"balanced": sha("v1", "balanced")[:12]})}
    assert (summary["reloads"], summary["rollbacks"], summary["retried"]) == (1, 1, probation)
    v1, v2 = rig.bundles.opened
    assert all(b.closed for b in v2.backends.values()) and all(b.closed for b in v1.backends.values())
    assert any("rolled back" in r.getMessage() and "first %d frames" % probation in r.getMessage()
               for r in caplog.records)


def test_a_reload_on_probation_closes_the_old_bundle_after_its_first_good_frame(rig):
    daemon, closed_at_frame = None, {}

    def new_bundle():
        rig.bundles.version = "v2"
        daemon.request_reload()

    def look(i):
        return lambda: closed_at_frame.setdefault(i, all(b.closed for b in rig.bundles.opened[0].backends.values()))

    daemon = rig.make(count=4, hooks={1: new_bundle, 2: look(2)}, profile="single")
    summary = daemon.run()
    assert closed_at_frame == {2: True}  # frame 1 ran on v2, so v1 was closed before frame 2
    assert summary["rollbacks"] == 0 and summary["reloads"] == 1


def test_only_model_faults_count_towards_max_failures(rig):
    hooks = {1: lambda: setattr(rig.scene, "fail", True)}
    daemon = rig.make(count=6, hooks=hooks, tiny=(2, 4), profile="single", max_failures=3)
    with pytest.raises(DaemonError, match="3 consecutive frames failed"):
        daemon.run()
    rows = stored(rig)[0]
    assert [r["reason"].split(":")[0] for r in rows[1:]] == ["error", "corrupt", "error", "corrupt", "error"]


# ---- the deployment profile: the bundle's, refined by the config ---------------------------

def test_budget_and_interval_come_from_the_bundle_unless_the_config_gives_them(rig, caplog):
    from edge.energy import DeploymentProfile

    rig.bundles.deployment = DeploymentProfile(3.0, "inference", capture_interval_s=30.0, idle_power_w=1.1)
    with caplog.at_level("INFO", logger="edge.daemon_reload"):
        from_bundle = rig.make(count=1, profile="single", budget_wh_day=None, interval_s=None)
        from_bundle.run()
    assert from_bundle.governor.deployment == rig.bundles.deployment and from_bundle.interval_s == 30.0
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "budget_wh_day=3.0 (bundle)" in log and "capture_interval_s=30.0 (bundle)" in log
    given = rig.make(count=1, profile="single", budget_wh_day=50.0)  # and interval_s=10 (the rig's)
    given.run()
    assert given.governor.deployment == rig.bundles.deployment.replace(budget_wh_day=50.0, capture_interval_s=10.0)


def test_without_a_bundle_deployment_the_config_defaults_apply(rig):
    daemon = rig.make(count=1, profile="single", budget_wh_day=None)
    daemon.run()
    assert daemon.governor.deployment.budget_wh_day == 14.4  # today's default
    from edge.daemon_reload import bundle_deployment

    assert bundle_deployment(object()) is None  # a bundle object from before bundle.deployment


def test_the_measured_idle_power_is_logged_beside_the_deployments_not_the_configs_default(rig, caplog):
    from edge.energy import DeploymentProfile

    idle_w = 1.1
    assert idle_w != load_edge_config(None, {}).idle_power_w  # else the log could not tell them apart
    rig.bundles.deployment = DeploymentProfile(3.0, capture_interval_s=10.0, idle_power_w=idle_w)
    daemon = rig.make(count=1, profile="single", budget_wh_day=None)
    daemon.measure_idle_s = 0.01
    with caplog.at_level("INFO", logger="edge.daemon"):
        daemon.run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("idle power")]
    assert len(lines) == 1 and "deployment idle_power_w %.2f W, from the bundle" % idle_w in lines[0], lines


def test_a_reload_brings_the_new_bundles_deployment(rig):
    from edge.energy import DeploymentProfile

    daemon = None
    rig.bundles.deployment = DeploymentProfile(3.0, capture_interval_s=10.0)

    def new_bundle():
        rig.bundles.version, rig.bundles.deployment = "v2", DeploymentProfile(5.0, capture_interval_s=10.0)
        daemon.request_reload()

    daemon = rig.make(count=3, hooks={1: new_bundle}, profile="single", budget_wh_day=None)
    daemon.run()
    assert daemon.governor.deployment.budget_wh_day == 5.0


# ---- /metrics: a series per skip reason ------------------------------------------------------

def test_metrics_count_each_skip_reason_from_the_daemons_counters(rig):
    from edge.http import format_metrics

    budget = 0.5 * _projected_wh("single")
    hooks = {5: lambda: setattr(rig.scene, "fail", True), 6: lambda: setattr(rig.scene, "fail", False)}
    daemon = rig.make(count=30, hooks=hooks, corrupt=(1, 3), tiny=(7,), profile="single", budget_wh_day=budget)
    summary = daemon.run()
    text = format_metrics(daemon.status.snapshot())
    expected = {"corrupt": summary["skipped_corrupt"], "budget": summary["skipped_budget"],
                "failed": summary["failed"]}
    assert expected["corrupt"] >= 2 and expected["budget"] > 0  # the 1x1 frame may fall on a budget skip
    assert sum(expected.values()) == daemon.status.snapshot()["frames_skipped"]
    for reason, count in expected.items():
        assert 'reefwatch_frames_skipped_total{reason="%s"} %r' % (reason, float(count)) in text.splitlines()
