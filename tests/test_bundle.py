"""Bundle schema 2 and 1, hostile manifests, the archive cache, `bundle build` on a plain data.yaml."""
import copy
import json
import os
import tarfile

import numpy as np
import pytest

from edge.bundle import (CALIBRATED_PROFILES, DEFAULT_DECODE_THR, DEFAULT_FUSED_THR, DEFAULT_VARIANT_THR, MANIFEST,
                         archive_bundle, load_bundle, parse_manifest)
from edge.bundle_build import build_bundle, read_classes
from edge.bundle_cache import default_cache_dir
from edge.cli import main
from edge.errors import BundleError
from tests.test_daemon_process import ANCHORS, CLASSES, NC, head_model, head_onnx


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle")
    models = [(v, head_model(str(folder / ("%s.onnx" % v)), seed=i))
              for i, v in enumerate(("recall", "balanced", "precision"))]
    bundle = build_bundle(str(folder / "b"), models, CLASSES, tta="flip",
                          thresholds={"ensemble_full": 0.3, "single": [0.2, 0.3, 0.4]})
    return bundle


def _manifest(bundle):
    with open(os.path.join(bundle.root, MANIFEST)) as f:
        return json.load(f)


def test_schema2_carries_both_thresholds_per_model_and_profile(built):
    assert built.schema_version == 2
    for spec in built.models:
        assert spec.decode_thr == DEFAULT_DECODE_THR
        assert spec.operating_thr == DEFAULT_VARIANT_THR[spec.variant]
    assert sorted(built.profiles) == sorted(CALIBRATED_PROFILES)
    assert built.profile_settings("single").thresholds.tolist() == [0.2, 0.3, 0.4]
    assert built.profile_settings("ensemble_full").thresholds.tolist() == [0.3] * NC
    assert built.profile_settings("ensemble").thresholds.tolist() == [DEFAULT_FUSED_THR] * NC
    for name in CALIBRATED_PROFILES:
        assert built.profile_settings(name).temperatures.tolist() == [1.0] * NC


def test_schema1_bundle_keeps_its_behaviour(built):
    """Schema 1 decoded at conf_thr and applied fusion.score_thr after fusion, for every profile."""
    v1 = _manifest(built)
    v1["schema_version"] = 1
    v1.pop("profiles")
    v1["calibration"] = {"temperatures": [1.0, 2.0, 0.5]}
    v1["fusion"]["score_thr"] = 0.05
    v1["energy"] = {"budget_wh_day": 20.0}
    for entry in v1["models"]:
        entry["conf_thr"] = 0.1
        for key in ("decode_thr", "operating_thr"):
            entry.pop(key)
    bundle = parse_manifest(v1, built.root)
    assert [m.decode_thr for m in bundle.models] == [0.1] * 3
    for name in CALIBRATED_PROFILES:
        settings = bundle.profile_settings(name)
        assert settings.thresholds.tolist() == [0.05] * NC
        assert settings.temperatures.tolist() == [1.0, 2.0, 0.5]
    assert bundle.deployment.budget_wh_day == 20.0


def _set(path, value):
    def edit(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _nest(m, depth=100000):
    text = "[" * depth + "]" * depth
    m["accuracy"] = "NESTED"
    return text


HOSTILE = [
    (_set(("models", 0, "decode_thr"), float("nan")), "decode_thr"),
    (_set(("models", 0, "decode_thr"), -0.1), "decode_thr"),
    (_set(("models", 0, "decode_thr"), "0.2"), "decode_thr"),
    (_set(("models", 0, "decode_thr"), True), "decode_thr"),
    (_set(("models", 1, "iou_thr"), 1.5), "iou_thr"),
    (_set(("models", 1, "iou_thr"), -0.5), "iou_thr"),
    (_set(("models", 1, "operating_thr"), 2), "operating_thr"),
    (_set(("models", 2, "fusion_weight"), -1), "fusion_weight"),
    (_set(("models", 0), "recall.onnx"), "models[0]"),
    (_set(("models",), {"a": 1}), "models"),
    (_set(("models", 0, "input_size"), [100000, 100000]), "input_size"),
    (_set(("models", 0, "input_size"), [63, 64]), "input_size"),
    (_set(("models", 0, "input_size"), [64]), "input_size"),
    (_set(("models", 0, "batch"), 0), "batch"),
    (_set(("fusion",), [0.5]), "fusion"),
    (_set(("fusion",), {"iou_thr": "high"}), "fusion.iou_thr"),
    (_set(("fusion",), {"iou_thr": 0.0}), "fusion.iou_thr"),
    (_set(("fusion",), {"conf_type": "mean"}), "fusion.conf_type"),
    (_set(("fusion",), {"iou": 0.5}), "unknown keys"),
    (_set(("profiles", "single", "temperatures"), ["1", "1", "1"]), "profiles.single.temperatures[0]"),
    (_set(("profiles", "single", "temperatures"), [1.0, 0.0, 1.0]), "temperatures[1]"),
    (_set(("profiles", "ensemble", "thresholds"), [0.1, 0.2]), "2 values for 3 classes"),
    (_set(("profiles", "ensemble", "thresholds"), float("inf")), "thresholds"),
    (_set(("profiles", "turbo"), {}), "unknown profiles"),
    (_set(("profiles",), []), "profiles"),
    (_set(("deployment",), {"budget_wh_day": -1, "capture_interval_s": 60}), "deployment"),
    (_set(("deployment",), {"budget_wh_day": 10, "capture_interval_s": 60, "watts": 3}), "deployment"),
    (_set(("deployment",), "solar"), "deployment"),
    (_set(("classes", 0, "category"), "vital"), "category"),
    (_set(("classes", 0), 7), "classes[0]"),
    (_set(("schema_version",), 3), "schema_version"),
    (_set(("tta",), [{"rot90": 5}]), "tta"),
    (_set(("tta",), 7), "tta"),
    (_set(("gate",), "failed"), "gate"),
    (_set(("gate",), {"failures": []}), "missing field 'passed'"),
    (_set(("gate",), {"passed": "no", "failures": ["x"], "forced": True}), "gate.passed"),
    (_set(("gate",), {"passed": False, "failures": "mAP50 low", "forced": True}), "gate.failures"),
    (_set(("gate",), {"passed": False, "failures": [3], "forced": True}), r"gate.failures[0]"),
    (_set(("gate",), {"passed": False, "failures": ["x"], "forced": 1}), "gate.forced"),
    (_set(("gate",), {"passed": True, "failures": ["mAP50 low"]}), "a passing gate has none"),
    (_set(("gate",), {"passed": False, "failures": [], "forced": True}), "no failure is listed"),
    (_set(("gate",), {"passed": False, "failures": ["x"], "forced": False}), "only when forced"),
    (_set(("gate",), {"passed": True, "verdict": "ok"}), "unknown keys"),
    (_set(("gate",), {"passed": True, "profile": 3}), "gate.profile"),
    (_set(("default_profile",), "turbo"), "default_profile"),
]


GATE_FAILED = {"passed": False, "failures": ["mAP50 of profile ensemble is 0.1, under the floor 0.3"],
               "forced": True, "profile": "ensemble"}


@pytest.mark.parametrize("gate, passed", [(None, None), ({"passed": True, "failures": [], "forced": False}, True),
                                          ({"passed": True}, True), (GATE_FAILED, False)])
def test_gate_record_is_optional_and_read_back(built, gate, passed):
    manifest = copy.deepcopy(_manifest(built))
    manifest.pop("gate", None)
    if gate is not None:
        manifest["gate"] = gate
    bundle = parse_manifest(manifest, built.root, verify=False)
    assert (bundle.gate is None) == (gate is None)
    if gate is not None:
        assert bundle.gate["passed"] is passed and bundle.gate["failures"] == gate.get("failures", [])


def test_schema1_bundle_without_gate_loads(built):
    v1 = copy.deepcopy(_manifest(built))
    v1["schema_version"] = 1
    v1.pop("profiles")
    bundle = parse_manifest(v1, built.root, verify=False)
    assert bundle.gate is None and bundle.default_profile is None


@pytest.mark.parametrize("edit, message", HOSTILE)
def test_hostile_manifest_field_is_refused_naming_it(built, tmp_path, edit, message):
    manifest = copy.deepcopy(_manifest(built))
    edit(manifest)
    with pytest.raises(BundleError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_manifest(manifest, built.root, verify=False)


def _copy_bundle(built, folder, manifest_text=None):
    import shutil

    shutil.copytree(built.root, str(folder))
    if manifest_text is not None:
        (folder / MANIFEST).write_text(manifest_text)
    return str(folder)


def test_deeply_nested_manifest_is_a_bundle_error(built, tmp_path):
    text = json.dumps(_manifest(built))[:-1] + ', "accuracy": ' + "[" * 100000 + "]" * 100000 + "}"
    root = _copy_bundle(built, tmp_path / "deep", text)
    with pytest.raises(BundleError, match="nested too deeply|cannot read"):
        load_bundle(root)


def test_verify_refuses_classes_that_do_not_fit_the_model(built, tmp_path, capsys):
    """Today's fault: verify said ok, then the daemon failed five frames after SIGHUP and exited."""
    manifest = _manifest(built)
    manifest["classes"].append({"id": NC, "name": "extra", "category": "general"})
    manifest["profiles"] = {}  # defaults for 4 classes: only the model itself can tell
    root = _copy_bundle(built, tmp_path / "more-classes", json.dumps(manifest))
    assert main(["bundle", "verify", root]) == 2
    err = capsys.readouterr().err
    assert "does not fit the manifest" in err and "recall" in err and "Traceback" not in err


def test_verify_prints_thresholds_and_profiles(built, capsys):
    assert main(["bundle", "verify", built.root]) == 0
    out = capsys.readouterr().out
    assert "schema 2" in out and "decode>=0.01" in out and "profile ensemble_full" in out


def test_archive_is_extracted_once_per_checksum_and_pruned(built, tmp_path):
    cache = str(tmp_path / "cache")
    archive = archive_bundle(built.root, str(tmp_path / "b.tar.gz"))
    first = load_bundle(archive, cache_dir=cache).root
    for _ in range(5):  # reloads (SIGHUP) of the same archive reuse the folder
        assert load_bundle(archive, cache_dir=cache).root == first
    assert len(os.listdir(cache)) == 1
    for i in range(4):  # new archives: only the 3 most recently used stay
        manifest = _manifest(built)
        manifest["accuracy"] = {"build": i}
        root = _copy_bundle(built, tmp_path / ("v%d" % i), json.dumps(manifest))
        load_bundle(archive_bundle(root, str(tmp_path / ("v%d.tar.gz" % i))), cache_dir=cache)
    assert len(os.listdir(cache)) == 3


def test_bad_archive_leaves_no_staging_folder(tmp_path):
    evil = str(tmp_path / "evil.tar.gz")
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 0
        tar.addfile(info)
    cache = str(tmp_path / "cache")
    with pytest.raises(BundleError, match="escapes"):
        load_bundle(evil, cache_dir=cache)
    assert os.listdir(cache) == []


@pytest.mark.parametrize("environ, expected", [
    ({"REEFWATCH_CACHE_DIR": "/var/cache/reefwatch"}, "/var/cache/reefwatch/bundles"),
    ({"XDG_CACHE_HOME": "/x"}, "/x/reefwatch/bundles"),
])
def test_cache_folder_follows_the_environment(environ, expected):
    assert default_cache_dir(environ) == expected


def _plain_yaml(tmp_path, names):
    pytest.importorskip("yaml", reason="reading a data.yaml needs PyYAML (the trainer's side)")
    path = tmp_path / "data.yaml"
    path.write_text("names:\n" + "".join("  %d: %s\n" % (i, n) for i, n in enumerate(names)))
    return str(path)


def test_plain_data_yaml_takes_categories_from_flags(tmp_path):
    path = _plain_yaml(tmp_path, ["fish", "shark", "stingray", "jellyfish"])
    classes = read_classes(path, critical=["shark", "2"], important=["jellyfish"])
    assert [c[2] for c in classes] == ["general", "critical", "critical", "important"]
    assert [c[2] for c in read_classes(path)] == ["general"] * 4


@pytest.mark.parametrize("critical, important, message", [
    (["whale"], [], "no such class"),
    (["shark"], ["shark"], "both critical and important"),
])
def test_bad_category_flags_name_the_class(tmp_path, critical, important, message):
    with pytest.raises(BundleError, match=message):
        read_classes(_plain_yaml(tmp_path, ["fish", "shark"]), critical=critical, important=important)


def test_bundle_build_cli_on_plain_data_yaml(tmp_path, capsys):
    path = _plain_yaml(tmp_path, [c[1] for c in CLASSES])
    model = head_model(str(tmp_path / "m.onnx"))
    code = main(["bundle", "build", "--classes", path, "--critical", "turtle", "--model", "balanced=" + model,
                 "--operating-thr", "single=0.3", "--decode-thr", "0.005", "--out", str(tmp_path / "b")])
    assert code == 0, capsys.readouterr().err
    assert "critical: turtle" in capsys.readouterr().out
    bundle = load_bundle(str(tmp_path / "b"))
    assert bundle.models[0].decode_thr == 0.005
    assert bundle.profile_settings("single").thresholds.tolist() == [0.3] * NC


@pytest.mark.parametrize("argv_tail, message", [
    (["--operating-thr", "turbo=0.3"], "PROFILE=VALUE"),
    (["--operating-thr", "single=high"], "not a number"),
    (["--operating-thr", "single=1.5"], "in \\[0, 1\\]"),
    (["--decode-thr", "-1"], "decode-thr"),
])
def test_bundle_build_bad_threshold_flags(tmp_path, capsys, argv_tail, message):
    path = _plain_yaml(tmp_path, [c[1] for c in CLASSES])
    model = head_model(str(tmp_path / "m.onnx"))
    code = main(["bundle", "build", "--classes", path, "--model", "balanced=" + model,
                 "--out", str(tmp_path / "b")] + argv_tail)
    import re

    err = capsys.readouterr().err
    assert code == 2 and re.search(message, err) and "Traceback" not in err
    assert not (tmp_path / "b").exists()


def test_model_with_wrong_class_count_is_refused_by_build(tmp_path):
    wrong = np.zeros((1, 4 + NC + 2, ANCHORS), np.float32)
    model = head_onnx(str(tmp_path / "wrong.onnx"), wrong, np.zeros_like(wrong))
    with pytest.raises(BundleError, match="classes"):
        build_bundle(str(tmp_path / "b"), [("balanced", model)], CLASSES)


def test_verify_warns_about_a_forced_failing_bundle(built, tmp_path, capsys):
    manifest = _manifest(built)
    manifest.update(gate=GATE_FAILED, default_profile="ensemble")
    root = _copy_bundle(built, tmp_path / "forced", json.dumps(manifest))
    assert main(["bundle", "verify", root]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "FAILED the trainer's budget gate" in out and "under the floor 0.3" in out
    assert "default profile: ensemble" in out


def test_verify_of_a_passing_or_ungated_bundle_does_not_warn(built, tmp_path, capsys):
    manifest = _manifest(built)
    manifest["gate"] = {"passed": True, "failures": [], "forced": False}
    root = _copy_bundle(built, tmp_path / "passed", json.dumps(manifest))
    assert main(["bundle", "verify", root]) == 0
    assert "warning" not in capsys.readouterr().out
    assert main(["bundle", "verify", built.root]) == 0
    assert "warning" not in capsys.readouterr().out
