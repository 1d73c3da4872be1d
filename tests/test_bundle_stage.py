"""`trainer bundle` end to end on tiny random-head YOLOv8n models and a tiny labelled set.

The export and calibrate stages are stood in for by hand-written export.json and calibration.json
in their agreed formats (/tmp/prompts/week6.md). The labels are the balanced model's own confident
detections, so the measured figures are far from zero and the floors mean something.
"""
import json
import os
import shutil

import pytest

from edge.bundle import load_bundle, sha256_of
from edge.energy import daily_energy
from trainer.config import load_config
from trainer.errors import TrainerError
from trainer.stages.bundle import BUNDLE_DIR, REPORT, SUMMARY, choose_default, deployment_profile, run_bundle

NC, IMGSZ = 3, 64
VARIANTS = (("recall", 0.15), ("balanced", 0.25), ("precision", 0.40))
NAMES = ["turtle", "grouper", "wrasse"]
CATEGORIES = {0: "critical", 1: "important", 2: "general"}
LABEL_SCORE = 0.3
TEMPERATURES = {"single": [1.0, 1.1, 0.9], "ensemble": [1.2, 1.0, 1.0], "ensemble_flip": [0.8, 1.0, 1.3],
                "ensemble_full": [1.0, 1.0, 1.0]}
THRESHOLDS = {"single": [0.2, 0.25, 0.3], "ensemble": [0.15] * NC, "ensemble_flip": [0.15] * NC,
              "ensemble_full": [0.1, 0.15, 0.2]}


def _labelled_set(root, model):
    """Frames labelled with the model's own detections scoring >= LABEL_SCORE (one per class at least where any)."""
    import yaml
    from edge.images import read_image
    from edge.pipeline import Pipeline
    from tests.yolo_models import random_frames

    images = os.path.join(root, "images", "val")
    labels = os.path.join(root, "labels", "val")
    os.makedirs(labels)
    paths = random_frames(images, 6, sizes=((64, 64), (80, 96), (96, 64)))
    with Pipeline.from_models([("balanced", model)], NAMES, imgsz=IMGSZ) as pipeline:
        for path in paths:
            frame = read_image(path)
            det = pipeline.detect(frame, all_scores=True)
            det = det[det.score >= LABEL_SCORE]
            h, w = frame.shape[:2]
            with open(os.path.join(labels, os.path.splitext(os.path.basename(path))[0] + ".txt"), "w") as fh:
                for (x1, y1, x2, y2), cls in zip(det.xyxy, det.class_id):
                    fh.write("%d %.6f %.6f %.6f %.6f\n" % (cls, (x1 + x2) / 2 / w, (y1 + y2) / 2 / h,
                                                           (x2 - x1) / w, (y2 - y1) / h))
    data = os.path.join(root, "data.yaml")
    with open(data, "w") as fh:
        yaml.safe_dump({"path": root, "train": "images/val", "val": "images/val", "names": NAMES,
                        "categories": CATEGORIES}, fh)
    return data


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from tests.yolo_models import random_detector_onnx

    root = str(tmp_path_factory.mktemp("bundle-stage"))
    export_dir, calibration_dir = os.path.join(root, "export"), os.path.join(root, "calibrate")
    os.makedirs(calibration_dir)
    entries = []
    for seed, (variant, threshold) in enumerate(VARIANTS):
        onnx = random_detector_onnx(os.path.join(root, "models"), NC, IMGSZ, seed=seed)
        os.makedirs(export_dir, exist_ok=True)
        shutil.copyfile(onnx, os.path.join(export_dir, variant + ".onnx"))
        entries.append({"name": variant, "onnx": variant + ".onnx", "sha256": sha256_of(onnx),
                        "threshold": threshold, "imgsz": IMGSZ, "batch": 1, "dynamic": False, "fp32_layers": [],
                        "parity": {}})
    with open(os.path.join(export_dir, "export.json"), "w") as fh:
        json.dump({"variants": entries, "opset": 12, "tensorrt": None, "engines": None}, fh)
    profiles = {p: {"temperatures": TEMPERATURES[p], "thresholds": THRESHOLDS[p], "figures": {}} for p in TEMPERATURES}
    with open(os.path.join(calibration_dir, "calibration.json"), "w") as fh:
        json.dump({"profiles": profiles, "method": "temperature", "split": "val", "images": 6,
                   "fusion_weights": FUSION_WEIGHTS}, fh)
    data = _labelled_set(os.path.join(root, "data"), os.path.join(export_dir, "balanced.onnx"))
    return type("Chain", (), {"root": root, "export": export_dir, "calibration": calibration_dir, "data": data})


FUSION_WEIGHTS = {"recall": 0.5, "balanced": 1.0, "precision": 0.75}  # as `trainer calibrate` fits them


def config(*overrides):
    return load_config(None, ["bundle.energy_frames=2"] + list(overrides))


PASSING = ("bundle.min_map50=0.5", "bundle.min_critical_recall=0.5", "bundle.budget_wh_day=20")
# Every Wh/day is above zero, so this budget fails whatever the random models score.
FAILING = ("bundle.budget_wh_day=0.0001", "bundle.min_map50=0", "bundle.min_critical_recall=0",
           "calibration.profiles=single,ensemble")


def _manifest(bundle_dir):
    with open(os.path.join(bundle_dir, "manifest.json")) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_bundle_passes_the_gate_with_figures_measured_through_the_pipeline(chain, tmp_path):
    cfg = config(*PASSING)
    out = str(tmp_path / "out")
    result = run_bundle(cfg, chain.export, chain.calibration, chain.data, out, meter="estimated", progress=False)
    assert result.verdict["passed"] and result.verdict["failures"] == [] and not result.verdict["forced"]
    bundle = load_bundle(result.bundle_dir)
    assert result.bundle_dir == os.path.join(out, BUNDLE_DIR)
    assert sorted(os.listdir(out)) == sorted([BUNDLE_DIR, REPORT, SUMMARY])  # no staging left behind
    manifest = _manifest(result.bundle_dir)
    assert manifest["gate"] == {"passed": True, "failures": [], "forced": False, "profile": result.default_profile}
    # what the bundle carries: variants, thresholds, classes, calibration per profile, deployment, target
    assert {m.variant: m.operating_thr for m in bundle.models} == dict(VARIANTS)
    assert {m.variant: m.fusion_weight for m in bundle.models} == FUSION_WEIGHTS
    assert [(c.name, c.category) for c in bundle.classes] == [(n, CATEGORIES[i]) for i, n in enumerate(NAMES)]
    for profile in TEMPERATURES:
        settings = bundle.profile_settings(profile)
        assert settings.temperatures.tolist() == TEMPERATURES[profile]
        assert settings.thresholds.tolist() == THRESHOLDS[profile]
    assert bundle.deployment == deployment_profile(cfg.bundle)
    assert manifest["target"] == "jetson-nano" and bundle.default_profile == result.default_profile
    assert [m.decode_thr for m in bundle.models] == [cfg.calibration.decode_thr] * 3
    # accuracy per profile; the COCO evaluator agrees with edge.metrics on the same detections
    assert list(result.accuracy) == cfg.calibration.profiles.split(",")
    # each richer profile against the one before it, with its paired-bootstrap interval, in the report too
    assert [(p, f["map50_vs"]["than"]) for p, f in result.accuracy.items() if "map50_vs" in f] == [
        ("ensemble", "single"), ("ensemble_flip", "ensemble"), ("ensemble_full", "ensemble_flip")]
    for f in result.accuracy.values():
        if "map50_vs" in f:
            low, high = f["map50_vs"]["interval"]
            assert low <= high and f["map50_vs"]["holds"] == (high >= 0)
    assert "ensemble vs single: mAP50" in open(result.report).read()
    for profile, figures in result.accuracy.items():
        assert abs(figures["map50"] - figures["coco_map50"]) <= 0.005
        assert 0.0 <= figures["map50_95"] <= figures["map50"]
        assert figures["critical_recall"] == figures["recall_by_category"]["critical"]
        assert "critical" in figures["recall_by_category"]  # labelled critical boxes: the floor means something
        assert set(figures["recall_by_category"]) <= set(CATEGORIES.values())
    assert manifest["accuracy"]["single"]["map50"] == pytest.approx(result.accuracy["single"]["map50"])
    # energy: measured here with the estimated meter (labelled), the Nano table for the budget
    energy = result.energy
    assert energy["here"]["label"] == "estimated" and energy["device"]["label"] == "estimate"
    assert energy["budget_source"] == "device"
    deployment = deployment_profile(cfg.bundle)
    for profile, entry in energy["device"]["profiles"].items():
        day = daily_energy(deployment, entry["energy_per_frame_j"], entry["latency_s"])
        assert entry["daily"]["inference_wh"] == pytest.approx(day.inference_wh)
    single, full = energy["device"]["profiles"]["single"], energy["device"]["profiles"]["ensemble_full"]
    rate = result.accuracy["cascade"]["escalated_share"]
    assert energy["device"]["profiles"]["cascade"]["energy_per_frame_j"] == pytest.approx(
        single["energy_per_frame_j"] + rate * full["energy_per_frame_j"])
    # default profile: the best mAP50 among the profiles within the budget
    fitting = [p for p, e in energy["device"]["profiles"].items() if e["daily"]["within_budget"]]
    assert result.accuracy[result.default_profile]["map50"] == max(result.accuracy[p]["map50"] for p in fitting)
    checks = result.verdict["checks"]
    assert checks["wh_day"]["value"] == pytest.approx(
        energy["device"]["profiles"][result.default_profile]["daily"]["inference_wh"])
    report = open(result.report).read()
    assert "Verdict: PASSED" in report and "ensemble_full" in report and "estimated" in report
    with open(os.path.join(out, SUMMARY)) as fh:
        assert json.load(fh)["default_profile"] == result.default_profile


@pytest.mark.slow
def test_failing_gate_refuses_and_writes_nothing_then_force_ships_it_marked(chain, tmp_path, capsys):
    from edge.cli import main as edge_main

    out = str(tmp_path / "out")
    with pytest.raises(TrainerError) as refused:
        run_bundle(config(*FAILING), chain.export, chain.calibration, chain.data, out, meter="estimated",
                   progress=False)
    message = str(refused.value)
    assert "Wh/day of profile" in message and "over the budget 0.0001" in message and "--force" in message
    assert not os.path.exists(os.path.join(out, BUNDLE_DIR)) and os.listdir(out) == []
    result = run_bundle(config(*FAILING), chain.export, chain.calibration, chain.data, out, force=True,
                        meter="estimated", progress=False)
    assert not result.verdict["passed"] and result.verdict["forced"]
    gate = _manifest(result.bundle_dir)["gate"]
    assert gate["passed"] is False and gate["forced"] is True
    assert gate["failures"] == result.verdict["failures"] and "over the budget 0.0001" in gate["failures"][0]
    assert "FAILED, shipped with --force" in open(result.report).read()
    assert edge_main(["bundle", "verify", result.bundle_dir]) == 0
    assert "warning:" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_refuses_through_the_gate_and_names_the_figure(chain, tmp_path, capsys):
    from trainer.cli import COMMANDS, main
    from trainer.stages.bundle import add_arguments, run_command

    commands = dict(COMMANDS, bundle=(add_arguments, run_command))
    out = str(tmp_path / "cli")
    argv = ["--set", "bundle.energy_frames=2", "--set", "calibration.profiles=single",
            "--set", "bundle.budget_wh_day=0.0001", "--set", "bundle.min_map50=0", "--set",
            "bundle.min_critical_recall=0", "bundle", "--export", chain.export, "--calibration", chain.calibration,
            "--data", chain.data, "--out", out]
    assert main(argv, commands=commands) == 2
    err = capsys.readouterr().err
    assert "Wh/day of profile single" in err and "over the budget 0.0001" in err
    assert not os.path.exists(os.path.join(out, BUNDLE_DIR))
    assert main(argv + ["--force"], commands=commands) == 0
    assert "gate FAILED (forced) on default profile single" in capsys.readouterr().out


@pytest.mark.parametrize("budget, expected", [
    # (Wh/day, why missing, within budget) per profile
    ({"a": (1.0, None, True), "b": (2.0, None, True), "c": (30.0, None, False)}, "b"),  # best mAP that fits
    ({"a": (1.0, None, True), "b": (25.0, None, False), "c": (30.0, None, False)}, "a"),
    ({"a": (21.0, None, False), "b": (25.0, None, False), "c": (None, "too slow", False)}, "a"),  # least Wh/day
])
def test_default_profile_is_the_best_map50_within_budget(budget, expected):
    accuracy = {"a": {"map50": 0.3}, "b": {"map50": 0.5}, "c": {"map50": 0.9}}
    assert choose_default(["a", "b", "c"], accuracy, budget) == expected
    assert choose_default(["a", "b", "c"], accuracy, budget, wanted="c") == "c"
    with pytest.raises(TrainerError, match="bundle.default_profile='d'"):
        choose_default(["a", "b", "c"], accuracy, budget, wanted="d")


def _bad_export(folder):
    with open(os.path.join(folder, "export.json"), "w") as fh:
        json.dump({"variants": [{"name": "fast", "onnx": "x.onnx"}]}, fh)


def _bad_calibration(folder):
    with open(os.path.join(folder, "calibration.json"), "w") as fh:
        json.dump({"profiles": {"single": {"temperatures": [1.0, 1.0]}}}, fh)


@pytest.mark.parametrize("spoil, which, message", [
    (None, "export", "has no export.json; run `trainer export`"),
    (_bad_export, "export", "name 'fast'"),
    (None, "calibration", "has no calibration.json; run `trainer calibrate`"),
    (_bad_calibration, "calibration", "expected a list of 3 values"),
])
def test_bad_inputs_are_named_before_any_work(chain, tmp_path, spoil, which, message):
    folders = {"export": chain.export, "calibration": chain.calibration}
    folders[which] = str(tmp_path / which)
    os.makedirs(folders[which])
    if spoil:
        spoil(folders[which])
    with pytest.raises(TrainerError, match=message.replace("(", r"\(")):
        run_bundle(config(), folders["export"], folders["calibration"], chain.data, str(tmp_path / "out"))
    assert not os.path.exists(str(tmp_path / "out"))


def test_an_existing_bundle_is_never_overwritten(chain, tmp_path):
    os.makedirs(str(tmp_path / "out" / BUNDLE_DIR))
    with pytest.raises(TrainerError, match="already exists"):
        run_bundle(config(), chain.export, chain.calibration, chain.data, str(tmp_path / "out"))


def test_checksum_mismatch_is_refused(chain, tmp_path):
    export = str(tmp_path / "export")
    shutil.copytree(chain.export, export)
    with open(os.path.join(export, "recall.onnx"), "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(TrainerError, match="does not match its sha256"):
        run_bundle(config(), export, chain.calibration, chain.data, str(tmp_path / "out"))


def _export_keeping(chain, folder, kept):
    """A copy of the chain's export folder whose export.json gives each variant the fp32_layers `kept[variant]`."""
    shutil.copytree(chain.export, folder)
    path = os.path.join(folder, "export.json")
    with open(path) as fh:
        export = json.load(fh)
    for entry in export["variants"]:
        entry["fp32_layers"] = kept.get(entry["name"], [])
    with open(path, "w") as fh:
        json.dump(export, fh)
    return folder


@pytest.mark.slow
def test_fp32_layers_go_from_export_json_through_the_bundle_to_the_device_build(chain, tmp_path, monkeypatch):
    import onnx

    from edge.bundle_engines import build_bundle_engines
    from tests.fakes.gpu import FakeGpu
    from tests.fakes.tensorrt_builder import install_builder

    convs = [n.name for n in onnx.load(os.path.join(chain.export, "precision.onnx")).graph.node if n.op_type == "Conv"]
    kept = {"recall": convs[-1:], "balanced": [], "precision": convs[-2:]}
    export = _export_keeping(chain, str(tmp_path / "export"), kept)
    result = run_bundle(config(*PASSING), export, chain.calibration, chain.data, str(tmp_path / "out"), force=True,
                        meter="estimated", progress=False)
    assert {m["variant"]: m["fp32_layers"] for m in _manifest(result.bundle_dir)["models"]} == kept
    trt = install_builder(FakeGpu(api="8.2").install(monkeypatch))
    built = build_bundle_engines(result.bundle_dir, trt=trt)
    networks = [event[1] for event in trt.Builder.gpu.log if event[0] == "build"]
    constrained = [[layer.name for layer in net.layers if layer.precision == trt.float32] for net in networks]
    assert dict(zip([engine.name for engine in built], constrained)) == kept
    assert {m.variant: list(m.fp32_layers) for m in load_bundle(result.bundle_dir).models} == kept


def test_fp32_layers_that_are_no_list_of_names_are_refused(chain, tmp_path):
    export = _export_keeping(chain, str(tmp_path / "export"), {"balanced": "detect_head"})
    with pytest.raises(TrainerError, match="fp32_layers 'detect_head'; expected a list of layer names"):
        run_bundle(config(), export, chain.calibration, chain.data, str(tmp_path / "out"))
    assert not os.path.exists(str(tmp_path / "out"))
