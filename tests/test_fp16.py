"""FP16 twins: graph helpers on small hand-made ONNX graphs, the twin of a real tiny YOLO export loading in
ONNX Runtime with and without the detect head kept FP32, and the parity figures on known detections."""
import numpy as np
import pytest

from edge.detections import Detections
from trainer.errors import TrainerError
from trainer import fp16


def _graph(nodes, shared_bias=False):
    """A chain of Conv/Relu nodes named /model.<i>/..., the last one making the graph's output."""
    import onnx
    from onnx import TensorProto, helper

    inits, made, previous = [], [], "images"
    for i, (module, op) in enumerate(nodes):
        out = "output0" if i == len(nodes) - 1 else "t%d" % i
        inputs = [previous]
        if op == "Conv":
            weight = "w%d" % i
            bias = "b_shared" if shared_bias else "b%d" % i
            inits.append(helper.make_tensor(weight, TensorProto.FLOAT, [2, 2, 1, 1], np.eye(2).ravel().tolist()))
            if not any(t.name == bias for t in inits):
                inits.append(helper.make_tensor(bias, TensorProto.FLOAT, [2], [0.5, -0.25]))
            inputs += [weight, bias]
        made.append(helper.make_node(op, inputs, [out], name="/model.%d/%s_%d" % (module, op, i)))
        previous = out
    graph = helper.make_graph(made, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 2, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)], ir_version=8)


CHAIN = [(0, "Conv"), (0, "Relu"), (1, "Conv"), (2, "Conv"), (2, "Relu")]


def test_head_is_the_module_making_the_output():
    assert fp16.head_module_index(_graph(CHAIN)) == 2


def test_head_needs_module_named_nodes():
    import onnx

    model = _graph(CHAIN)
    model.graph.node[-1].name = "final"
    with pytest.raises(TrainerError, match="export.fp32_layers"):
        fp16.head_module_index(model)


@pytest.mark.parametrize("spec, widen, expected", [
    ("detect_head", 0, ["/model.2/Conv_3", "/model.2/Relu_4"]),
    ("detect_head", 1, ["/model.1/Conv_2", "/model.2/Conv_3", "/model.2/Relu_4"]),
    ("detect_head", 5, [name for name in ("/model.0/Conv_0", "/model.0/Relu_1", "/model.1/Conv_2",
                                          "/model.2/Conv_3", "/model.2/Relu_4")]),
    ("none", 0, []),
    ("", 0, []),
    ("/model.0/Relu_1, /model.1/Conv_2", 0, ["/model.0/Relu_1", "/model.1/Conv_2"]),
])
def test_fp32_layer_names(spec, widen, expected):
    assert fp16.fp32_layer_names(_graph(CHAIN), spec, widen) == expected


def test_unknown_fp32_layer_names_are_refused():
    with pytest.raises(TrainerError, match="/model.9/Gone"):
        fp16.fp32_layer_names(_graph(CHAIN), "/model.0/Relu_1,/model.9/Gone")


def _run(model, x):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": x})[0]


@pytest.mark.parametrize("keep", [[], ["/model.2/Conv_3", "/model.2/Relu_4"]])
def test_twin_of_a_graph_sharing_an_initializer_loads_and_keeps_float_io(keep):
    """One bias read by FP16 and kept-FP32 convolutions alike: each side gets a tensor of its own type."""
    import onnx

    model = _graph(CHAIN, shared_bias=True)
    twin = fp16.fp16_twin(model, keep)
    x = np.random.default_rng(0).random((1, 2, 4, 4), dtype=np.float32)
    y, y16 = _run(model, x), _run(twin, x)
    assert y16.dtype == np.float32
    # Identity weights and small values: FP16 rounding keeps each value within FP16's relative step.
    np.testing.assert_allclose(y16, y, rtol=2e-3, atol=2e-3)
    halves = {i.name for i in twin.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    floats = {i.name for i in twin.graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    assert "w0" in halves
    assert ("w3" in floats) == bool(keep)


def test_identities_are_bypassed():
    import onnx
    from onnx import helper

    model = _graph(CHAIN)
    node = model.graph.node[2]
    model.graph.node.insert(2, helper.make_node("Identity", [node.input[1]], ["w_alias"], name="Identity_7"))
    model.graph.node[3].input[1] = "w_alias"
    bypassed = fp16.without_identities(model)
    assert [n.op_type for n in bypassed.graph.node].count("Identity") == 0
    assert list(bypassed.graph.node[2].input) == ["t1", "w2", "b2"]


@pytest.mark.slow
@pytest.mark.parametrize("dynamic", [False, True])
def test_twin_of_a_tiny_yolo_export_runs_in_onnxruntime(tmp_path, dynamic):
    """Dynamic exports carry Cast nodes and Identity aliases that a plain conversion leaves untypable."""
    import onnx

    from tests.yolo_models import random_detector_onnx

    path = random_detector_onnx(str(tmp_path), 3, 64, dynamic=dynamic)
    model = onnx.load(path)
    head = fp16.fp32_layer_names(model, "detect_head")
    assert head and all(name.startswith("/model.22/") for name in head)  # yolov8n's Detect is module 22
    x = np.random.default_rng(1).random((1, 3, 64, 64), dtype=np.float32)
    reference = _run(model, x)
    for keep in ([], head):
        out = _run(fp16.fp16_twin(model, keep), x)
        assert out.shape == reference.shape and out.dtype == np.float32
        assert np.all(np.isfinite(out))
        # Scores (sigmoid outputs, rows 4..) move by FP16 rounding only, not by a broken graph.
        assert np.max(np.abs(out[:, 4:] - reference[:, 4:])) < 0.1


def _dets(boxes, scores, classes):
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32),
                      np.asarray(classes, np.int32))


def test_match_twin_pairs_same_class_boxes_above_the_threshold():
    reference = _dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60], [0, 0, 10, 10]],
                      [0.9, 0.6, 0.1, 0.5], [0, 1, 0, 2])
    twin = _dets([[20.5, 19, 40, 41.5], [0.25, 0, 10, 10], [0, 0, 10, 10]], [0.58, 0.91, 0.5], [1, 0, 0])
    boxes, scores, unmatched = fp16.match_twin(reference, twin, threshold=0.3)
    # Box 0 (0.9) pairs with twin 2 (IoU 1 beats twin 1's 0.975); box 1 with twin 0; box 3 (class 2) has
    # no twin; box 2 is under 0.3.
    assert boxes == pytest.approx([0.0, 1.5])
    assert scores == pytest.approx([0.4, 0.02], abs=1e-6)
    assert unmatched == 1


@pytest.mark.parametrize("twin_boxes", [np.zeros((0, 4)), [[100, 100, 120, 120]]])
def test_match_twin_counts_lost_boxes(twin_boxes):
    reference = _dets([[0, 0, 10, 10]], [0.9], [0])
    twin = _dets(twin_boxes, [0.9] * len(twin_boxes), [0] * len(twin_boxes))
    assert fp16.match_twin(reference, twin, 0.5) == ([], [], 1)


def test_parity_figures_scale_boxes_to_model_pixels_and_report_failures():
    reference = [_dets([[0, 0, 100, 100]], [0.8], [0]), _dets([[10, 10, 50, 50]], [0.7], [1])]
    twin = [_dets([[4, 0, 100, 100]], [0.79], [0]), _dets([[10, 10, 50, 51]], [0.75], [1])]
    scales = [fp16.letterbox_scale((640, 320, 3), 320), fp16.letterbox_scale((100, 100), 320)]
    assert scales == [0.5, 3.2]
    figures = fp16.parity_figures(reference, twin, scales, 0.5, 0.6, 0.55)
    assert figures["max_box_deviation_px"] == pytest.approx(max(4 * 0.5, 1 * 3.2))
    assert figures["max_score_deviation"] == pytest.approx(0.05, abs=1e-6)
    assert figures["map50_drop"] == pytest.approx(0.05)
    limits = {"max_box_deviation_px": 2.0, "max_score_deviation": 0.1, "max_map50_drop": 0.01}
    failures = fp16.parity_failures(figures, limits)
    assert [(f, lim) for f, _, lim in failures] == [("max_box_deviation_px", 2.0), ("map50_drop", 0.01)]
    assert "map50_drop 0.05 > limit 0.01" in fp16.describe_failures(failures)


def _outlier_figures(box_devs, score_devs, map50_twin=0.6):
    """Parity figures of one-box images whose twin boxes are shifted by box_devs px and score_devs."""
    reference = [_dets([[0, 0, 100, 100]], [0.8], [0]) for _ in box_devs]
    twin = [_dets([[dx, 0, 100, 100]], [0.8 - ds], [0]) for dx, ds in zip(box_devs, score_devs)]
    limits = {"max_box_deviation_px": 2.0, "max_score_deviation": 0.1, "max_map50_drop": 0.01,
              "max_outlier_fraction": 0.1}
    return fp16.parity_figures(reference, twin, [1.0] * len(box_devs), 0.5, 0.6, map50_twin, limits), limits


def test_one_box_in_ten_past_the_limits_is_waived_but_two_fail():
    figures, limits = _outlier_figures([13] + [1] * 9, [0.13] + [0.0] * 9)
    assert (figures["outlier_boxes"], figures["outlier_fraction"]) == (1, pytest.approx(0.1))
    assert figures["max_box_deviation_px"] == pytest.approx(13)
    assert fp16.parity_failures(figures, limits) == []
    figures, limits = _outlier_figures([13, 1, 1, 1, 1] + [1] * 5, [0.0, 0.5] + [0.0] * 8)
    assert figures["outlier_boxes"] == 2
    failures = fp16.parity_failures(figures, limits)
    assert [f for f, _, _ in failures] == ["outlier_fraction", "max_box_deviation_px", "max_score_deviation"]
    assert "outlier_fraction 0.2 > limit 0.1" in fp16.describe_failures(failures)


def test_the_map50_drop_is_checked_whatever_the_outliers():
    figures, limits = _outlier_figures([1] * 10, [0.0] * 10, map50_twin=0.5)
    assert figures["outlier_boxes"] == 0
    assert [f for f, _, _ in fp16.parity_failures(figures, limits)] == ["map50_drop"]


def test_no_outlier_allowance_keeps_every_box_within_the_limits():
    figures, limits = _outlier_figures([13] + [1] * 99, [0.0] * 100)
    assert figures["outlier_fraction"] == pytest.approx(0.01)
    assert fp16.parity_failures(figures, dict(limits, max_outlier_fraction=0.0)) == [
        ("outlier_fraction", pytest.approx(0.01), 0.0), ("max_box_deviation_px", pytest.approx(13), 2.0)]
