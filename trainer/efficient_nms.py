"""An EfficientNMS_TRT tail for an exported YOLOv8 detector (`export.efficient_nms`).

The detect head's single output (B, 4+nc, N) (rows cx, cy, w, h in input pixels, then per-class
sigmoid scores) is transposed to (B, N, 4+nc) and sliced into boxes (B, N, 4) and scores (B, N, nc),
which feed TensorRT's EfficientNMS_TRT plugin (TensorRT >= 8.0.1, so JetPack 4.6's 8.2.1):
box_coding 1 (centre-size, what the head emits), background_class -1, score_activation 0 (the
scores are sigmoids already), plugin_version "1". TensorRT 8.2's plugin has no class_agnostic
attribute: its NMS is per class. Its outputs are named as edge.decode.EFFICIENT_NMS_OUTPUTS:
num_dets (B, 1) int32, det_boxes (B, K, 4) float32 corners, det_scores (B, K) float32,
det_classes (B, K) int32, K = max_output_boxes, zero past num_dets. The input, the opset and the
batch axis (static or dynamic) stay as the source model has them; the node sits in the default
ONNX domain, as NVIDIA's own graphsurgeon samples put it, where TensorRT's ONNX parser falls back
to the plugin registry (the Python builder must call trt.init_libnvinfer_plugins first; trtexec
does so itself).

What the plugin does (NVIDIA/TensorRT plugin/efficientNMSPlugin, read, not run): every
(box, class) score >= score_threshold is a candidate (one box may stand for several classes, as
edge.decode's multi_label decoding does), candidates are sorted by score, only the best
PLUGIN_CANDIDATES go on to a greedy per-class NMS that drops a box whose IoU with a kept one is
>= iou_threshold, and the first max_output_boxes survivors are written out. Edge's decode keeps
score > threshold and drops IoU > threshold, so the attributes are the next float32 above edge's
thresholds (plugin_attributes). Two differences remain: edge keeps up to 30000 candidates where
the plugin keeps 4096 (only reached at very low thresholds on big inputs), and the plugin collects
candidates with atomics, so boxes of exactly equal score may reach its NMS in another order. Below a
score threshold of 0.007 it switches to a dense path that also passes below-threshold scores (as
-32768), which edge's decoder drops again.

What was run here: nothing on this machine has TensorRT, so the plugin itself never ran. The
tests (tests/test_efficient_nms.py) check, through ONNX Runtime, the graph up to the plugin
boundary against the source model's head; the plugin node's op, attributes, names, types and
shapes; and a numpy model of the semantics above, decoded by edge.decode.decode_efficient_nms,
against edge.decode.decode_head on the same raw head.
"""
import os

from trainer.errors import TrainerError

PLUGIN_OP = "EfficientNMS_TRT"
MAX_OUTPUT_BOXES = 300
# The plugin's EfficientNMSParameters.numSelectedBoxes: only the best 4096 candidates reach NMS.
PLUGIN_CANDIDATES = 4096
_PREFIX = "/efficient_nms/"


def nms_onnx_path(onnx_path):
    """`<variant>.nms.onnx` beside `<variant>.onnx`."""
    root, _ = os.path.splitext(str(onnx_path))
    return root + ".nms.onnx"


def plugin_attributes(score_threshold, iou_threshold, max_output_boxes=MAX_OUTPUT_BOXES):
    """The EfficientNMS_TRT attributes for a YOLOv8 head (TensorRT 8.2's plugin, version 1) that decode as
    edge.decode.decode_head does at conf_thr=score_threshold, iou_thr=iou_threshold.

    The plugin keeps a score >= its threshold and drops a box at IoU >= its threshold, both in float32;
    edge keeps a float32 score > float32(conf_thr) and drops a box at float32 IoU > iou_thr. So the
    attributes are the next float32 above edge's thresholds: the same boxes pass, ties included (an
    untrained or quantized head gives IoUs of exactly 0.5).
    """
    import numpy as np

    if not 0.0 <= float(score_threshold) <= 1.0 or not 0.0 < float(iou_threshold) <= 1.0:
        raise TrainerError("EfficientNMS_TRT needs a score threshold in [0, 1] and an IoU threshold in (0, 1]; got "
                           "%r and %r (calibration.decode_thr, edge.bundle.DEFAULT_NMS_IOU)"
                           % (score_threshold, iou_threshold))
    if int(max_output_boxes) < 1:
        raise TrainerError("EfficientNMS_TRT needs max_output_boxes >= 1; got %r" % (max_output_boxes,))
    return {"score_threshold": _float32_above(float(np.float32(score_threshold))),
            "iou_threshold": _float32_above(float(iou_threshold)),
            "max_output_boxes": int(max_output_boxes), "background_class": -1, "score_activation": 0,
            "box_coding": 1, "plugin_version": "1"}


def _float32_above(value):
    """The smallest float32 above `value`, as a Python float (an ONNX float attribute holds it exactly)."""
    import numpy as np

    nearest = np.float32(value)
    return float(nearest if float(nearest) > value else np.nextafter(nearest, np.float32(np.inf)))


def head_layout(model, where, num_classes=None):
    """(batch dim, nc, anchors dim) of a model whose one output is a float (B, 4+nc, N) detect head; a dim is
    an int or, where dynamic, its name. A dynamic export leaves the 4+nc axis unnamed-symbolic, so there nc
    is num_classes. TrainerError naming `where` and the fix otherwise."""
    import onnx

    graph = model.graph
    fix = ("export the plain ultralytics detect head (one output (batch, 4 + classes, anchors), no NMS) and "
           "append the tail to that file")
    if len(graph.output) != 1:
        raise TrainerError("%s has outputs %s; an EfficientNMS_TRT tail needs one detect-head output: %s"
                           % (where, [o.name for o in graph.output], fix))
    tensor_type = graph.output[0].type.tensor_type
    dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in tensor_type.shape.dim]
    width = dims[1] if len(dims) == 3 else None
    if isinstance(width, str) and num_classes is not None:
        width = 4 + int(num_classes)
    nc = width - 4 if isinstance(width, int) else None
    if tensor_type.elem_type != onnx.TensorProto.FLOAT or nc is None or nc < 1 or (
            num_classes is not None and nc != int(num_classes)):
        expected = "4 + %d" % num_classes if num_classes is not None else "4 + classes"
        hint = "" if num_classes is not None or not isinstance(width, str) else (
            "; its class axis is dynamic, so pass num_classes")
        raise TrainerError("%s: output %s is %s %s; expected float32 (batch, %s, anchors)%s: %s"
                           % (where, graph.output[0].name, onnx.TensorProto.DataType.Name(tensor_type.elem_type),
                              dims, expected, hint, fix))
    return dims[0], nc, dims[2]


def append_efficient_nms(model, score_threshold, iou_threshold, max_output_boxes=MAX_OUTPUT_BOXES,
                         num_classes=None, where="model"):
    """A copy of the onnx.ModelProto `model` with the head split into boxes and scores feeding EfficientNMS_TRT."""
    import numpy as np
    import onnx
    import onnx_graphsurgeon as gs

    from edge.decode import EFFICIENT_NMS_OUTPUTS as names

    batch, nc, anchors = head_layout(model, where, num_classes)
    attrs = plugin_attributes(score_threshold, iou_threshold, max_output_boxes)
    graph = gs.import_onnx(model)
    (head,) = graph.outputs
    opset = graph.opset
    transposed = gs.Variable(_PREFIX + "head_t", dtype=np.float32, shape=(batch, anchors, 4 + nc))
    graph.nodes.append(gs.Node("Transpose", _PREFIX + "Transpose", {"perm": [0, 2, 1]}, [head], [transposed]))
    boxes = _slice(graph, transposed, 0, 4, "boxes", opset)
    scores = _slice(graph, transposed, 4, 4 + nc, "scores", opset)
    k = attrs["max_output_boxes"]
    outputs = [gs.Variable(names[0], dtype=np.int32, shape=(batch, 1)),
               gs.Variable(names[1], dtype=np.float32, shape=(batch, k, 4)),
               gs.Variable(names[2], dtype=np.float32, shape=(batch, k)),
               gs.Variable(names[3], dtype=np.int32, shape=(batch, k))]
    graph.nodes.append(gs.Node(PLUGIN_OP, _PREFIX + PLUGIN_OP, attrs, [boxes, scores], outputs))
    graph.outputs = outputs
    graph.cleanup().toposort()
    tailed = gs.export_onnx(graph)
    # TensorRT 8.2's parser reads IR versions up to its onnx's: keep the source's, and its metadata.
    tailed.ir_version = model.ir_version
    del tailed.metadata_props[:]
    tailed.metadata_props.extend(model.metadata_props)
    tailed.producer_name, tailed.producer_version = model.producer_name, model.producer_version
    onnx.checker.check_model(plugin_inputs_model(tailed))
    return tailed


def _slice(graph, tensor, start, end, name, opset):
    """tensor[:, :, start:end]: Slice with input starts/ends/axes from opset 10, attributes before it."""
    import numpy as np
    import onnx_graphsurgeon as gs

    batch, anchors, _ = tensor.shape
    out = gs.Variable(_PREFIX + name, dtype=np.float32, shape=(batch, anchors, end - start))
    if opset >= 10:
        consts = [gs.Constant(_PREFIX + "%s_%s" % (name, key), np.array([value], dtype=np.int64))
                  for key, value in (("starts", start), ("ends", end), ("axes", 2))]
        graph.nodes.append(gs.Node("Slice", _PREFIX + "Slice_" + name, {}, [tensor] + consts, [out]))
    else:
        graph.nodes.append(gs.Node("Slice", _PREFIX + "Slice_" + name, {"starts": [start], "ends": [end], "axes": [2]},
                                   [tensor], [out]))
    return out


def plugin_inputs_model(model):
    """A copy of a tailed model without the plugin, its boxes and scores as the outputs: the part ONNX Runtime
    (and onnx.checker, which knows no TensorRT plugin) can run. TrainerError if there is no plugin node."""
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(model)
    plugins = [node for node in graph.nodes if node.op == PLUGIN_OP]
    if len(plugins) != 1:
        raise TrainerError("model has %d %s nodes; expected the one that append_efficient_nms adds"
                           % (len(plugins), PLUGIN_OP))
    (plugin,) = plugins
    graph.outputs = list(plugin.inputs)
    plugin.inputs.clear()
    plugin.outputs.clear()
    graph.cleanup().toposort()
    stripped = gs.export_onnx(graph)
    stripped.ir_version = model.ir_version
    return stripped


def write_efficient_nms(onnx_path, out_path, score_threshold, iou_threshold, max_output_boxes=MAX_OUTPUT_BOXES,
                        num_classes=None):
    """Write `onnx_path` with an EfficientNMS_TRT tail to `out_path`; returns out_path."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(onnx_path))
    except (OSError, DecodeError) as e:
        raise TrainerError("cannot read ONNX file %s: %s" % (onnx_path, e)) from e
    tailed = append_efficient_nms(model, score_threshold, iou_threshold, max_output_boxes, num_classes,
                                  where=str(onnx_path))
    onnx.save(tailed, str(out_path))
    return str(out_path)
