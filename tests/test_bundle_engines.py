"""`edge bundle engines`: engines built on the device through the fake TensorRT builder and recorded in the manifest.

Runs on the Jetson's Python 3.6 too. The bundles hold tiny two-class head models written byte by byte
(tests/test_daemon_process.py's writer, with named nodes): two classes and six anchors are what the fake
builder's engines output (tests/fakes/tensorrt_builder.py), so the built engines also run through the
TensorRT backend on the fake GPU. The fake builder's ONNX parser needs the `onnx` package; where it is
missing (the 3.6 environment) a reader of the same files' raw protobuf stands in for it.
"""
import json
import os
import sys

import numpy as np
import pytest

from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.tensorrt import TensorRTBackend
from edge.bundle import MANIFEST, archive_bundle, load_bundle, read_manifest, sha256_of, write_bundle
from edge.bundle_build import build_bundle
from edge.cli import main
from edge.errors import BundleError
from edge.pipeline import Pipeline
from tests.fakes import tensorrt_builder
from tests.fakes.gpu import FakeGpu, make_plan
from tests.test_daemon_process import _bytes, _int, _tensor

CLASSES = [(0, "turtle", "critical"), (1, "wrasse", "general")]
NC, ANCHORS, IMGSZ = 2, 6, 64   # the fake builder's engines: (B, 4 + 2, 6)
NODES = ("/model.22/ReduceMean", "/model.22/Mul", "/model.22/Add")
KEPT = {"recall": ["/model.22/Mul", "/model.22/Add"], "balanced": []}


# ---- a named-node head model in raw protobuf, and a reader of it for an environment without `onnx` ---------

def _dims(shape):  # TensorShapeProto.dim: dim_value (1) or, for a name, dim_param (2)
    return b"".join(_bytes(1, _bytes(2, d) if isinstance(d, str) else _int(1, d)) for d in shape)


def head_onnx(path, seed=0, batch=1):
    """output0 = base + mean(images) * slope for an input (batch, 3, IMGSZ, IMGSZ); nodes named NODES."""
    rng = np.random.RandomState(seed)
    base = np.zeros((1, 4 + NC, ANCHORS), np.float32)
    base[0, :4] = rng.uniform(8, 40, (4, ANCHORS))
    base[0, 4:] = rng.uniform(0, 0.5, (NC, ANCHORS))
    slope = np.full_like(base, 0.1)
    keepdims = _bytes(5, _bytes(1, "keepdims") + _int(3, 0) + _int(20, 2))
    nodes = [(NODES[0], "ReduceMean", ["images"], ["mean"], keepdims),
             (NODES[1], "Mul", ["mean", "slope"], ["scaled"], b""), (NODES[2], "Add", ["base", "scaled"], ["output0"], b"")]
    graph = b"".join(_bytes(1, b"".join(_bytes(1, i) for i in ins) + b"".join(_bytes(2, o) for o in outs)
                            + _bytes(3, name) + _bytes(4, op) + attrs) for name, op, ins, outs, attrs in nodes)
    graph += _bytes(2, "head") + _bytes(5, _tensor("base", base)) + _bytes(5, _tensor("slope", slope))
    for field, name, shape in ((11, "images", (batch, 3, IMGSZ, IMGSZ)), (12, "output0", base.shape)):
        graph += _bytes(field, _bytes(1, name) + _bytes(2, _bytes(1, _int(1, 1) + _bytes(2, _dims(shape)))))
    with open(path, "wb") as f:
        f.write(_int(1, 7) + _bytes(2, "reefwatch-tests") + _bytes(7, graph) + _bytes(8, _bytes(1, "") + _int(2, 13)))
    return path


def _varint(data, i):
    value = shift = 0
    while True:
        byte = data[i]
        value, shift, i = value | (byte & 0x7F) << shift, shift + 7, i + 1
        if byte < 0x80:
            return value, i


def _fields(data):
    """{field number: [values]} of a protobuf message: varints as ints, length-delimited as bytes."""
    fields, i = {}, 0
    while i < len(data):
        key, i = _varint(data, i)
        if key & 7 == 0:
            value, i = _varint(data, i)
        else:
            size, i = _varint(data, i)
            value, i = bytes(data[i:i + size]), i + size
        fields.setdefault(key >> 3, []).append(value)
    return fields


class _RawParser(tensorrt_builder._Parser):
    """The fake parser's network from head_onnx's bytes: a float layer per node, named after it."""

    def parse(self, data):
        graph = _fields(_fields(data)[7][0])
        for node in map(_fields, graph[1]):
            outputs = [tensorrt_builder._Tensor(o.decode(), "FLOAT") for o in node[2]]
            self.network.layers.append(tensorrt_builder._Layer(node[3][0].decode(), outputs))
        graph_input = _fields(graph[11][0])
        shape = _fields(_fields(_fields(graph_input[2][0])[1][0])[2][0])
        dims = tuple(_fields(d).get(1, [-1])[0] for d in shape[1])
        self.network.inputs.append(tensorrt_builder._Tensor(graph_input[1][0].decode(), "FLOAT", dims))
        return True


# ---- fixtures -------------------------------------------------------------------------------------------

@pytest.fixture(params=["8.2", "10"])
def trt(request, monkeypatch):
    gpu = FakeGpu(api=request.param).install(monkeypatch)
    module = tensorrt_builder.install_builder(gpu)
    try:
        import onnx  # noqa: F401  (the fake parser reads models with it)
    except ImportError:
        module.OnnxParser = type("_RawParser", (_RawParser,), {"registry": set()})
    return module


def make_bundle(folder, batch=1, kept=KEPT):
    """A verified two-model bundle whose manifest lists `kept` as each model's fp32_layers."""
    os.makedirs(folder)
    models = [(v, head_onnx(os.path.join(folder, v + ".onnx"), seed=i, batch=batch)) for i, v in enumerate(kept)]
    bundle = build_bundle(os.path.join(folder, "bundle"), models, CLASSES, tta="none")
    manifest = read_manifest(bundle.root)
    for entry in manifest["models"]:
        entry["fp32_layers"] = kept[entry["variant"]]
    write_bundle(bundle.root, manifest)
    return bundle.root


@pytest.fixture
def bundle_dir(tmp_path):
    return make_bundle(str(tmp_path / "b"))


def _builds(trt):
    """(network, config) of every engine build so far, in order."""
    return [event[1:] for event in trt.Builder.gpu.log if event[0] == "build"]


def _engines(argv, capsys):
    code = main(["bundle", "engines"] + argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _snapshot(root):
    """Every file under the bundle folder with its bytes."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


# ---- the build and what it records ----------------------------------------------------------------------

@pytest.mark.parametrize("flags, workspace_mb", [([], 1024), (["--workspace-mb", "512"], 512)])
def test_engines_are_fp16_with_the_kept_layers_fp32_and_recorded(trt, bundle_dir, capsys, flags, workspace_mb):
    code, out, err = _engines([bundle_dir] + flags, capsys)
    assert code == 0, err
    builds = _builds(trt)
    assert len(builds) == len(KEPT)
    manifest = read_manifest(bundle_dir)
    for entry, (network, config) in zip(manifest["models"], builds):
        kept = KEPT[entry["name"]]
        assert trt.BuilderFlag.FP16 in config.flags
        assert config.workspace_bytes == workspace_mb << 20
        assert [layer.name for layer in network.layers if layer.precision == trt.float32] == kept
        assert all(layer.output_types == {0: trt.float32} for layer in network.layers if layer.name in kept)
        obeying = {trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS, getattr(trt.BuilderFlag, "STRICT_TYPES", None)}
        assert bool(obeying & config.flags) == bool(kept)
        assert config.profiles == []     # a fixed batch needs no optimization profile
        engine = "models/%s.engine" % entry["name"]
        assert entry["engine"] == {"file": engine, "sha256": sha256_of(os.path.join(bundle_dir, engine)),
                                   "tensorrt": trt.__version__}
        assert entry["fp32_layers"] == kept
        size_mb = os.path.getsize(os.path.join(bundle_dir, engine)) / 1e6
        assert "  %s: %s, " % (entry["name"], engine) in out
        assert " s, %.1f MB (TensorRT %s, %d layers FP32)" % (size_mb, trt.__version__, len(kept)) in out
    assert len(out.splitlines()) == len(KEPT) + 1
    assert out.splitlines()[-1] == "recorded 2 engine(s) in %s" % os.path.join(bundle_dir, MANIFEST)
    assert sorted(os.listdir(bundle_dir)) == [MANIFEST, "models"]   # no staging folder, no temporary file
    assert sorted(os.listdir(os.path.join(bundle_dir, "models"))) == sorted(
        "%s.%s" % (name, ext) for name in KEPT for ext in ("onnx", "engine"))


def test_verify_accepts_the_result_and_auto_runs_the_engines(trt, bundle_dir, capsys):
    assert _engines([bundle_dir], capsys)[0] == 0
    for backend in ("onnxruntime", "auto", "tensorrt"):
        assert main(["bundle", "verify", bundle_dir, "--backend", backend]) == 0, capsys.readouterr().err
        assert "recall onnx+engine 64x64" in capsys.readouterr().out
    bundle = load_bundle(bundle_dir)
    with Pipeline.open(bundle, backend="auto") as pipeline:
        assert all(isinstance(b, TensorRTBackend) for b in pipeline.backends.values())
        assert [b.model_path for b in pipeline.backends.values()] == [m.engine_path for m in bundle.models]
    with Pipeline.open(bundle, backend="onnxruntime") as pipeline:
        assert all(isinstance(b, OnnxRuntimeBackend) for b in pipeline.backends.values())


def test_a_dynamic_batch_gets_a_profile_up_to_the_full_tta_plan(trt, tmp_path, capsys):
    from edge.engine_build import DYNAMIC_MAX_BATCH

    root = make_bundle(str(tmp_path / "b"), batch="batch")
    assert [m.batch for m in load_bundle(root).models] == [None, None]
    assert _engines([root], capsys)[0] == 0
    for _, config in _builds(trt):
        (profile,) = config.profiles
        chw = (3, IMGSZ, IMGSZ)
        assert profile.shapes["images"] == ((1,) + chw, (DYNAMIC_MAX_BATCH,) + chw, (DYNAMIC_MAX_BATCH,) + chw)


def test_only_models_without_an_engine_are_built_unless_forced(trt, bundle_dir, capsys):
    assert _engines([bundle_dir], capsys)[0] == 0
    code, out, _ = _engines([bundle_dir], capsys)
    assert code == 0 and len(_builds(trt)) == 2
    assert out == "every model of %s has an engine already; --force rebuilds them\n" % os.path.join(bundle_dir,
                                                                                                   MANIFEST)
    manifest = read_manifest(bundle_dir)       # the recall model loses its engine
    del manifest["models"][0]["engine"]
    os.remove(os.path.join(bundle_dir, "models", "recall.engine"))
    write_bundle(bundle_dir, manifest)
    code, out, _ = _engines([bundle_dir], capsys)
    assert code == 0 and len(_builds(trt)) == 3 and "  recall: " in out and "balanced" not in out
    assert _engines([bundle_dir, "--force"], capsys)[0] == 0
    assert len(_builds(trt)) == 5
    load_bundle(bundle_dir)   # checksums hold


# ---- nothing changes on a failure -----------------------------------------------------------------------

def _fail_on_build(monkeypatch, trt, number):
    calls = []
    original = trt.Builder.build_serialized_network

    def build(self, network, config):
        calls.append(1)
        return None if len(calls) == number else original(self, network, config)   # None: TensorRT's failure
    monkeypatch.setattr(trt.Builder, "build_serialized_network", build)


@pytest.mark.parametrize("forced", [False, True])
def test_a_failed_second_build_leaves_the_manifest_and_no_stray_engine(trt, bundle_dir, capsys, monkeypatch, forced):
    if forced:
        assert _engines([bundle_dir], capsys)[0] == 0
    before = _snapshot(bundle_dir)
    _fail_on_build(monkeypatch, trt, 2)
    code, _, err = _engines([bundle_dir] + (["--force"] if forced else []), capsys)
    assert code == 2
    assert "engine of model 'balanced' not built, nothing in the bundle was changed" in err
    assert "could not build an engine from" in err and "balanced.onnx" in err
    assert _snapshot(bundle_dir) == before


def test_a_failed_manifest_write_puts_everything_back(trt, bundle_dir, capsys, monkeypatch):
    import edge.bundle_engines

    before = _snapshot(bundle_dir)

    def write_then_fail(root, manifest):
        write_bundle(root, manifest)
        raise BundleError("disk full (simulated)")
    monkeypatch.setattr(edge.bundle_engines, "write_bundle", write_then_fail)
    code, _, err = _engines([bundle_dir], capsys)
    assert code == 2 and "disk full" in err
    assert _snapshot(bundle_dir) == before


def test_a_layer_the_network_lacks_is_refused(trt, tmp_path, capsys):
    root = make_bundle(str(tmp_path / "b"), kept={"recall": ["/model.9/Gone"], "balanced": []})
    before = _snapshot(root)
    code, _, err = _engines([root], capsys)
    assert code == 2 and "['/model.9/Gone'] are not layers of the network" in err
    assert _snapshot(root) == before


# ---- refusals -------------------------------------------------------------------------------------------

def test_without_tensorrt_it_says_to_run_on_the_jetson(bundle_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)   # import tensorrt raises ImportError
    before = _snapshot(bundle_dir)
    code, _, err = _engines([bundle_dir], capsys)
    assert code == 2
    assert "run this on the Jetson; JetPack provides the tensorrt Python module" in err
    assert _snapshot(bundle_dir) == before


def test_an_archive_is_refused_with_how_to_extract_it(trt, bundle_dir, tmp_path, capsys):
    archive = archive_bundle(bundle_dir, str(tmp_path / "b.tar.gz"))
    code, _, err = _engines([archive], capsys)
    assert code == 2 and "extract it first" in err and "tar -xzf %s" % archive in err


def test_a_bundle_of_engines_is_refused(trt, tmp_path, capsys):
    plan = tmp_path / "balanced.engine"
    plan.write_bytes(make_plan(chw=(3, IMGSZ, IMGSZ), nc=NC, anchors=ANCHORS))
    root = build_bundle(str(tmp_path / "b"), [("balanced", str(plan))], CLASSES, tta="none").root
    code, _, err = _engines([root], capsys)
    assert code == 2 and "models balanced (balanced.engine) are not ONNX" in err and _builds(trt) == []


def test_a_missing_folder_is_named(trt, tmp_path, capsys):
    code, _, err = _engines([str(tmp_path / "absent")], capsys)
    assert code == 2 and "absent does not exist" in err


# ---- the manifest field ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("/model.22/Add", "fp32_layers is '/model.22/Add'; expected a JSON list"),
    ([""], r"fp32_layers\[0\] is ''; expected a non-empty string"),
    ([3], r"fp32_layers\[0\] is 3"),
    (["/a", "/b", "/a"], r"fp32_layers lists \['/a'\] more than once"),
])
def test_bad_fp32_layers_are_refused_naming_the_field(bundle_dir, value, message):
    manifest = read_manifest(bundle_dir)
    manifest["models"][1]["fp32_layers"] = value
    with pytest.raises(BundleError, match=r"models\[1\]\." + message):
        write_bundle(bundle_dir, manifest)


def test_a_bundle_without_fp32_layers_still_loads(bundle_dir):
    manifest = read_manifest(bundle_dir)
    for entry in manifest["models"]:
        del entry["fp32_layers"]
    assert [m.fp32_layers for m in write_bundle(bundle_dir, manifest).models] == [(), ()]
    assert [m.fp32_layers for m in load_bundle(bundle_dir).models] == [()] * 2
    with open(os.path.join(bundle_dir, MANIFEST)) as f:
        assert "fp32_layers" not in f.read()


def test_fp32_layers_and_the_engine_entry_read_back(trt, bundle_dir, capsys):
    assert _engines([bundle_dir], capsys)[0] == 0
    bundle = load_bundle(bundle_dir)
    assert {m.name: list(m.fp32_layers) for m in bundle.models} == KEPT
    assert [os.path.relpath(m.engine_path, bundle_dir) for m in bundle.models] == [
        os.path.join("models", name + ".engine") for name in KEPT]
    manifest = json.loads(json.dumps(bundle.manifest))
    manifest["models"][0]["engine"]["tensorrt"] = 8.2
    with pytest.raises(BundleError, match=r"models\[0\]\.engine\.tensorrt is 8.2; expected a non-empty string"):
        write_bundle(bundle_dir, manifest)
