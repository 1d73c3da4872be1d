"""`make demo`'s serving half (benchmarks.demo_serve) on random-head models, and the demo's run-all command line."""
import json
import os

import pytest

from benchmarks import demo, demo_serve

pytest.importorskip("onnxruntime")
pytest.importorskip("ultralytics")

IMGSZ, CLASSES = 64, 3


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from edge.bundle_build import build_bundle, read_classes
    from tests.yolo_models import random_detector_onnx
    from trainer.data.synth import generate_dataset

    root = tmp_path_factory.mktemp("demo")
    # 5 sequences, val_fraction 0.2: exactly one whole sequence (4 frames) lands in val, beside one still.
    data = generate_dataset(str(root / "synth"), 5, classes=CLASSES, seed=0, imgsz=96, background_fraction=0.0,
                            sequences=5, sequence_length=4, val_fraction=0.2)
    models = [(v, random_detector_onnx(str(root / "models"), CLASSES, IMGSZ, seed=s))
              for s, v in enumerate(("recall", "balanced", "precision"))]
    bundle = build_bundle(str(root / "bundle"), models, read_classes(data), tta="flip", imgsz=IMGSZ,
                          operating_thr=0.05)
    frames = 6
    summary = demo_serve.run_demo_serve(bundle.root, data, str(root / "serve"), frames=frames, budget_wh_day=1.0e6,
                                        progress=False)
    return {"data": data, "summary": summary, "frames": frames, "root": root}


@pytest.mark.slow
def test_the_clip_is_the_validation_sequence_in_order_repeated(served):
    sources = demo_serve.clip_sources(served["data"])
    names = [os.path.basename(p) for p in sources]
    assert len(names) == 4 and len({n.split("_")[0] for n in names}) == 1 and names == sorted(names)
    clip = served["summary"]["clip"]
    linked = [os.path.realpath(os.path.join(clip, n)) for n in sorted(os.listdir(clip))]
    assert linked == [os.path.realpath(sources[i % len(sources)]) for i in range(served["frames"])]


@pytest.mark.slow
def test_serve_accounts_for_every_frame(served):
    s = served["summary"]
    c = s["counters"]
    assert c["frames"] == served["frames"]
    assert c["processed"] + c["skipped_budget"] + c["skipped_corrupt"] + c["failed"] == c["frames"]
    assert sum(p["frames"] for p in s["profiles"].values()) == c["processed"]
    assert sum(s["detections_by_class"].values()) == c["detections"]
    assert s["annotated_frames"] == c["processed"] == len(os.listdir(s["annotated"]))
    # a budget nothing reaches: after probing each profile the governor settles on the richest
    assert any("-> ensemble_full" in m for m in s["governor"])
    assert s["energy_label"] == "estimated" and s["budget_why"] == "given"


@pytest.mark.slow
def test_summary_labels_estimated_energy(served):
    text = "\n".join(demo_serve.summary_lines(served["summary"]))
    assert "estimated meter" in text and "(est.)" in text
    assert "annotated frames: %d" % served["summary"]["counters"]["processed"] in text


class _Bundle(object):
    def __init__(self, here):
        self.manifest = {"energy": {"here": {"profiles": here}}}


@pytest.mark.parametrize("flip_wh, full_wh", [(0.2, 1.0), (3.0, 1.0)])
def test_demo_budget_is_half_way_between_flip_and_full_tta(flip_wh, full_wh):
    here = {"ensemble_flip": {"daily": {"inference_wh": flip_wh}}, "ensemble_full": {"daily": {"inference_wh": full_wh}},
            "single": {"daily": {"inference_wh": 0.01}}}
    budget, why = demo_serve.demo_budget(_Bundle(here))
    assert budget == pytest.approx((flip_wh + full_wh) / 2.0)
    assert "half way" in why


def test_demo_budget_without_energy_figures_keeps_the_bundles():
    budget, why = demo_serve.demo_budget(_Bundle({"single": {"daily": {"inference_wh": 0.1}}}))
    assert budget is None and "own budget" in why


@pytest.mark.parametrize("data, overrides, expected", [
    (None, (), ["run-all", "--work", "W", "--preset", "demo"]),
    ("d.yaml", ("ssl.epochs=1",), ["--set", "ssl.epochs=1", "run-all", "--work", "W", "--preset", "demo",
                                   "--data", "d.yaml"]),
])
def test_run_all_argv(data, overrides, expected):
    assert demo.run_all_argv("W", "demo", data, overrides) == expected


@pytest.mark.parametrize("model, imgsz, epochs, expected", [
    (None, None, None, []),
    ("yolov8s.yaml", 320, 15, ["baseline.model=yolov8s.yaml", "general.imgsz=320", "baseline.imgsz=320",
                               "multiscale.min=%d" % (320 - 32), "multiscale.max=%d" % (320 + 32),
                               "baseline.epochs=15"]),
    (None, 32, None, ["general.imgsz=32", "baseline.imgsz=32", "multiscale.min=32", "multiscale.max=64"]),
])
def test_reference_bundle_size_overrides(model, imgsz, epochs, expected):
    from benchmarks.reference_bundle import size_overrides

    assert size_overrides(model, imgsz, epochs) == expected


def test_critical_recall_line_compares_full_tta_with_the_best_variant_alone(tmp_path):
    variants = [{"name": "recall", "threshold": 0.15, "metrics": {"device_critical_recall": 0.59}},
                {"name": "balanced", "threshold": 0.25, "metrics": {"device_critical_recall": 0.54}}]
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({"variants": variants}))
    line, = demo.critical_recall_line({"ensemble_full": {"critical_recall": 0.83}}, str(path))
    assert "ensemble_full 0.830" in line and "0.590 for the best variant alone (recall at its own 0.15): higher" in line
    line, = demo.critical_recall_line({"ensemble_full": {"critical_recall": 0.5}}, str(path))
    assert line.endswith("NOT higher")
    assert demo.critical_recall_line({}, str(path)) == []


def test_single_profile_is_compared_with_ultralytics_validation_of_the_same_variant(tmp_path):
    path = tmp_path / "ensemble.json"
    path.write_text(json.dumps({"variants": [{"name": "balanced", "threshold": 0.25, "metrics": {"mAP50": 0.53}}]}))
    manifest = {"accuracy": {"single": {"map50": 0.5387}}, "models": [{"name": "recall"}, {"name": "balanced"}]}
    line, = demo.single_vs_ultralytics_line(manifest, str(path))
    assert "0.539 (edge pipeline) vs 0.530 (ultralytics val of balanced): difference +0.009" in line
    assert demo.single_vs_ultralytics_line({"accuracy": {}, "models": []}, str(path)) == []
