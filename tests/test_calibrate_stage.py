"""`trainer calibrate` end to end on tiny random-head ONNX models and a few synthetic frames."""
import json
import os

import numpy as np
import pytest

from edge.bundle import CALIBRATED_PROFILES, load_bundle, make_manifest, model_entry, write_bundle
from trainer.config import load_config
from trainer.errors import ConfigError, TrainerError
from trainer.stages import calibrate
from tests.cli_runner import run_in_process
from tests.yolo_models import random_detector_onnx, random_frames

pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

NC, IMGSZ = 3, 64
VARIANTS = (("recall", 0.15), ("balanced", 0.25), ("precision", 0.4))
CATEGORIES = {0: "critical", 1: "important", 2: "general"}


def _label_frames(frames, model, label_dir):
    """Ground truth taken from one model's two best boxes per class (and one box no model finds), so every
    profile has true and false positives of every class to fit on."""
    import cv2

    from edge.pipeline import Pipeline

    os.makedirs(label_dir, exist_ok=True)
    with Pipeline.from_models([("balanced", model)], ["c%d" % i for i in range(NC)], IMGSZ) as pipeline:
        for path in frames:
            frame = cv2.imread(path)
            h, w = frame.shape[:2]
            found = pipeline.detect(frame, plan="none", all_scores=True)
            found = found[np.concatenate([np.flatnonzero(found.class_id == c)[np.argsort(
                -found.score[found.class_id == c])[:2]] for c in range(NC)])]
            lines = ["%d %.6f %.6f %.6f %.6f" % (c, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h)
                     for (x0, y0, x1, y1), _, c in found]
            lines.append("0 0.1 0.1 0.05 0.05")
            stem = os.path.splitext(os.path.basename(path))[0]
            with open(os.path.join(label_dir, stem + ".txt"), "w") as fh:
                fh.write("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    import yaml

    root = tmp_path_factory.mktemp("calibrate")
    export = root / "export"
    models = [random_detector_onnx(str(root / "models"), NC, IMGSZ, seed=s) for s in range(len(VARIANTS))]
    os.makedirs(str(export))
    entries = []
    for (name, threshold), model in zip(VARIANTS, models):
        os.replace(model, str(export / (name + ".onnx")))
        entries.append({"name": name, "onnx": name + ".onnx", "threshold": threshold, "imgsz": IMGSZ})
    (export / "export.json").write_text(json.dumps({"variants": entries}))
    frames = random_frames(str(root / "images" / "val"), 5, sizes=((64, 64), (80, 60)))
    _label_frames(frames, str(export / "balanced.onnx"), str(root / "labels" / "val"))
    data = root / "data.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "train": "images/val", "val": "images/val",
                                    "test": "images/val", "names": ["c%d" % i for i in range(NC)],
                                    "categories": CATEGORIES}))
    return {"root": root, "export": str(export), "data": str(data), "entries": entries}


def _cascade_on_device(bundle_dir, images):
    """(boxes reported, share of frames escalated) of the cascade on the real pipeline over a bundle."""
    import cv2

    from edge.pipeline import Pipeline, at_operating_point
    from edge.profiles import cascade_settings, run_profile

    reported, escalated = 0, 0
    with Pipeline.open(bundle_dir, backend="onnxruntime") as pipeline:
        settings = cascade_settings(pipeline.bundle)
        for path in images:
            run = run_profile(pipeline, cv2.imread(path), "cascade", settings, all_scores=True)
            stage = pipeline.bundle.profile_settings(run.stages[-1].profile)
            reported += len(at_operating_point(run.detections, stage))
            escalated += bool(run.escalated)
    return reported, escalated / float(len(images))


def _config(**settings):
    values = dict({"images": 5, "min_matches": 3}, **settings)
    return load_config(None, ["calibration.%s=%s" % kv for kv in values.items()])


@pytest.mark.slow
def test_calibrate_writes_temperatures_the_bundle_accepts(assets, tmp_path):
    out = tmp_path / "cal"
    result = calibrate.run_calibrate(_config(), assets["export"], assets["data"], str(out), progress=False)
    record = json.loads((out / "calibration.json").read_text())
    assert set(record["profiles"]) == set(CALIBRATED_PROFILES) == set(result.profiles)
    assert record["split"] == "val" and record["images"] == 5 and record["method"] == "temperature"
    assert record["tta"] == calibrate.DEPLOYED_PLAN  # the plan ensemble_full was fitted on (trainer bundle reads it)
    # Fusion weights follow each model's own mAP50 on the same images (power 2 by default).
    assert list(record["fusion_weights"]) == [name for name, _ in VARIANTS] == list(record["model_map50"])
    assert record["fusion_weights"] == pytest.approx(calibrate.fusion_weights(record["model_map50"], 2.0))
    for profile, entry in record["profiles"].items():
        assert len(entry["temperatures"]) == NC and len(entry["thresholds"]) == NC
        assert all(t > 0 for t in entry["temperatures"])
        figures = entry["figures"]
        assert figures["ap50_max_change"] <= calibrate.AP_TOLERANCE
        for c in figures["per_class"]:
            assert c["pooled"] == (c["matches"] < 3)
            if c["pooled"]:
                assert c["temperature"] == pytest.approx(figures["pooled_temperature"])
        for state in ("before", "after"):
            assert "overall" in record["d_ece"][profile][state] and "overall" in record["log_loss"][profile][state]
        # Fitting T minimizes log loss per class: the pooled total cannot rise above T = 1's by much.
        assert record["log_loss"][profile]["after"]["overall"] <= record["log_loss"][profile]["before"]["overall"] + 1e-6
        assert (out / record["reliability"][profile]).stat().st_size > 1000
    assert "cascade" in record and set(record["cascade"]["d_ece"]) == {"before", "after"}
    assert "cascade" not in result.profiles  # the cascade has no settings of its own
    text = (out / "report.md").read_text()
    assert "## ensemble_full" in text and "## cascade" in text and "D-ECE" in text and "Fusion weights" in text

    # The bundle code takes the fitted settings as they are (schema 2 profiles).
    bundle_dir = tmp_path / "bundle"
    os.makedirs(str(bundle_dir / "models"))
    entries = []
    for entry in assets["entries"]:
        file_name = "models/%s.onnx" % entry["name"]
        with open(os.path.join(assets["export"], entry["onnx"]), "rb") as src:
            (bundle_dir / file_name).write_bytes(src.read())
        entries.append(model_entry(entry["name"], entry["name"], file_name, str(bundle_dir), [IMGSZ, IMGSZ], 1))
    classes = [(c["id"], c["name"], c["category"]) for c in record["classes"]]
    manifest = make_manifest(entries, classes, temperatures={p: v["temperatures"] for p, v in result.profiles.items()},
                             thresholds={p: v["thresholds"] for p, v in result.profiles.items()})
    write_bundle(str(bundle_dir), manifest)
    bundle = load_bundle(str(bundle_dir))
    for profile, entry in result.profiles.items():
        np.testing.assert_allclose(bundle.profile_settings(profile).temperatures, entry["temperatures"])
        np.testing.assert_allclose(bundle.profile_settings(profile).thresholds, entry["thresholds"])

    # The device running that bundle reproduces the cascade's figures (replayed stages = real stages).
    reported, escalated = _cascade_on_device(str(bundle_dir), record["inputs"]["images"])
    assert escalated == pytest.approx(record["cascade"]["after"]["escalated_share"])
    assert reported == record["cascade"]["after"]["by_category"]["overall"]["kept"]

    # Same inputs: reused; another image count: fitted again.
    again = calibrate.run_calibrate(_config(), assets["export"], assets["data"], str(out), progress=False)
    assert again.resumed and again.profiles == result.profiles
    fewer = calibrate.run_calibrate(_config(images=4), assets["export"], assets["data"], str(out), progress=False)
    assert not fewer.resumed and json.loads((out / "calibration.json").read_text())["images"] == 4


@pytest.mark.slow
def test_calibrate_cli_cascade_alone_fits_its_stages(assets, tmp_path):
    out = tmp_path / "cli"
    from trainer.cli import COMMANDS, main

    commands = dict(COMMANDS, calibrate=(calibrate.add_arguments, calibrate.run_command))
    argv = ["--set", "calibration.profiles=cascade", "calibrate", "--export", assets["export"], "--data",
            assets["data"], "--out", str(out), "--images", "3"]
    code, text, err, crash = run_in_process(lambda a: main(a, commands=commands), argv)
    assert code == 0 and crash is None, err + (crash or "")
    record = json.loads((out / "calibration.json").read_text())
    assert list(record["profiles"]) == ["single", "ensemble_full"] and record["images"] == 3
    assert set(record["d_ece"]) == {"single", "ensemble_full", "cascade"}
    assert "calibrate cascade: D-ECE" in text


def test_refuses_the_test_split_and_unknown_profiles(assets, tmp_path):
    with pytest.raises(ConfigError, match="test"):
        calibrate.check_split("test")
    with pytest.raises(ConfigError, match="unknown inference profile"):
        calibrate.requested_profiles("single,everything")
    assert calibrate.requested_profiles("cascade,single") == ["single", "cascade"]
    assert calibrate.stages_needed(["cascade"]) == ["single", "ensemble_full"]


def test_missing_export_is_one_trainer_error(assets, tmp_path):
    with pytest.raises(TrainerError, match="run `trainer export` first"):
        calibrate.run_calibrate(_config(), str(tmp_path), assets["data"], str(tmp_path / "out"), progress=False)
    (tmp_path / "export.json").write_text(json.dumps({"variants": [{"name": "balanced", "onnx": "gone.onnx",
                                                                    "threshold": 0.25}]}))
    with pytest.raises(TrainerError, match="gone.onnx does not exist"):
        calibrate.run_calibrate(_config(), str(tmp_path), assets["data"], str(tmp_path / "out"), progress=False)


def test_fusion_weights_follow_each_models_map50():
    weights = calibrate.fusion_weights({"recall": 0.3, "balanced": 0.6, "precision": float("nan")}, 2.0)
    assert weights == {"recall": pytest.approx(0.25), "balanced": 1.0, "precision": 0.0}
    assert calibrate.fusion_weights({"recall": 0.3, "balanced": 0.6}, 0.0) == {"recall": 1.0, "balanced": 1.0}
    # Nothing scored: no evidence to weigh by, so equal weights.
    assert calibrate.fusion_weights({"recall": 0.0, "balanced": 0.0}, 2.0) == {"recall": 1.0, "balanced": 1.0}


def test_profiles_fused_from_each_model_alone_equal_the_pipeline(assets):
    """run_stages fuses single and ensemble from detect_alone's boxes: the same as running them again."""
    variants = calibrate.read_export(assets["export"])
    bundle = calibrate.deployed_bundle(variants, ["c%d" % i for i in range(NC)], {}, 0.001)
    items = calibrate.calibration_items(assets["data"], "val", 5)
    alone = calibrate.detect_alone(bundle, items, progress=False)
    bundle = calibrate.with_fusion_weights(bundle, {"recall": 0.5, "balanced": 1.0, "precision": 0.8})
    replayed = calibrate.run_stages(bundle, items, ["single", "ensemble"], progress=False, alone=alone)
    ran = calibrate.run_stages(bundle, items, ["single", "ensemble"], progress=False)
    boxes = 0
    for profile in ("single", "ensemble"):
        for a, b in zip(replayed[profile], ran[profile]):
            np.testing.assert_array_equal(a.xyxy, b.xyxy)
            np.testing.assert_array_equal(a.score, b.score)
            np.testing.assert_array_equal(a.class_id, b.class_id)
            boxes += len(a)
    assert boxes > 0
