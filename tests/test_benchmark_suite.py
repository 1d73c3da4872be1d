"""`python -m benchmarks run` on random-head YOLOv8n models and a tiny self-labelled set.

The labels are the balanced model's own confident boxes (tests.test_bundle_stage's set), so the
figures are far from zero and the suite's agreement with its parts means something.
"""
import datetime
import json
import os
import re
import subprocess

import numpy as np
import pytest

from benchmarks import suite, suite_report
from benchmarks.suite_measure import latency_figures, net_energy_j

pytest.importorskip("onnxruntime")

IMGSZ = 64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLOTS = ("precision_recall.png", "reliability.png", "accuracy_vs_wh_day.png", "latency.png")


def _argv(bundle, data, out, *extra):
    return ["--bundle", bundle, "--data", data, "--out", out, "--limit", "6", "--frames", "3", "--meter",
            "estimated", "--idle-seconds", "0.2", "--no-progress"] + list(extra)


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    from edge.bundle_build import build_bundle, read_classes
    from tests.test_bundle_stage import _labelled_set
    from tests.yolo_models import random_detector_onnx

    root = str(tmp_path_factory.mktemp("suite"))
    models = [(v, random_detector_onnx(os.path.join(root, "models"), 3, IMGSZ, seed=s))
              for s, v in enumerate(("recall", "balanced", "precision"))]
    data = _labelled_set(os.path.join(root, "data"), models[1][1])
    bundle = build_bundle(os.path.join(root, "bundle"), models, read_classes(data), tta="flip", imgsz=IMGSZ)
    out = os.path.join(root, "out")
    assert suite.main(_argv(bundle.root, data, out, "--daemon-frames", "2", "--daemon-profile", "single")) == 0
    with open(os.path.join(out, "results.json")) as fh:
        results = json.load(fh)
    return type("Ran", (), {"root": root, "bundle": bundle, "data": data, "out": out, "results": results})


@pytest.mark.slow
def test_outputs_exist_and_nothing_is_left_beside_them(ran):
    assert sorted(os.listdir(ran.out)) == sorted(("report.md", "results.json") + PLOTS)
    assert not [n for n in os.listdir(ran.root) if ".partial-" in n]
    report = open(os.path.join(ran.out, "report.md")).read()
    for profile in ran.results["profiles"]:
        assert "| %s |" % profile in report
    assert ran.results["profiles"] == ["single", "ensemble", "ensemble_flip", "ensemble_full", "cascade"]


@pytest.mark.slow
def test_accuracy_equals_the_trainers_profile_accuracy(ran):
    from edge.pipeline import Pipeline
    from trainer.profile_accuracy import evaluate_profiles
    from trainer.stages.device_eval import load_ground_truth

    items = load_ground_truth(ran.data, "val", 6)
    with Pipeline.open(ran.bundle, backend="onnxruntime") as pipeline:
        parts = evaluate_profiles(pipeline, items, ["single", "ensemble_flip"])
    for profile, r in parts.items():
        mine = ran.results["accuracy"][profile]
        assert r["map50"] > 0.1  # self-labelled: the comparison is not between two zeros
        assert mine["map50"] == pytest.approx(r["map50"], abs=1e-12)
        assert mine["recall_by_category"] == r["recall_by_category"]
        assert mine["critical_recall"] == r["recall_by_category"].get("critical")
        assert mine["critical_precision"] == r["precision_by_category"].get("critical")


@pytest.mark.slow
def test_coco_map50_agrees_with_edge_metrics(ran):
    for profile, a in ran.results["accuracy"].items():
        assert abs(a["coco_map50"] - a["map50"]) <= 0.005, profile
        assert 0.0 <= a["map50_95"] <= a["coco_map50"] + 1e-9
        assert 0.0 <= a["d_ece"] <= 1.0


@pytest.mark.slow
def test_results_carry_provenance(ran):
    p = ran.results["provenance"]
    assert {"machine", "python", "cpus"} <= set(p["machine"])
    assert p["versions"]["numpy"] == np.__version__ and "onnxruntime" in p["versions"]
    assert datetime.datetime.fromisoformat(p["date_utc"]).utcoffset() == datetime.timedelta(0)
    assert p["command"].startswith("python -m benchmarks run --bundle %s" % ran.bundle.root)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert p["git_revision"] == (head or None)


@pytest.mark.slow
def test_the_daemon_and_pipeline_parts_are_in_the_suite(ran):
    d = ran.results["daemon"]
    assert d["profile"] == "single" and d["processed"] == d["frames"] == 2
    assert d["ratio"] == pytest.approx(d["daemon_fps"] / d["raw_fps"]) and d["ok"] == (d["ratio"] >= d["target_ratio"])
    assert "Daemon loop (single, 2 frames" in open(os.path.join(ran.out, "report.md")).read()
    targets = {p: t["other_share_target"] for p, t in ran.results["latency"].items() if p != "cascade"}
    assert targets == {"single": 0.05, "ensemble": 0.08, "ensemble_flip": 0.08, "ensemble_full": 0.08}
    for t in ran.results["latency"].values():
        if t.get("other_share") is not None:
            assert t["other_share"] == pytest.approx(1.0 - t["inference_share"])


@pytest.mark.slow
def test_latency_and_energy_figures_hang_together(ran):
    energy = ran.results["energy"]
    assert energy["meter"] and energy["label"] == "estimated" and energy["idle_power_w"] > 0
    for profile, t in ran.results["latency"].items():
        times = np.asarray(t["latencies_ms"])
        assert t["frames"] == len(times) == 3
        assert t["p50_ms"] <= t["p95_ms"] <= times.max() + 1e-6
        assert t["fps"] == pytest.approx(1000.0 * len(times) / times.sum(), rel=1e-3)
        e = energy["profiles"][profile]
        assert 0 < e["energy_per_frame_j"] and e["net_energy_per_frame_j"] <= e["energy_per_frame_j"]
        assert e["daily"]["within_budget"] == (e["daily"]["budgeted_wh"] <= energy["deployment"]["budget_wh_day"])


def test_out_that_is_not_empty_is_refused_untouched(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert suite.main(["--bundle", "b", "--data", "d.yaml", "--out", str(out)]) == 2
    assert "--out %s exists and is not an empty folder" % out in capsys.readouterr().err
    assert os.listdir(str(out)) == ["keep.txt"]


def test_missing_bundle_is_named(tmp_path, capsys):
    assert suite.main(["--bundle", str(tmp_path / "nope"), "--data", "d.yaml", "--out", str(tmp_path / "o")]) == 2
    assert re.search(r"--bundle \S*nope: bundle \S*nope does not exist", capsys.readouterr().err)
    assert not os.path.exists(str(tmp_path / "o"))


@pytest.mark.slow
def test_missing_data_is_named(ran, tmp_path, capsys):
    bad = str(tmp_path / "missing.yaml")
    assert suite.main(_argv(ran.bundle.root, bad, str(tmp_path / "o"))) == 2
    assert "--data %s: " % bad in capsys.readouterr().err


@pytest.mark.parametrize("argv, expected", [
    (["--weights", "balanced=x.pt"], "--weights is for --compare ultralytics"),
    (["--compare", "ultralytics"], "needs the .pt of at least one variant"),
    (["--profiles", "single,turbo"], "unknown inference profile 'turbo'"),
    (["--frames", "0"], "--frames 0: expected at least 1"),
])
def test_bad_options_are_named(tmp_path, capsys, argv, expected):
    assert suite.main(["--bundle", "b", "--data", "d", "--out", str(tmp_path / "o")] + argv) == 2
    assert expected in capsys.readouterr().err


@pytest.mark.parametrize("gross, mean_w, idle_w, expected", [
    (2.0, 4.0, 1.0, 2.0 * 3.0 / 4.0),
    (1.0, 2.0, 2.0, 0.0),
    (1.0, 2.0, None, None),
])
def test_net_energy_is_the_share_above_idle(gross, mean_w, idle_w, expected):
    assert net_energy_j(gross, mean_w, idle_w) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("seconds", [[0.1, 0.2, 0.3, 0.4], [0.05]])
def test_latency_figures(seconds):
    t = latency_figures(seconds, [s / 2 for s in seconds])
    assert t["p50_ms"] == pytest.approx(1000 * float(np.median(seconds)))
    assert t["fps"] == pytest.approx(len(seconds) / sum(seconds))
    assert t["inference_share"] == pytest.approx(0.5)


def _fake_results(ours, theirs):
    """Suite results with one bundle profile and one ultralytics run: (mAP50, D-ECE, p50 ms) each."""
    def entry(m, e):
        return {"map50": m, "map50_95": m / 2, "critical_recall": None, "d_ece": e}
    latency = {"p50_ms": ours[2], "fps": 1000.0 / ours[2]}
    return {"accuracy": {"single": entry(*ours[:2])}, "latency": {"single": latency}, "single_model": "balanced",
            "comparison": {"ultralytics balanced onnx": dict(entry(*theirs[:2]), latency={
                "p50_ms": theirs[2], "fps": 1000.0 / theirs[2]})}}


@pytest.mark.parametrize("ours, theirs, expected", [
    ((0.6, 0.05, 10.0), (0.5, 0.10, 20.0), {"mAP50": "wins", "D-ECE": "wins", "latency p50 ms": "wins",
                                            "frames/s": "wins"}),
    ((0.4, 0.20, 30.0), (0.5, 0.10, 20.0), {"mAP50": "loses", "D-ECE": "loses", "latency p50 ms": "loses",
                                            "frames/s": "loses"}),
    ((0.5, 0.10, 30.0), (0.5, 0.10, 20.0), {"mAP50": "ties", "D-ECE": "ties", "latency p50 ms": "loses"}),
])
def test_wins_and_losses_follow_the_numbers(ours, theirs, expected):
    results = _fake_results(ours, theirs)
    found = {label[len("best "):]: outcome for label, _, _, outcome, _ in suite_report.verdicts(results)
             if label.startswith("best ")}
    assert {k: found[k] for k in expected} == expected
    assert "critical recall" not in found  # no value on either side: not judged
    text = " ".join(suite_report.wins_losses_text(results))
    for outcome in set(expected.values()):
        assert "ReefWatch %s on" % outcome in text


@pytest.mark.slow
def test_compare_ultralytics_adds_its_rows(ran, tmp_path):
    pytest.importorskip("ultralytics")
    from edge.bundle_build import build_bundle, read_classes
    from tests.yolo_models import yolo_yaml_with_classes
    from trainer.export import export_onnx
    from trainer.yolo import yolo

    model = yolo(yolo_yaml_with_classes(str(tmp_path / "cfg"), 3))
    pt = str(tmp_path / "balanced.pt")
    model.save(pt)
    cwd = os.getcwd()
    os.chdir(str(tmp_path))  # ultralytics writes the export into the working directory
    try:
        onnx = export_onnx(pt, str(tmp_path / "balanced.onnx"), IMGSZ)
    finally:
        os.chdir(cwd)
    bundle = build_bundle(str(tmp_path / "bundle"), [("balanced", onnx)], read_classes(ran.data), tta="none",
                          imgsz=IMGSZ)
    out = str(tmp_path / "out")
    assert suite.main(_argv(bundle.root, ran.data, out, "--profiles", "single", "--compare", "ultralytics",
                            "--weights", "balanced=" + pt)) == 0
    results = json.load(open(os.path.join(out, "results.json")))
    rows = ["ultralytics balanced onnx", "ultralytics balanced pt", "ultralytics balanced pt augment"]
    assert list(results["comparison"]) == rows
    for name in rows:
        c = results["comparison"][name]
        assert c["images"] == results["images"] and c["latency"]["frames"] == results["images"]
        assert c["iou"] == bundle.models[0].iou_thr and c["conf"] == 0.001
        assert c["augment"] == name.endswith("augment")
    report = open(os.path.join(out, "report.md")).read()
    assert all("| %s |" % name in report for name in rows)
    assert "ReefWatch " in report.split("Against ultralytics")[1]


def test_python_m_benchmarks_dispatches_to_each_parts_main(capsys):
    import importlib

    from benchmarks.__main__ import COMMANDS, main

    assert all(callable(importlib.import_module(m).main) for m in COMMANDS.values())
    assert main(["fly"]) == 2 and "unknown command 'fly'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0 and "--compare" in capsys.readouterr().out


@pytest.mark.slow
def test_the_cascade_replayed_from_its_stages_equals_the_cascade_run(ran):
    from edge.pipeline import Pipeline
    from trainer.profile_accuracy import evaluate_profiles
    from trainer.stages.device_eval import load_ground_truth

    items = load_ground_truth(ran.data, "val", 6)
    with Pipeline.open(ran.bundle, backend="onnxruntime") as pipeline:
        alone = evaluate_profiles(pipeline, items, ["cascade"])["cascade"]          # both stages run
        replayed = evaluate_profiles(pipeline, items, ["cascade", "single", "ensemble_full"])
    assert list(replayed) == ["cascade", "single", "ensemble_full"]
    mine = replayed["cascade"]
    assert mine["escalated_share"] == alone["escalated_share"] and 0.0 < alone["escalated_share"]
    assert mine["map50"] == alone["map50"] and mine["recall_by_category"] == alone["recall_by_category"]
    for a, b in zip(mine["predictions"], alone["predictions"]):
        np.testing.assert_array_equal(a.xyxy, b.xyxy)
        np.testing.assert_array_equal(a.score, b.score)
    assert mine["frame_ms"] > 0
