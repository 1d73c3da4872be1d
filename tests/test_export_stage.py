"""trainer export on a tiny real yolov8n checkpoint: parity passes and ships, a rerun resumes, a parity
failure retries with the detect head kept FP32 and is then refused; the CLI; the ensemble reader."""
import json
import os

import pytest

from tests.test_baseline import make_yolo_dataset
from trainer.config import load_config
from trainer.errors import ConfigError, TrainerError
from trainer.stages import export as stage

IMGSZ = 64


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    """(ensemble folder with one variant's .pt built from yolov8n.yaml, data.yaml of 3 images)."""
    from tests.yolo_models import yolo_yaml_with_classes
    from trainer.yolo import yolo

    root = tmp_path_factory.mktemp("export")
    data = make_yolo_dataset(str(root / "data"), n_images=3, size=96)
    variant = root / "ensemble" / "balanced"
    variant.mkdir(parents=True)
    yolo(yolo_yaml_with_classes(str(root / "yaml"), 3)).save(str(variant / "best.pt"))
    (variant / "metrics.json").write_text(json.dumps({"imgsz": IMGSZ}))
    (root / "ensemble" / "ensemble.json").write_text(json.dumps(
        {"variants": [{"name": "balanced", "weights": str(variant / "best.pt"), "threshold": 0.001}]}))
    return str(root / "ensemble"), data


def _config(*overrides):
    return load_config(None, list(overrides))


def _read(path):
    with open(path) as fh:
        return json.load(fh)


@pytest.mark.slow
def test_variant_ships_with_passing_parity_and_resumes(ensemble, tmp_path):
    import onnxruntime as ort

    ensemble_dir, data = ensemble
    out = str(tmp_path / "out")
    result = stage.run_export(_config(), ensemble_dir, data, out, progress=False)
    (entry,) = result.variants
    assert (entry["name"], entry["imgsz"], entry["batch"], entry["dynamic"]) == ("balanced", IMGSZ, 1, False)
    assert entry["fp32_layers"] == [] and entry["parity_tries"] == 1
    parity = entry["parity"]
    assert parity["images"] == 3 and parity["matched_boxes"] > 0
    limits = stage.limits_of(_config().export)
    assert parity["max_box_deviation_px"] <= limits["max_box_deviation_px"]
    assert parity["max_score_deviation"] <= limits["max_score_deviation"]
    summary = _read(result.path)
    assert summary["opset"] == 12 and summary["tensorrt"] is None and summary["engines"] is None
    assert summary["variants"] == result.variants
    onnx_path = os.path.join(out, "balanced.onnx")
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, IMGSZ, IMGSZ]
    twin = os.path.join(out, "work", "balanced", "fp16_try1.onnx")
    assert ort.InferenceSession(twin, providers=["CPUExecutionProvider"]).get_inputs()[0].type == "tensor(float)"
    script = open(result.script).read()
    assert "--onnx=balanced.onnx --saveEngine=balanced.engine --fp16 --workspace=1024" in script
    assert _read(os.path.join(out, "parity.json"))["balanced"]["passed"] is True

    modified = os.path.getmtime(onnx_path)
    again = stage.run_export(_config(), ensemble_dir, data, out, progress=False)
    assert os.path.getmtime(onnx_path) == modified and again.variants == result.variants
    # Other settings (a dynamic batch) are a new export.
    dynamic = stage.run_export(_config("export.dynamic=true"), ensemble_dir, data, out, progress=False)
    assert dynamic.variants[0]["dynamic"] is True and dynamic.variants[0]["batch"] is None
    assert "--minShapes=images:1x3x64x64" in open(dynamic.script).read()
    # export.imgsz: a larger input than the variant trained at is a new export, at that size
    larger = stage.run_export(_config("export.imgsz=%d" % (IMGSZ + 32)), ensemble_dir, data, out, progress=False)
    assert larger.variants[0]["imgsz"] == IMGSZ + 32
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, IMGSZ + 32, IMGSZ + 32]


@pytest.mark.slow
def test_ship_fp16_puts_the_passing_twin_in_export_json(ensemble, tmp_path):
    from edge.bundle import sha256_of

    ensemble_dir, data = ensemble
    out = str(tmp_path / "out")
    result = stage.run_export(_config("export.ship_fp16=true"), ensemble_dir, data, out, progress=False)
    (entry,) = result.variants
    shipped = os.path.join(out, "balanced.fp16.onnx")
    assert (entry["onnx"], entry["onnx_fp32"], entry["sha256"]) == ("balanced.fp16.onnx", "balanced.onnx",
                                                                     sha256_of(shipped))
    # the very model the parity check passed, about half the FP32 bytes
    assert sha256_of(shipped) == sha256_of(os.path.join(out, "work", "balanced", "fp16_try1.onnx"))
    assert os.path.getsize(shipped) < 0.6 * os.path.getsize(os.path.join(out, "balanced.onnx"))
    assert "--onnx=balanced.onnx " in open(result.script).read()  # engines still build from FP32 weights
    assert stage.run_export(_config(), ensemble_dir, data, out, progress=False).variants[0]["onnx"] == "balanced.onnx"


@pytest.mark.slow
def test_failing_parity_retries_with_the_head_in_fp32_then_refuses(ensemble, tmp_path):
    ensemble_dir, data = ensemble
    out = str(tmp_path / "out")
    # No FP16 twin matches FP32 to the last bit: a zero limit fails every try.
    config = _config("export.max_score_deviation=0.0", "export.max_tries=2")
    with pytest.raises(TrainerError) as caught:
        stage.run_export(config, ensemble_dir, data, out, progress=False)
    message = str(caught.value)
    assert "variant balanced" in message and "max_score_deviation" in message and "limit 0" in message
    assert "after 2 tries" in message
    record = _read(os.path.join(out, "parity.json"))["balanced"]
    assert record["passed"] is False
    first, second = record["tries"]
    assert first["fp32_layers"] == []
    assert second["fp32_layers"] and all(n.startswith("/model.22/") for n in second["fp32_layers"])
    value = second["figures"]["max_score_deviation"]
    outliers = second["figures"]["outlier_fraction"]
    assert outliers > 0.01  # more boxes than export.max_outlier_fraction (0.01) past the limit: not waived
    assert second["failures"] == [{"figure": "outlier_fraction", "value": outliers, "limit": 0.01},
                                  {"figure": "max_score_deviation", "value": value, "limit": 0.0}]
    assert "%.4g" % value in message
    assert not os.path.exists(os.path.join(out, "export.json"))


@pytest.mark.slow
def test_cli_exports_and_prints_the_parity(ensemble, tmp_path, capsys):
    from trainer.cli import COMMANDS, main

    ensemble_dir, data = ensemble
    commands = dict(COMMANDS, export=(stage.add_arguments, stage.run_command))
    out = str(tmp_path / "out")
    assert main(["export", "--ensemble", ensemble_dir, "--data", data, "--out", out, "--no-resume"],
                commands=commands) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("export")]
    assert lines[0].startswith("export balanced: balanced.onnx (batch 1), FP16 parity: box ")
    assert "build_engines.sh on the device" in lines[-1]


@pytest.mark.slow
def test_efficient_nms_twin_is_written_recorded_and_built_from(ensemble, tmp_path, monkeypatch):
    import onnx

    from edge.bundle import DEFAULT_NMS_IOU, sha256_of
    from edge.decode import EFFICIENT_NMS_OUTPUTS
    from tests.fakes.gpu import FakeGpu
    from tests.fakes.tensorrt_builder import install_builder
    from trainer.efficient_nms import plugin_attributes

    trt = install_builder(FakeGpu(api="8.2").install(monkeypatch))
    ensemble_dir, data = ensemble
    out = str(tmp_path / "out")
    result = stage.run_export(_config("export.efficient_nms=true", "calibration.decode_thr=0.05"), ensemble_dir,
                              data, out, progress=False)
    (entry,) = result.variants
    tail = entry["efficient_nms"]
    twin = os.path.join(out, "balanced.nms.onnx")
    assert entry["onnx"] == "balanced.onnx" and os.path.isfile(os.path.join(out, "balanced.onnx"))
    assert (tail["onnx"], tail["sha256"], tail["outputs"]) == ("balanced.nms.onnx", sha256_of(twin),
                                                               list(EFFICIENT_NMS_OUTPUTS))
    assert (tail["decode_thr"], tail["iou_thr"], tail["max_output_boxes"]) == (0.05, DEFAULT_NMS_IOU, 300)
    (plugin,) = [n for n in onnx.load(twin).graph.node if n.op_type == "EfficientNMS_TRT"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin.attribute}
    assert attrs == dict(plugin_attributes(0.05, DEFAULT_NMS_IOU, 300), plugin_version=b"1")
    assert _read(result.path)["variants"] == result.variants
    (engine,) = result.engines
    assert (engine["onnx"], engine["engine"], engine["tensorrt"]) == ("balanced.nms.onnx", "balanced.engine",
                                                                      trt.__version__)
    network = trt.Builder.gpu.log[-1][1]
    assert "/efficient_nms/EfficientNMS_TRT" in [layer.name for layer in network.layers]
    script = open(result.script).read()
    assert "--onnx=balanced.nms.onnx --saveEngine=balanced.engine" in script and "outputs num_dets, " in script

    # Turned off again (parity resumes): the twin goes and the engine comes from the plain file.
    plain = stage.run_export(_config(), ensemble_dir, data, out, progress=False)
    assert plain.variants[0]["efficient_nms"] is None and not os.path.exists(twin)
    assert plain.engines[0]["onnx"] == "balanced.onnx"
    assert "--onnx=balanced.onnx --saveEngine=balanced.engine" in open(plain.script).read()


def test_cli_refuses_a_folder_without_ensemble_json(tmp_path, capsys):
    from trainer.cli import COMMANDS, main

    data = make_yolo_dataset(str(tmp_path / "data"), n_images=1, size=32)
    commands = dict(COMMANDS, export=(stage.add_arguments, stage.run_command))
    assert main(["export", "--ensemble", str(tmp_path), "--data", data, "--out", str(tmp_path / "o")],
                commands=commands) == 2
    assert "has no ensemble.json" in capsys.readouterr().err


@pytest.mark.parametrize("entry, problem", [
    ({"name": "a", "weights": "gone.pt", "threshold": 0.2}, "existing weights"),
    ({"name": "a", "weights": "w.pt"}, "a threshold"),
])
def test_read_ensemble_refuses_incomplete_variants(tmp_path, entry, problem):
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "ensemble.json").write_text(json.dumps({"variants": [entry]}))
    with pytest.raises(ConfigError, match=problem):
        stage.read_ensemble(str(tmp_path), 320)


def test_read_ensemble_takes_imgsz_from_entry_metrics_or_default(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"imgsz": 96}))
    (tmp_path / "ensemble.json").write_text(json.dumps({"variants": [
        {"name": "a", "weights": "w.pt", "threshold": 0.2, "imgsz": 128},
        {"name": "b", "weights": "w.pt", "threshold": 0.3},
        {"name": "c", "weights": "w.pt", "threshold": 0.4}]}))
    variants = stage.read_ensemble(str(tmp_path), 320)
    assert [(v["name"], v["imgsz"], v["threshold"]) for v in variants] == [("a", 128, 0.2), ("b", 96, 0.3),
                                                                             ("c", 320, 0.4)]
    assert variants[0]["weights"] == str(tmp_path / "w.pt")


def test_export_imgsz_overrides_every_variant_and_must_be_a_stride_multiple(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"x")
    (tmp_path / "ensemble.json").write_text(json.dumps({"variants": [
        {"name": "a", "weights": "w.pt", "threshold": 0.2, "imgsz": 128},
        {"name": "b", "weights": "w.pt", "threshold": 0.3}]}))
    assert [v["imgsz"] for v in stage.read_ensemble(str(tmp_path), 320, 384)] == [384, 384]
    with pytest.raises(ConfigError, match=r"export.imgsz = 400: expected a multiple of 32.*e.g. 384"):
        stage.read_ensemble(str(tmp_path), 320, 400)
