"""The EfficientNMS_TRT tail (trainer.efficient_nms) up to the plugin boundary, through ONNX Runtime.

ONNX Runtime cannot run a TensorRT plugin and nothing here has TensorRT, so: (a) the tailed graph
with the plugin cut off gives, in ONNX Runtime, exactly the source model's head transposed and sliced
into boxes and scores; (b) the plugin node has the op, attributes, names, types and shapes TensorRT
8.2's plugin expects; (c) a numpy model of the plugin's documented semantics, fed those boxes and
scores and decoded by edge.decode.decode_efficient_nms, gives the same detections as
edge.decode.decode_head on the raw head (the device path and the CPU path agree).
"""
import numpy as np
import pytest

from edge.decode import EFFICIENT_NMS_OUTPUTS, decode_efficient_nms, decode_head
from trainer import efficient_nms as tail
from trainer.errors import TrainerError

NC = 3


def efficient_nms_reference(boxes, scores, score_thr, iou_thr, max_output_boxes, candidates=tail.PLUGIN_CANDIDATES):
    """TensorRT's EfficientNMS_TRT (box_coding 1, no background class, no activation) in plain numpy, per image:
    every (box, class) score >= score_thr, sorted by score (ties in anchor-major order), the best `candidates`
    of them, greedy NMS within each class dropping IoU >= iou_thr, the first max_output_boxes kept; outputs
    zero-padded to max_output_boxes. Written from the plugin's README and kernels, independently of edge."""
    batch = boxes.shape[0]
    num = np.zeros((batch, 1), np.int32)
    out_boxes = np.zeros((batch, max_output_boxes, 4), np.float32)
    out_scores = np.zeros((batch, max_output_boxes), np.float32)
    out_classes = np.zeros((batch, max_output_boxes), np.int32)
    for b in range(batch):
        cx, cy, w, h = boxes[b].T
        corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        flat = scores[b].reshape(-1)
        picked = np.flatnonzero(flat >= score_thr)
        picked = picked[np.argsort(-flat[picked], kind="stable")][:candidates]
        kept = []
        for element in picked:
            anchor, cls = divmod(int(element), scores.shape[2])
            if len(kept) == max_output_boxes:
                break
            if all(k_cls != cls or _iou(corners[anchor], corners[k_anchor]) < iou_thr for k_anchor, k_cls in kept):
                kept.append((anchor, cls))
        for i, (anchor, cls) in enumerate(kept):
            out_boxes[b, i], out_scores[b, i], out_classes[b, i] = corners[anchor], scores[b, anchor, cls], cls
        num[b, 0] = len(kept)
    return num, out_boxes, out_scores, out_classes


def _iou(a, b):
    """The plugin's IoU, in float32 as its kernel computes it (0 without intersection)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    inter = (np.maximum(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), np.float32(0))).prod()
    if inter <= 0:
        return np.float32(0)
    union = (a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter
    return inter / union if union > 0 else np.float32(0)


def _attrs(tailed):
    import onnx

    (plugin,) = [n for n in tailed.graph.node if n.op_type == "EfficientNMS_TRT"]
    return {a.name: onnx.helper.get_attribute_value(a) for a in plugin.attribute}


def _assert_same(device, cpu):
    assert len(device) == len(cpu)
    for d, c in zip(device, cpu):
        assert np.array_equal(d.xyxy, c.xyxy) and np.array_equal(d.score, c.score)
        assert np.array_equal(d.class_id, c.class_id)


def _device(tailed, feed, num_classes, conf_thr):
    """What the device would report: the plugin's semantics at the node's own attributes, then edge's decoder."""
    attrs = _attrs(tailed)
    outputs = efficient_nms_reference(*_plugin_inputs(tailed, feed), np.float32(attrs["score_threshold"]),
                                      np.float32(attrs["iou_threshold"]), attrs["max_output_boxes"])
    return outputs, decode_efficient_nms(*outputs, num_classes=num_classes, conf_thr=conf_thr)


def _identity_head(batch, nc, anchors, opset=12, dynamic=False):
    """A model whose output is its input, shaped like a detect head: heads of our choosing through the tail."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch" if dynamic else batch, 4 + nc, anchors]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"], name="head")], "head",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, dims)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def _run(model, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: feed})


def _plugin_inputs(tailed, feed):
    boxes, scores = _run(tail.plugin_inputs_model(tailed), feed)
    return boxes, scores


def _synthetic_head(rng, batch, nc, anchors, spread_px, top_score):
    """Boxes in clusters (so NMS has work) and per-class scores, several classes of one box above low thresholds."""
    centres = rng.uniform(20, spread_px, (batch, max(anchors // 8, 1), 2))
    which = rng.integers(0, centres.shape[1], (batch, anchors))
    xy = np.take_along_axis(centres, which[..., None], axis=1) + rng.normal(0, 3, (batch, anchors, 2))
    wh = rng.uniform(8, 40, (batch, anchors, 2))
    scores = rng.uniform(0, top_score, (batch, anchors, nc)) ** 2
    head = np.concatenate([xy, wh, scores], axis=2).transpose(0, 2, 1)
    return np.ascontiguousarray(head, dtype=np.float32)


@pytest.fixture(scope="module")
def detectors(tmp_path_factory):
    """{"static": (a batch-2 yolov8n ONNX path, its batch), "dynamic": (a dynamic-batch one, the batch fed)}."""
    from tests.yolo_models import random_detector_onnx

    root = tmp_path_factory.mktemp("efficient_nms")
    return {"static": (random_detector_onnx(str(root / "static"), NC, 64, batch=2), 2),
            "dynamic": (random_detector_onnx(str(root / "dynamic"), NC, 64, seed=1, dynamic=True), 3)}


def _images(batch, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch, 3, 64, 64)).astype(np.float32)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["static", "dynamic"])
def test_graph_up_to_the_plugin_is_the_heads_boxes_and_scores(detectors, kind):
    import onnx

    path, batch = detectors[kind]
    source = onnx.load(path)
    tailed = tail.append_efficient_nms(source, 0.01, 0.5, num_classes=NC)
    images = _images(batch)
    (head,) = _run(source, images)
    boxes, scores = _plugin_inputs(tailed, images)
    rows = head.transpose(0, 2, 1)
    assert np.array_equal(boxes, rows[..., :4]) and np.array_equal(scores, rows[..., 4:])
    assert scores.shape == (batch, head.shape[2], NC) and scores.max() > 0.05   # a head that is not all prior


@pytest.mark.slow
@pytest.mark.parametrize("kind, batch_dim", [("static", 2), ("dynamic", "batch")])
def test_plugin_node_is_what_tensorrt_82_expects(detectors, kind, batch_dim, tmp_path):
    import onnx

    path, _ = detectors[kind]
    source = onnx.load(path)
    out = tail.write_efficient_nms(path, str(tmp_path / "m.nms.onnx"), 0.02, 0.45, max_output_boxes=100,
                                   num_classes=NC)
    tailed = onnx.load(out)
    (plugin,) = [n for n in tailed.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert plugin.domain == ""
    attrs = _attrs(tailed)
    # The plugin keeps score >= and drops IoU >= its thresholds; edge keeps score > float32(thr) and drops
    # IoU > thr: the next float32 up makes them the same test.
    f32 = np.float32
    iou = f32(0.45) if float(f32(0.45)) > 0.45 else np.nextafter(f32(0.45), f32(1))
    assert attrs == {"score_threshold": float(np.nextafter(f32(0.02), f32(1))), "iou_threshold": float(iou),
                     "max_output_boxes": 100, "background_class": -1, "score_activation": 0, "box_coding": 1,
                     "plugin_version": b"1"}
    kinds = {a.name: a.type for a in plugin.attribute}
    assert kinds["score_threshold"] == kinds["iou_threshold"] == onnx.AttributeProto.FLOAT
    assert list(plugin.output) == list(EFFICIENT_NMS_OUTPUTS)
    stripped = tail.plugin_inputs_model(tailed)
    assert list(plugin.input) == [o.name for o in stripped.graph.output]
    types = [(o.name, o.type.tensor_type.elem_type, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim])
             for o in tailed.graph.output]
    int32, float32 = onnx.TensorProto.INT32, onnx.TensorProto.FLOAT
    assert types == [("num_dets", int32, [batch_dim, 1]), ("det_boxes", float32, [batch_dim, 100, 4]),
                     ("det_scores", float32, [batch_dim, 100]), ("det_classes", int32, [batch_dim, 100])]
    inputs = [[d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim] for o in stripped.graph.output]
    anchors = source.graph.output[0].type.tensor_type.shape.dim[2]
    assert inputs == [[batch_dim, anchors.dim_param or anchors.dim_value, 4],
                      [batch_dim, anchors.dim_param or anchors.dim_value, NC]]
    assert tailed.graph.input == source.graph.input
    assert list(tailed.opset_import) == list(source.opset_import) and tailed.opset_import[0].version == 12
    assert tailed.ir_version == source.ir_version
    assert {n.name for n in source.graph.node} < {n.name for n in tailed.graph.node}


@pytest.mark.parametrize("opset", [9, 12, 13])
def test_slice_form_follows_the_opset(opset):
    """Slice took starts/ends/axes as attributes before opset 10 and as inputs from 10 on."""
    head = _synthetic_head(np.random.default_rng(opset), 2, NC, 50, 100, 1.0)
    tailed = tail.append_efficient_nms(_identity_head(2, NC, 50, opset=opset), 0.01, 0.5)
    assert tailed.opset_import[0].version == opset
    boxes, scores = _plugin_inputs(tailed, head)
    assert np.array_equal(boxes, head.transpose(0, 2, 1)[..., :4])
    assert np.array_equal(scores, head.transpose(0, 2, 1)[..., 4:])


# (batch, anchors, spread px, top score, score thr, IoU thr, max_output_boxes): clustered boxes at the
# device's decode threshold; a higher threshold; more candidates than the plugin's 4096 (all scores pass);
# more survivors than max_output_boxes; nothing above the threshold.
CASES = [
    (2, 400, 200, 1.0, 0.01, 0.5, 300),
    (1, 400, 200, 1.0, 0.25, 0.45, 300),
    (1, 2000, 600, 1.0, 0.0, 0.5, 300),
    (1, 1200, 4000, 1.0, 0.01, 0.5, 40),
    (2, 100, 200, 0.05, 0.01, 0.5, 300),
]


@pytest.mark.parametrize("batch, anchors, spread, top, score_thr, iou_thr, k", CASES)
def test_plugin_semantics_decoded_agree_with_the_cpu_decode(batch, anchors, spread, top, score_thr, iou_thr, k):
    head = _synthetic_head(np.random.default_rng(anchors), batch, NC, anchors, spread, top)
    tailed = tail.append_efficient_nms(_identity_head(batch, NC, anchors, dynamic=True), score_thr, iou_thr, k,
                                       num_classes=NC)
    outputs, device = _device(tailed, head, NC, score_thr)
    cpu = decode_head(head, NC, conf_thr=score_thr, iou_thr=iou_thr, max_det=k,
                      max_candidates=tail.PLUGIN_CANDIDATES, multi_label=True)
    assert len(device) == len(cpu) == batch
    _assert_same(device, cpu)
    counts = outputs[0][:, 0]
    assert not outputs[2][0, counts[0]:].any() and not outputs[1][0, counts[0]:].any()   # zero past num_dets
    # Each case does what the table says it does.
    candidates = (head[:, 4:] >= score_thr).sum(axis=(1, 2))
    if top ** 2 < score_thr:                       # scores are uniform(0, top) ** 2
        assert (counts == 0).all()
    elif k < 300:
        assert (counts == k).all()
    else:
        assert (counts > 0).all()
    assert (candidates > tail.PLUGIN_CANDIDATES).any() == (anchors * NC > tail.PLUGIN_CANDIDATES and score_thr == 0)


def test_ties_at_the_thresholds_decode_alike():
    """A score of exactly the threshold is dropped and an IoU of exactly the threshold kept, on both paths."""
    # cx, cy, w, h, then 1 class score: A (0..10, 0..10); B (0..10, 0..5), IoU(A, B) = 50 / 100 = 0.5;
    # C far away, scored exactly at the threshold.
    head = np.array([[[5, 5, 100], [5, 2.5, 100], [10, 10, 10], [10, 5, 10], [0.9, 0.8, 0.25]]], np.float32)
    tailed = tail.append_efficient_nms(_identity_head(1, 1, 3), 0.25, 0.5)
    _, (device,) = _device(tailed, head, 1, 0.25)
    (cpu,) = decode_head(head, 1, conf_thr=0.25, iou_thr=0.5, multi_label=True)
    _assert_same([device], [cpu])
    assert device.score.tolist() == [np.float32(0.9), np.float32(0.8)]


@pytest.mark.slow
def test_plugin_semantics_on_a_real_heads_output_agree_with_the_cpu_decode(detectors):
    import onnx

    path, batch = detectors["static"]
    source = onnx.load(path)
    images = _images(batch, seed=3)
    (head,) = _run(source, images)
    tailed = tail.append_efficient_nms(source, 0.01, 0.5)
    _, device = _device(tailed, images, NC, 0.01)
    cpu = decode_head(head, NC, conf_thr=0.01, iou_thr=0.5, max_det=300, max_candidates=tail.PLUGIN_CANDIDATES,
                      multi_label=True)
    assert sum(len(d.score) for d in device) > 0
    _assert_same(device, cpu)


def _two_outputs():
    from onnx import TensorProto, helper

    dims = [1, 7, 20]
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["a"]),
                               helper.make_node("Identity", ["images"], ["b"])], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, dims) for n in "ab"])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 12)])


def _dynamic_class_axis():
    model = _identity_head(1, NC, 20)
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "dim_1"
    return model


@pytest.mark.parametrize("model, num_classes, message", [
    (_two_outputs, None, "has outputs"),
    (lambda: tail.append_efficient_nms(_identity_head(1, NC, 20), 0.01, 0.5), None, "has outputs"),
    (lambda: _identity_head(1, NC, 20), 5, r"expected float32 \(batch, 4 \+ 5, anchors\)"),
    (lambda: _identity_head(1, 0, 20), None, r"expected float32 \(batch, 4 \+ classes, anchors\)"),
    (_dynamic_class_axis, None, "pass num_classes"),
])
def test_refuses_a_model_that_is_not_a_plain_detect_head(model, num_classes, message):
    with pytest.raises(TrainerError, match=message) as caught:
        tail.append_efficient_nms(model(), 0.01, 0.5, num_classes=num_classes, where="m.onnx")
    assert str(caught.value).startswith("m.onnx")


def test_write_names_the_unreadable_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(TrainerError, match="broken.onnx"):
        tail.write_efficient_nms(str(bad), str(tmp_path / "out.onnx"), 0.01, 0.5)


@pytest.mark.parametrize("score_thr, iou_thr, k", [(-0.1, 0.5, 300), (0.01, 0.0, 300), (0.01, 0.5, 0)])
def test_refuses_thresholds_the_plugin_cannot_take(score_thr, iou_thr, k):
    with pytest.raises(TrainerError):
        tail.plugin_attributes(score_thr, iou_thr, k)


def test_nms_file_sits_beside_the_plain_one():
    assert tail.nms_onnx_path("/x/balanced.onnx") == "/x/balanced.nms.onnx"
