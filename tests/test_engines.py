"""Engines: the TensorRT API build through the fake builder (tests/fakes/tensorrt_builder.py on FakeGpu),
trtexec commands and build_engines.sh (its syntax, and the Python 3.6 builder embedded in it)."""
import os
import subprocess
import sys

import pytest

from tests.fakes.gpu import FakeGpu, ProtocolError
from tests.fakes.tensorrt_builder import install_builder
from tests.test_fp16 import CHAIN, _graph
from trainer import engines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEPT = ["/model.2/Conv_3", "/model.2/Relu_4"]


@pytest.fixture(params=["8.2", "10"])
def trt(request, monkeypatch):
    gpu = FakeGpu(api=request.param).install(monkeypatch)
    install_builder(gpu)
    return gpu.tensorrt


def _onnx(tmp_path, dynamic=False):
    import onnx

    model = _graph(CHAIN)
    if dynamic:
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return path


def _last_build(trt):
    return trt.Builder.gpu.log[-1][1:]


@pytest.mark.parametrize("kept", [[], KEPT])
def test_api_build_sets_fp16_workspace_and_constraints_on_the_kept_layers(trt, tmp_path, kept):
    summary = engines.build_engine(trt, _onnx(tmp_path), str(tmp_path / "m.engine"), 1024, kept)
    network, config = _last_build(trt)
    assert trt.BuilderFlag.FP16 in config.flags
    assert config.workspace_bytes == 1024 << 20
    constrained = [layer.name for layer in network.layers if layer.precision == trt.float32]
    assert constrained == kept
    assert all(layer.output_types == {0: trt.float32} for layer in network.layers if layer.name in kept)
    obey = trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS in config.flags
    assert obey == bool(kept)
    assert summary["constrained_layers"] == len(kept) and summary["tensorrt"] == trt.__version__
    assert open(str(tmp_path / "m.engine"), "rb").read().startswith(b"FAKEPLAN")


def test_api_build_of_a_dynamic_batch_adds_a_profile(trt, tmp_path):
    engines.build_engine(trt, _onnx(tmp_path, dynamic=True), str(tmp_path / "m.engine"), 512, shape=(2, 4, 4),
                         max_batch=8)
    _, config = _last_build(trt)
    (profile,) = config.profiles
    assert profile.shapes["images"] == ((1, 2, 4, 4), (8, 2, 4, 4), (8, 2, 4, 4))


def test_the_fake_refuses_constraints_the_builder_would_ignore(trt, tmp_path):
    """The fake must catch a precision set without the flag, or the test above could not fail."""
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    trt.OnnxParser(network, None).parse(open(_onnx(tmp_path), "rb").read())
    network.get_layer(0).precision = trt.float32
    network.get_layer(0).set_output_type(0, trt.float32)
    with pytest.raises(ProtocolError, match="hints"):
        builder.build_serialized_network(network, builder.create_builder_config())


def test_build_engines_records_each_model(trt, tmp_path):
    model = {"name": "recall", "onnx": _onnx(tmp_path), "fp32_layers": KEPT, "dynamic": False, "shape": (2, 4, 4)}
    (record,) = engines.build_engines([model], str(tmp_path), 1024, trt=trt)
    assert record["name"] == "recall" and record["engine"] == "recall.engine"
    assert record["tensorrt"] == trt.__version__ and record["constrained_layers"] == 2
    assert os.path.isfile(str(tmp_path / "recall.engine"))


def test_without_tensorrt_no_engines_are_built(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # import tensorrt raises ImportError
    assert engines.tensorrt_module() is None
    assert engines.build_engines([{"name": "x"}], str(tmp_path), 1024) is None


def _model(name, dynamic=False, kept=()):
    return {"name": name, "onnx": name + ".onnx", "fp32_layers": list(kept), "dynamic": dynamic,
            "shape": (3, 320, 320), "input": "images", "input_shape": ["batch" if dynamic else 7, 3, 320, 320],
            "outputs": ["output0"]}


@pytest.mark.parametrize("dynamic, expected", [
    (False, "trtexec --onnx=recall.onnx --saveEngine=recall.engine --fp16 --workspace=1024"),
    (True, "trtexec --onnx=recall.onnx --saveEngine=recall.engine --fp16 --workspace=1024 "
           "--minShapes=images:1x3x320x320 --optShapes=images:8x3x320x320 --maxShapes=images:8x3x320x320"),
])
def test_trtexec_command_in_tensorrt_82_syntax(dynamic, expected):
    assert engines.trtexec_command(_model("recall", dynamic), 1024) == expected


def test_newer_trtexec_gets_mempoolsize_and_layer_precisions():
    args = engines.trtexec_args(_model("recall"), 1024, layers_option="a:fp32,b:fp32", new_syntax=True)
    assert "--memPoolSize=workspace:1024" in args and not any(a.startswith("--workspace") for a in args)
    assert {"--precisionConstraints=obey", "--layerPrecisions=a:fp32,b:fp32",
            "--layerOutputTypes=a:fp32,b:fp32"} <= set(args)


def test_build_script_names_io_checks_trtexec_and_builds_fp32_layers_on_82(tmp_path):
    models = [_model("recall"), _model("precision", dynamic=True, kept=KEPT)]
    path = engines.write_script(models, str(tmp_path), 1024)
    text = open(path).read()
    assert text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    assert os.access(path, os.X_OK)
    assert 'if [ ! -x "$TRTEXEC" ]' in text and "exit 1" in text
    assert "# recall: input images 7x3x320x320, outputs output0" in text
    assert "# precision: input images batchx3x320x320, outputs output0" in text
    assert '"$TRTEXEC" --onnx=recall.onnx --saveEngine=recall.engine --fp16 --workspace=1024\n' in text
    assert "build_with_python precision.onnx precision.engine 1024 precision.fp32_layers.txt 3 320 320" in text
    assert open(str(tmp_path / "precision.fp32_layers.txt")).read().split() == KEPT
    assert not os.path.exists(str(tmp_path / "recall.fp32_layers.txt"))
    subprocess.run(["bash", "-n", path], check=True)


def test_build_script_refuses_without_trtexec(tmp_path):
    path = engines.write_script([_model("recall")], str(tmp_path), 1024)
    env = dict(os.environ, PATH="/nonexistent", TRTEXEC="/nonexistent/trtexec")
    done = subprocess.run(["/bin/bash", path], env=env, capture_output=True, text=True)
    assert done.returncode == 1 and "trtexec not found" in done.stderr


def test_script_without_fp32_layers_has_no_python_builder(tmp_path):
    assert "build_with_python" not in engines.build_script([_model("recall")], 1024)


def test_the_script_embeds_edges_one_builder():
    """trainer builds with edge's builder (edge.engine_build) and the script carries that module's source."""
    import inspect

    from edge import engine_build

    assert engines.build_engine is engine_build.build_engine
    assert inspect.getsource(engine_build) in engines.build_script([_model("precision", kept=KEPT)], 1024)


@pytest.mark.skipif(not os.path.exists(os.path.join(ROOT, ".venv36", "bin", "python")),
                    reason="no Python 3.6 environment (.venv36)")
def test_embedded_builder_is_python36_code(tmp_path):
    """The script's builder runs on the Nano's system Python 3.6."""
    text = engines.build_script([_model("precision", kept=KEPT)], 1024)
    source = text.split("<<'PYTHON'\n", 1)[1].split("\nPYTHON\n", 1)[0]
    builder = tmp_path / "builder.py"
    builder.write_text(source)
    subprocess.run([os.path.join(ROOT, ".venv36", "bin", "python"), "-m", "py_compile", str(builder)], check=True)


def _nms_onnx(tmp_path, dynamic=False):
    """A detect-head-shaped model (1 class, 6 anchors) with the EfficientNMS_TRT tail, as `trainer export` writes."""
    import onnx

    from tests.test_efficient_nms import _identity_head
    from trainer.efficient_nms import append_efficient_nms

    path = str(tmp_path / "m.nms.onnx")
    onnx.save(append_efficient_nms(_identity_head(1, 1, 6, dynamic=dynamic), 0.01, 0.5, num_classes=1), path)
    return path


def test_api_build_of_an_efficient_nms_model_registers_the_plugins_first(trt, tmp_path):
    engines.build_engine(trt, _nms_onnx(tmp_path), str(tmp_path / "m.engine"), 1024)
    network, _ = _last_build(trt)
    (plugin,) = [layer for layer in network.layers if layer.name == "/efficient_nms/EfficientNMS_TRT"]
    assert [plugin.get_output(i).dtype for i in range(plugin.num_outputs)] == [trt.int32, trt.float32, trt.float32,
                                                                               trt.int32]


def test_the_fake_parser_refuses_a_plugin_before_registration(trt, tmp_path):
    """Without init_libnvinfer_plugins the real parser has no importer for EfficientNMS_TRT; so must the fake."""
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, None)
    assert parser.parse(open(_nms_onnx(tmp_path), "rb").read()) is False
    assert "No importer registered for op: EfficientNMS_TRT" in parser.get_error(0)


def test_build_engines_builds_from_the_nms_file_where_there_is_one(trt, tmp_path):
    plain = {"name": "recall", "onnx": _onnx(tmp_path), "fp32_layers": [], "dynamic": False, "shape": (2, 4, 4)}
    tailed = dict(plain, name="balanced", nms_onnx=_nms_onnx(tmp_path, dynamic=True), dynamic=True, shape=(5, 6))
    records = engines.build_engines([plain, tailed], str(tmp_path), 1024, trt=trt)
    assert [r["onnx"] for r in records] == ["m.onnx", "m.nms.onnx"]
    layers = [[layer.name for layer in network.layers] for _, network, _ in trt.Builder.gpu.log[-2:]]
    assert "/efficient_nms/EfficientNMS_TRT" not in layers[0] and "/efficient_nms/EfficientNMS_TRT" in layers[1]


def test_trtexec_and_script_take_the_nms_file_where_there_is_one(tmp_path):
    models = [dict(_model("recall"), nms_onnx="/x/recall.nms.onnx"),
              dict(_model("precision", kept=KEPT), nms_onnx="/x/precision.nms.onnx")]
    assert engines.trtexec_command(models[0], 1024) == (
        "trtexec --onnx=recall.nms.onnx --saveEngine=recall.engine --fp16 --workspace=1024")
    text = engines.build_script(models, 1024)
    assert '"$TRTEXEC" --onnx=recall.nms.onnx --saveEngine=recall.engine' in text
    assert '"$TRTEXEC" --onnx=precision.nms.onnx --saveEngine=precision.engine' in text
    assert "build_with_python precision.nms.onnx precision.engine 1024 precision.fp32_layers.txt" in text
    assert "--onnx=recall.onnx" not in text and "build_with_python precision.onnx" not in text
