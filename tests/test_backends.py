"""Backends: ONNX Runtime on tiny exported models, TensorRT on fake tensorrt/pycuda, the fake, batching,
and the comparison logic of benchmarks/jetson_validate.py."""
import json
import os
import subprocess
import sys
import warnings
import weakref

import numpy as np
import pytest

from benchmarks import jetson_validate as jv
from edge.backends import FakeBackend, open_backend, run_batched
from edge.backends.tensorrt import TensorRTBackend, split_engine_header
from edge.decode import decode_outputs
from edge.detections import Detections
from edge.errors import BackendError
from tests.fakes.gpu import FakeGpu, engine_output, make_plan, ultralytics_header

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NC = 2
SIZE = 16
ANCHORS = (SIZE // 4) ** 2


# Tiny ONNX models --------------------------------------------------------------

def _tiny_module():
    torch = pytest.importorskip("torch")

    class TinyHead(torch.nn.Module):
        """A (B, 4+nc, A) head with positive box sizes, so decoded boxes are real boxes."""

        def __init__(self):
            super(TinyHead, self).__init__()
            self.conv = torch.nn.Conv2d(3, 4 + NC, 4, stride=4)

        def forward(self, x):
            y = self.conv(x).flatten(2)
            return torch.cat([torch.sigmoid(y[:, :2]) * SIZE, torch.sigmoid(y[:, 2:4]) * 8 + 2,
                              torch.sigmoid(y[:, 4:])], 1)

    torch.manual_seed(0)
    return TinyHead().eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """{'module', 'dynamic', 'fixed2', 'fp16'}: a torch module and its ONNX exports."""
    pytest.importorskip("onnxruntime")
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    import onnx.numpy_helper  # noqa: F401
    folder = tmp_path_factory.mktemp("onnx")
    module = _tiny_module()
    paths = {"module": module}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        for name, batch, dynamic_axes in (("dynamic", 1, {"images": {0: "batch"}, "output0": {0: "batch"}}),
                                          ("fixed2", 2, None)):
            path = str(folder / ("%s.onnx" % name))
            torch.onnx.export(module, torch.zeros(batch, 3, SIZE, SIZE), path, opset_version=12,
                              input_names=["images"], output_names=["output0"], dynamic_axes=dynamic_axes,
                              dynamo=False)
            paths[name] = path
    paths["fp16"] = str(folder / "fp16.onnx")
    onnx.save(_fp16_model(onnx), paths["fp16"])
    return paths


def _fp16_model(onnx):
    """float16 input -> 'doubled' float16 = 2x, 'as_float' float32 = Cast(x)."""
    h = onnx.helper
    two = onnx.numpy_helper.from_array(np.array(2, np.float16), "two")
    graph = h.make_graph(
        [h.make_node("Mul", ["images", "two"], ["doubled"]),
         h.make_node("Cast", ["images"], ["as_float"], to=onnx.TensorProto.FLOAT)],
        "fp16", [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT16, ["batch", 3, 4, 4])],
        [h.make_tensor_value_info("doubled", onnx.TensorProto.FLOAT16, ["batch", 3, 4, 4]),
         h.make_tensor_value_info("as_float", onnx.TensorProto.FLOAT, ["batch", 3, 4, 4])],
        initializer=[two])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 12)])
    model.ir_version = 7
    return model


def _torch_out(module, images):
    import torch
    with torch.no_grad():
        return module(torch.from_numpy(np.asarray(images, np.float32))).numpy()


def _images(n, size=SIZE, seed=0):
    return np.random.RandomState(seed).uniform(0, 1, (n, 3, size, size)).astype(np.float32)


# ONNX Runtime -----------------------------------------------------------------

@pytest.mark.parametrize("variant, shape, fixed_batch, max_batch", [
    ("dynamic", (None, 3, SIZE, SIZE), None, 8),
    ("fixed2", (2, 3, SIZE, SIZE), 2, 2),
])
def test_onnx_describes_its_model(tiny, variant, shape, fixed_batch, max_batch):
    with open_backend(tiny[variant]) as backend:
        assert (backend.name, backend.input_name, backend.output_names) == ("onnxruntime", "images", ("output0",))
        assert backend.input_shape == shape
        assert backend.input_dtype is np.float32
        assert (backend.fixed_batch, backend.max_batch) == (fixed_batch, max_batch)
        assert backend.providers == ("CPUExecutionProvider",)
    assert backend.closed


@pytest.mark.parametrize("variant, n", [("dynamic", 1), ("dynamic", 3), ("fixed2", 2)])
def test_onnx_run_matches_torch(tiny, variant, n):
    images = _images(n)
    with open_backend(tiny[variant], intra_op_threads=1) as backend:
        out = backend.run(images)
    assert list(out) == ["output0"]
    assert out["output0"].dtype == np.float32 and out["output0"].shape == (n, 4 + NC, ANCHORS)
    np.testing.assert_allclose(out["output0"], _torch_out(tiny["module"], images), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spin_wait, expected", [(None, "0"), (True, "1")])
def test_onnx_threads_sleep_between_calls_unless_asked_to_spin(tiny, spin_wait, expected):
    options = {} if spin_wait is None else {"spin_wait": spin_wait}
    with open_backend(tiny["dynamic"], **options) as backend:
        used = backend._session.get_session_options()
        assert used.get_session_config_entry("session.intra_op.allow_spinning") == expected


def test_onnx_fp16_io_is_converted_both_ways(tiny):
    images = _images(3, size=4)
    with open_backend(tiny["fp16"]) as backend:
        assert backend.input_dtype is np.float16
        out = backend.run(images)
    half = images.astype(np.float16).astype(np.float32)
    assert out["doubled"].dtype == np.float32 and out["as_float"].dtype == np.float32
    np.testing.assert_array_equal(out["as_float"], half)
    np.testing.assert_array_equal(out["doubled"], 2 * half)


@pytest.mark.parametrize("variant, shape, expected", [
    ("fixed2", (3, 3, SIZE, SIZE), "(2, 3, 16, 16)"),
    ("fixed2", (2, 3, SIZE, 8), "(2, 3, 16, 16)"),
    ("dynamic", (9, 3, SIZE, SIZE), "(1..8, 3, 16, 16)"),
    ("dynamic", (3, SIZE, SIZE), "(1..8, 3, 16, 16)"),
])
def test_onnx_wrong_input_shape_names_expected_and_got(tiny, variant, shape, expected):
    with open_backend(tiny[variant]) as backend:
        with pytest.raises(BackendError) as info:
            backend.run(np.zeros(shape, np.float32))
    assert expected in str(info.value) and str(shape) in str(info.value)


def test_onnx_rejects_uint8_pixels(tiny):
    with open_backend(tiny["dynamic"]) as backend, pytest.raises(BackendError, match="0..1"):
        backend.run(np.zeros((1, 3, SIZE, SIZE), np.uint8))


@pytest.mark.parametrize("content", [None, b"not a protobuf at all \x00\x01"])
def test_onnx_missing_or_corrupt_file_names_it(tmp_path, content):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "broken.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BackendError, match="broken.onnx"):
        open_backend(path)


def test_onnx_run_after_close_raises(tiny):
    backend = open_backend(tiny["dynamic"])
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        backend.run(_images(1))


def test_run_batched_pads_a_fixed_batch_model(tiny):
    images = _images(5)
    with open_backend(tiny["fixed2"]) as backend:
        out = run_batched(backend, images)
    np.testing.assert_allclose(out["output0"], _torch_out(tiny["module"], images), rtol=1e-5, atol=1e-5)


def test_importing_backends_imports_no_runtime():
    code = ("import sys, edge.backends, benchmarks.jetson_validate; "
            "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'pycuda', 'torch') if m in sys.modules))")
    out = subprocess.check_output([sys.executable, "-c", code], cwd=REPO)
    assert out.decode().strip() == "[]"


# Batching ----------------------------------------------------------------------

def _per_image(batch):
    """An output that depends on each image alone: its pixel sum in a (B, 1, 2) array."""
    total = batch.reshape(batch.shape[0], -1).sum(axis=1, dtype=np.float64)
    return np.stack([total, -total], axis=1)[:, None, :]


@pytest.mark.parametrize("fixed_batch, max_batch, n", [
    (1, None, 3), (4, None, 4), (4, None, 5), (4, None, 9), (None, 4, 3), (None, 4, 4), (None, 4, 10),
    (None, 1, 2),
])
def test_run_batched_chunks_and_pads(fixed_batch, max_batch, n):
    seen = []

    def produce(batch):
        seen.append(batch.copy())
        return _per_image(batch)

    backend = FakeBackend(produce, input_shape=(3, 2, 2), fixed_batch=fixed_batch, max_batch=max_batch)
    images = _images(n, size=2) + 0.5  # no image sums to zero, so padding is recognizable
    out = run_batched(backend, images)
    step = fixed_batch or max_batch
    full, rest = divmod(n, step)
    expected_calls = [step] * full + ([(fixed_batch or rest)] if rest else [])
    assert backend.calls == expected_calls
    np.testing.assert_allclose(out["output0"], _per_image(images), rtol=1e-6)
    padding = np.concatenate(seen)[n:]
    assert padding.shape[0] == sum(expected_calls) - n and not padding.any()


def test_run_batched_rejects_no_images():
    backend = FakeBackend(_per_image, input_shape=(3, 2, 2))
    with pytest.raises(BackendError, match="at least one image"):
        run_batched(backend, np.zeros((0, 3, 2, 2), np.float32))


# The fake backend --------------------------------------------------------------

def test_fake_replays_a_list_then_says_it_ran_out():
    first, second = np.ones((1, 6, 5), np.float32), np.full((1, 6, 5), 2, np.float16)
    backend = FakeBackend([first, {"output0": second}], input_shape=(3, 4, 4))
    x = np.zeros((1, 3, 4, 4), np.float32)
    np.testing.assert_array_equal(backend.run(x)["output0"], first)
    out = backend.run(x)["output0"]
    assert out.dtype == np.float32 and (out == 2).all()
    with pytest.raises(BackendError, match="ran out .* after 2 calls"):
        backend.run(x)


def test_fake_checks_output_batch_and_sleeps(monkeypatch):
    slept = []
    monkeypatch.setattr("edge.backends.fake.time.sleep", slept.append)
    backend = FakeBackend(lambda b: np.zeros((5, 6, 2)), input_shape=(3, 4, 4), fixed_batch=None, latency_s=0.25)
    with pytest.raises(BackendError, match="for a batch of 2"):
        backend.run(np.zeros((2, 3, 4, 4), np.float32))
    assert slept == [0.25]


# open_backend ------------------------------------------------------------------

def test_open_backend_unknown_kind_lists_choices():
    with pytest.raises(BackendError) as info:
        open_backend("m.onnx", kind="openvino")
    for choice in ("auto", "onnxruntime", "tensorrt", "fake"):
        assert repr(choice) in str(info.value)


def test_open_backend_unknown_extension():
    with pytest.raises(BackendError, match=r"'\.pt'"):
        open_backend("m.pt")


def test_open_backend_fake_kind():
    backend = open_backend("replay", kind="fake", outputs=_per_image, input_shape=(3, 2, 2))
    assert isinstance(backend, FakeBackend) and backend.model_path == "replay"


# Missing dependencies ------------------------------------------------------------

@pytest.mark.parametrize("missing, path, hint", [
    (["onnxruntime"], "m.onnx", "pip install reefwatch[onnx]"),
    (["tensorrt"], "m.engine", "TensorRT comes with JetPack 4.6"),
    (["pycuda", "pycuda.driver"], "m.plan", "pip install reefwatch[trt]"),
])
def test_missing_runtime_says_what_to_install(monkeypatch, missing, path, hint):
    FakeGpu().install(monkeypatch)  # so only the module named here is missing
    for module in missing:
        monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    with pytest.raises(BackendError) as info:
        open_backend(path)
    assert hint in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


# TensorRT on fake tensorrt + pycuda -------------------------------------------------

CHW = (3, 4, 4)
TRT_NC, TRT_ANCHORS = 2, 6


@pytest.fixture(params=["8.2", "10"])
def gpu(request, monkeypatch):
    return FakeGpu(api=request.param).install(monkeypatch)


def _engine_file(tmp_path, header=None, **spec):
    path = tmp_path / "model.engine"
    path.write_bytes((ultralytics_header(header) if header is not None else b"")
                     + make_plan(chw=CHW, nc=TRT_NC, anchors=TRT_ANCHORS, **spec))
    return path


def _run_events(gpu):
    """Events of the last run, from its first shape/copy to the synchronize."""
    names = gpu.events()
    start = max(i for i, e in enumerate(names) if e == "push")
    return [e for e in names[start:] if e in ("set_shape", "htod", "execute", "dtoh", "synchronize")]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("batch, profile, sizes", [
    (1, None, [1]), (2, None, [2, 2]), (-1, (1, 2, 4), [1, 3, 4, 2]),
])
def test_tensorrt_runs_engines_by_the_protocol(gpu, tmp_path, dtype, batch, profile, sizes):
    spec = dict(dtype=dtype, batch=batch)
    if profile:
        spec["profile"] = profile
    backend = TensorRTBackend(_engine_file(tmp_path, **spec))
    dynamic = batch == -1
    assert (backend.input_name, backend.output_names) == ("images", ("output0",))
    assert backend.input_shape == ((None if dynamic else batch),) + CHW
    assert backend.input_dtype is np.dtype(dtype).type
    assert backend.fixed_batch == (None if dynamic else batch)
    assert backend.max_batch == (profile[2] if dynamic else batch)
    assert gpu.context_stack == []  # the CUDA context is current only during calls

    results = []
    for i, n in enumerate(sizes):
        images = _images(n, size=4, seed=i)
        out = backend.run(images)["output0"]
        assert out.dtype == np.float32 and out.shape == (n, 4 + TRT_NC, TRT_ANCHORS)
        expected_out = engine_output(images.astype(dtype), TRT_NC, TRT_ANCHORS)
        np.testing.assert_allclose(out, expected_out, rtol=2e-3, atol=0.1)
        results.append((out, expected_out))
        expected = (["set_shape"] if dynamic else []) + ["htod", "execute", "dtoh", "synchronize"]
        assert _run_events(gpu) == expected
        if dynamic:
            assert [e for e in gpu.log if e[0] == "set_shape"][-1] == ("set_shape", (n,) + CHW)
        item = np.dtype(dtype).itemsize
        copies = [e for e in gpu.log if e[0] in ("htod", "dtoh")][-2:]
        assert [c[2] for c in copies] == [n * int(np.prod(CHW)) * item, n * (4 + TRT_NC) * TRT_ANCHORS * item]
        assert gpu.context_stack == []

    for out, expected_out in results:  # earlier results do not share the engine's reused host buffers
        np.testing.assert_allclose(out, expected_out, rtol=2e-3, atol=0.1)
    if gpu.api == "10":
        assert sorted(e[1] for e in gpu.log if e[0] == "set_tensor_address") == ["images", "output0"]
    context = gpu.execution_contexts[0]
    backend.close()
    assert context() is None
    assert ("context_freed", True) in gpu.log  # freed while the CUDA context was current
    assert gpu.freed == set(gpu.memory) and gpu.context_stack == [] and gpu.retained == 0


def test_tensorrt_bindings_are_device_pointers_in_binding_order(monkeypatch, tmp_path):
    gpu = FakeGpu(api="8.2").install(monkeypatch)
    backend = TensorRTBackend(_engine_file(tmp_path))
    seen = []
    context = gpu.execution_contexts[0]()
    original = context.execute_async_v2
    monkeypatch.setattr(context, "execute_async_v2", lambda b, s: seen.append(list(b)) or original(b, s))
    backend.run(_images(1, size=4))
    input_copy = [e for e in gpu.log if e[0] == "htod"][-1]
    output_copy = [e for e in gpu.log if e[0] == "dtoh"][-1]
    assert seen == [[input_copy[1], output_copy[1]]]
    backend.close()


def test_tensorrt_batch_beyond_the_profile_is_refused(gpu, tmp_path):
    with TensorRTBackend(_engine_file(tmp_path, batch=-1, profile=(1, 2, 4))) as backend:
        with pytest.raises(BackendError, match=r"1\.\.4"):
            backend.run(_images(5, size=4))


@pytest.mark.parametrize("header", [None, {"stride": 32, "names": {"0": "fish"}, "imgsz": [4, 4]}])
def test_tensorrt_reads_plain_and_ultralytics_engines(gpu, tmp_path, header):
    with open_backend(_engine_file(tmp_path, header=header)) as backend:
        assert backend.metadata == header
        assert backend.run(_images(1, size=4))["output0"].shape == (1, 4 + TRT_NC, TRT_ANCHORS)


def test_tensorrt_undeserializable_plan_names_the_file(gpu, tmp_path):
    path = tmp_path / "other-version.engine"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(BackendError, match="other-version.engine"):
        open_backend(path)
    assert gpu.context_stack == [] and gpu.retained == 0  # nothing left held after a failed load


def test_tensorrt_missing_file_names_it(gpu, tmp_path):
    with pytest.raises(BackendError, match="absent.engine"):
        open_backend(tmp_path / "absent.engine")


PLAN = b"\x66\x74\x72\x74plan-bytes"


@pytest.mark.parametrize("data, plan, metadata", [
    (PLAN, PLAN, None),
    (ultralytics_header({"batch": 1}) + PLAN, PLAN, {"batch": 1}),
    (ultralytics_header({}) + PLAN, PLAN, {}),
    # a length prefix followed by bytes that are not JSON is plan, not header
    (b"\x04\x00\x00\x00\xff\xfe\x00\x01rest", b"\x04\x00\x00\x00\xff\xfe\x00\x01rest", None),
    # a length overrunning the data is plan too
    (b"\xff\x00\x00\x00{}", b"\xff\x00\x00\x00{}", None),
    # JSON that is not an object is not ultralytics metadata
    (b"\x02\x00\x00\x0042rest", b"\x02\x00\x00\x0042rest", None),
    (b"ab", b"ab", None),
])
def test_split_engine_header(data, plan, metadata):
    assert split_engine_header(data) == (plan, metadata)


# jetson_validate ------------------------------------------------------------------

def _dets(boxes, scores, classes):
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), scores, classes)


BOX = [10, 10, 30, 30]
SHIFT = 2.0
SHIFTED_IOU = (18.0 * 20) / (2 * 400 - 18.0 * 20)  # a 20x20 box moved 2 px against itself


@pytest.mark.parametrize("ref, cand, ious, diffs, missing, extra", [
    (_dets([BOX], [0.9], [0]), _dets([BOX], [0.8], [0]), [1.0], [0.1], 0, 0),
    (_dets([BOX], [0.9], [0]), _dets([[10 + SHIFT, 10, 30 + SHIFT, 30]], [0.9], [0]), [SHIFTED_IOU], [0.0], 0, 0),
    (_dets([BOX], [0.9], [0]), _dets([], [], []), [], [], 1, 0),
    (_dets([], [], []), _dets([BOX], [0.9], [0]), [], [], 0, 1),
    (_dets([BOX], [0.9], [0]), _dets([BOX, BOX], [0.9, 0.5], [0, 0]), [1.0], [0.0], 0, 1),  # duplicated box
    (_dets([BOX], [0.9], [0]), _dets([BOX], [0.9], [1]), [], [], 1, 1),  # class changed
    (_dets([BOX], [0.9], [0]), _dets([[50, 50, 60, 60]], [0.9], [0]), [], [], 1, 1),
    (_dets([], [], []), _dets([], [], []), [], [], 0, 0),
])
def test_match_boxes(ref, cand, ious, diffs, missing, extra):
    got_ious, got_diffs, got_missing, got_extra = jv.match_boxes(ref, cand, iou_thr=0.5)
    np.testing.assert_allclose(got_ious, ious, rtol=1e-5)
    np.testing.assert_allclose(got_diffs, diffs, atol=1e-6)
    assert (got_missing, got_extra) == (missing, extra)


def test_compare_detections_counts_over_images():
    ref = [_dets([BOX], [0.9], [0]), _dets([BOX, [50, 50, 60, 60]], [0.9, 0.8], [0, 1])]
    cand = [_dets([], [], []), _dets([BOX, BOX, [50, 50, 60, 60]], [0.9, 0.9, 0.7], [0, 0, 1])]
    summary = jv.compare_detections(ref, cand)
    assert (summary["reference_boxes"], summary["engine_boxes"], summary["matched"]) == (3, 3, 2)
    assert (summary["missing"], summary["extra"]) == (1, 1)
    assert summary["agreement"] == pytest.approx(2.0 / 3)
    assert summary["max_score_diff"] == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("text, expected", [
    ("# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64, "
     "DATE: Sat Feb 19 17:05:08 UTC 2022\n", "R32.7.1"),
    ("# R32 (release), REVISION: 6.1, GCID: 27863751, BOARD: t210ref, EABI: aarch64, "
     "DATE: Mon Jul 26 19:20:30 UTC 2021", "R32.6.1"),
    ("", None),
    ("garbage", None),
])
def test_parse_tegra_release(text, expected):
    # Line format as documented for L4T's /etc/nv_tegra_release; not recorded on our own device.
    assert jv.parse_tegra_release(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n", ("MAXN", 0)),
    ("NV Power Mode: 5W\n1\n", ("5W", 1)),
    ("NV Power Mode: MAXN", ("MAXN", None)),
    ("nvpmodel: command not found", None),
])
def test_parse_nvpmodel(text, expected):
    assert jv.parse_nvpmodel(text) == expected


@pytest.mark.parametrize("low, high, expected", [("1479000", "1479000", "on"), ("102000", "1479000", "off"),
                                                 (None, None, "unknown")])
def test_jetson_clocks_state(tmp_path, low, high, expected):
    if low is not None:
        folder = tmp_path / "cpu0" / "cpufreq"
        folder.mkdir(parents=True)
        (folder / "scaling_min_freq").write_text(low + "\n")
        (folder / "scaling_max_freq").write_text(high + "\n")
    assert jv.jetson_clocks_state(str(tmp_path)) == expected


def test_compare_backends_agrees_for_twins(tiny):
    images = _images(5)
    with open_backend(tiny["fixed2"]) as engine, open_backend(tiny["dynamic"]) as reference:
        report = jv.compare_backends(engine, reference, images, conf_thr=0.5)
    assert report["num_classes"] == NC
    assert report["raw_max_abs_diff"]["output0"] < 1e-5
    boxes = report["boxes"]
    assert boxes["reference_boxes"] > 0 and boxes["matched"] == boxes["reference_boxes"] == boxes["engine_boxes"]
    assert boxes["agreement"] == 1.0 and boxes["mean_iou"] == pytest.approx(1.0)
    assert jv.agreement_failures(report, 0.95, 0.9, 0.05, max_raw_diff=1e-3) == []


def test_compare_backends_catches_dropped_and_duplicated_boxes(tiny):
    images = _images(4)
    module = tiny["module"]

    def bad_fp16_engine(batch):
        # The known FP16-on-TRT-8.2 failure: image 0 loses every box, the others gain a shifted copy of their best.
        out = _torch_out(module, batch)
        out[0, 4:] = 0.0
        for b in range(1, out.shape[0]):
            scores = out[b, 4:].max(axis=0)
            best, worst = scores.argmax(), scores.argmin()
            out[b, :, worst] = out[b, :, best]
            out[b, 0, worst] += 0.4 * out[b, 2, best]  # IoU 0.43: kept by NMS at 0.7, matched to nothing at 0.5
        return out

    engine = FakeBackend(bad_fp16_engine, input_shape=(3, SIZE, SIZE), fixed_batch=None, max_batch=4)
    with open_backend(tiny["dynamic"]) as reference:
        dropped = len(decode_outputs(reference.run(images[:1]), NC, conf_thr=0.5)[0])
        report = jv.compare_backends(engine, reference, images, conf_thr=0.5)
    boxes = report["boxes"]
    assert dropped > 0
    assert boxes["missing"] == dropped and boxes["extra"] == images.shape[0] - 1
    failures = jv.agreement_failures(report, 0.95, 0.9, 0.05)
    assert len(failures) == 1 and "missing" in failures[0]


def test_jetson_validate_main_on_onnx_twins(tiny, tmp_path):
    cv2 = pytest.importorskip("cv2")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.RandomState(1)
    for i, (h, w) in enumerate([(20, 40), (32, 16), (16, 16)]):
        cv2.imwrite(str(folder / ("%d.png" % i)), rng.randint(0, 255, (h, w, 3)).astype(np.uint8))
    report_path = tmp_path / "report.json"
    code = jv.main(["--engine", tiny["fixed2"], "--onnx", tiny["dynamic"], "--images", str(folder),
                    "--runs", "2", "--warmup", "0", "--conf", "0.5", "--json", str(report_path)])
    report = json.loads(report_path.read_text())
    assert code == 0 and report["failures"] == []
    assert report["inputs"]["count"] == 3 and report["inputs"]["shape"] == [3, SIZE, SIZE]
    assert report["latency"]["engine"]["batch"] == 2 and report["latency"]["onnx"]["batch"] == 1
    assert set(report["environment"]) >= {"tensorrt", "l4t", "jetpack", "nvpmodel", "jetson_clocks"}


def test_jetson_validate_main_exits_2_on_a_broken_engine(tiny, tmp_path, capsys):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"junk")
    assert jv.main(["--engine", str(path), "--onnx", tiny["dynamic"]]) == 2
    assert "broken.onnx" in capsys.readouterr().err


def test_letterbox_keeps_aspect_and_pads():
    pytest.importorskip("cv2")
    image = np.zeros((10, 20, 3), np.uint8)
    image[..., 2] = 255  # red in BGR
    out = jv.letterbox(image, 16, 16)
    assert out.shape == (3, 16, 16) and out.dtype == np.float32
    pad = 114 / 255.0
    np.testing.assert_allclose(out[:, :4], pad)  # 20x10 -> 16x8, centred: 4 rows of padding above and below
    np.testing.assert_allclose(out[:, 12:], pad)
    np.testing.assert_allclose(out[:, 4:12], np.array([1.0, 0.0, 0.0])[:, None, None] * np.ones((3, 8, 16)))
