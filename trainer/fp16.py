"""FP16 twin of an exported detector and its parity with the FP32 model.

The Nano runs FP16 engines, and TensorRT 8.2's FP16 YOLO graphs have known accuracy failures
(../shared/REFERENCE.md), so an ONNX model only ships once an FP16 twin of it has been compared
with it on real images. The twin is onnxconverter-common's float16 conversion with
keep_io_types=True: ONNX Runtime loads it on the CPU (nodes without a CPU FP16 kernel run
between casts, but weights and every tensor between nodes are rounded to FP16, which is where
the precision goes). Nodes that must stay FP32 go into the converter's node block list, the
same names TensorRT gets as layer precision constraints (trainer.engines).

Pure where it can be: the graph helpers take and return onnx ModelProto objects, the parity
figures take Detections.
"""
import logging
import re

import numpy as np

from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

DETECT_HEAD = "detect_head"
# torch's exporter names a module's nodes after its path in the network: /model.22/... for
# the 23rd module of an ultralytics model (the Detect head of yolov8n).
_MODULE_PREFIX = re.compile(r"^/model\.(\d+)/")
PARITY_FIGURES = (("max_box_deviation_px", "max_box_deviation_px"),
                  ("max_score_deviation", "max_score_deviation"),
                  ("map50_drop", "max_map50_drop"))


# Graph helpers -------------------------------------------------------------------------

def head_module_index(model):
    """Index of the module that produces the model's first output (the Detect head), from node names."""
    output = model.graph.output[0].name
    producers = [n for n in model.graph.node if output in n.output]
    match = _MODULE_PREFIX.match(producers[0].name) if producers else None
    if match is None:
        raise TrainerError("cannot find the detect head: output %r is made by %s, not by a /model.N/ node of "
                           "an ultralytics export; name the FP32 layers in export.fp32_layers instead"
                           % (output, producers[0].name if producers else "no node"))
    return int(match.group(1))


def module_nodes(model, index):
    """Names of the nodes of module `index` (/model.<index>/...)."""
    prefix = "/model.%d/" % index
    return [n.name for n in model.graph.node if n.name.startswith(prefix)]


def fp32_layer_names(model, spec, widen=0):
    """Node names to keep in FP32 for `spec`: 'detect_head' (the head, plus `widen` modules before it),
    comma-separated node names (each must exist), or '' / 'none' for none."""
    text = (spec or "").strip()
    if text.lower() in ("", "none"):
        return []
    if text == DETECT_HEAD:
        head = head_module_index(model)
        return [name for i in range(max(head - widen, 0), head + 1) for name in module_nodes(model, i)]
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    known = {n.name for n in model.graph.node}
    missing = [w for w in wanted if w not in known]
    if missing:
        raise TrainerError("export.fp32_layers names %s, which the ONNX graph does not have; use 'detect_head' "
                           "or node names such as %s" % (", ".join(missing), ", ".join(sorted(known)[:3])))
    return wanted


def without_identities(model):
    """A copy with Identity nodes bypassed (torch emits them for shared initializers).

    The converter converts an Identity's initializer to FP16 but not the value its blocked consumer
    expects, and ONNX Runtime then refuses the model on the type mismatch.
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    outputs = {o.name for o in model.graph.output}
    renamed, kept = {}, []
    for node in model.graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            renamed[node.output[0]] = renamed.get(node.input[0], node.input[0])
        else:
            kept.append(node)
    for node in kept:
        for i, name in enumerate(node.input):
            node.input[i] = renamed.get(name, name)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def unshared_initializers(model, blocked):
    """A copy where each initializer used both by `blocked` nodes and by others has an own copy for the blocked.

    torch's exporter stores equal tensors once (zero biases, say); the converter keeps an initializer
    FP32 when any blocked node reads it, and an FP16 node reading the same one is then refused.
    """
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    blocked = set(blocked)
    readers = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.name in blocked)
    initializers = {i.name: i for i in model.graph.initializer}
    shared = [name for name, kinds in readers.items() if name in initializers and kinds == {True, False}]
    for name in shared:
        copy = model.graph.initializer.add()
        copy.CopyFrom(initializers[name])
        copy.name = name + "_fp32"
    shared = set(shared)
    for node in model.graph.node:
        if node.name in blocked:
            for i, name in enumerate(node.input):
                if name in shared:
                    node.input[i] = name + "_fp32"
    return model


def fp16_twin(model, keep_fp32=()):
    """The FP16 conversion of an FP32 ONNX model (ModelProto), float32 in and out, `keep_fp32` nodes in FP32."""
    import warnings

    from onnxconverter_common import float16

    model = without_identities(model)
    # The converter leaves a Cast's `to` at FLOAT while typing its output FP16 (the dynamic-shape anchor
    # arithmetic of ultralytics' head), which ONNX Runtime refuses: keeping those casts FP32 makes the
    # converter insert the cast back to FP16 itself. (op_block_list=['Cast'] would loop forever on the
    # casts it inserts.)
    blocked = sorted({n.name for n in model.graph.node if n.op_type == "Cast"} | set(keep_fp32))
    model = unshared_initializers(model, blocked)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            twin = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked)
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainerError("FP16 conversion failed: %s" % e) from e
    _float_outputs(twin)
    clipped = [w for w in caught if "truncated" in str(w.message)]
    if clipped:  # one line, not one per weight: values outside FP16's range or below its smallest step
        logger.info("FP16 conversion clipped %d values to FP16's range (e.g. %s)", len(clipped), clipped[0].message)
    return twin


def _float_outputs(model):
    """Give FP16 graph outputs a cast back to float32, in place.

    With keep_io_types the converter still types an output FP16 when the node making it is blocked
    (it adds its FP16 cast after the node, then sees no float output left to cast back).
    """
    import onnx
    from onnx import helper

    for output in model.graph.output:
        if output.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16:
            continue
        inner = output.name + "_fp16"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        model.graph.node.append(helper.make_node("Cast", [inner], [output.name], to=onnx.TensorProto.FLOAT,
                                                 name=output.name + "_to_float"))
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


# Parity figures ------------------------------------------------------------------------

def letterbox_scale(frame_shape, imgsz):
    """Model-input pixels per frame pixel for a frame of (h, w, ...) letterboxed to imgsz."""
    h, w = frame_shape[:2]
    return min(float(imgsz) / h, float(imgsz) / w)


def match_twin(reference, twin, threshold, iou_thr=0.5):
    """Pair each reference box scoring >= threshold with the twin's box of the same class it overlaps most
    (IoU >= iou_thr, greedy by reference score, each twin box used once).

    Returns (box deviations: max |coordinate difference| per pair, score deviations per pair, unmatched count).
    """
    from edge.boxes import box_iou

    keep = np.flatnonzero(reference.score >= threshold)
    keep = keep[np.argsort(-reference.score[keep], kind="stable")]
    boxes, scores, unmatched = [], [], 0
    taken = np.zeros(len(twin.score), bool)
    iou = box_iou(reference.xyxy[keep], twin.xyxy) if len(keep) and len(twin.score) else None
    for row, i in enumerate(keep):
        if iou is None:
            unmatched += 1
            continue
        candidates = np.where(taken | (twin.class_id != reference.class_id[i]), -1.0, iou[row])
        best = int(np.argmax(candidates))
        if candidates[best] < iou_thr:
            unmatched += 1
            continue
        taken[best] = True
        boxes.append(float(np.max(np.abs(reference.xyxy[i] - twin.xyxy[best]))))
        scores.append(abs(float(reference.score[i]) - float(twin.score[best])))
    return boxes, scores, unmatched


def parity_figures(reference, twin, scales, threshold, map50_reference, map50_twin, limits=None):
    """Parity of the twin's detections with the reference's over images.

    reference, twin: Detections per image in frame pixels; scales: model-input pixels per frame pixel per
    image (box deviations are in model-input pixels, so the limit does not depend on the camera). With
    `limits` (the export.max_* keys), also the matched boxes past the box or score limit and their fraction.
    """
    box_dev, score_dev, unmatched = [], [], 0
    for ref, other, scale in zip(reference, twin, scales):
        boxes, scores, missing = match_twin(ref, other, threshold)
        box_dev += [b * scale for b in boxes]
        score_dev += scores
        unmatched += missing
    figures = {"images": len(reference), "threshold": float(threshold), "matched_boxes": len(box_dev),
               "unmatched_boxes": unmatched,
               "max_box_deviation_px": max(box_dev) if box_dev else 0.0,
               "max_score_deviation": max(score_dev) if score_dev else 0.0,
               "map50_fp32": float(map50_reference), "map50_fp16": float(map50_twin),
               "map50_drop": float(map50_reference) - float(map50_twin)}
    if limits is not None:
        over = (np.asarray(box_dev) > limits["max_box_deviation_px"]) | \
            (np.asarray(score_dev) > limits["max_score_deviation"])
        figures["outlier_boxes"] = int(over.sum())
        figures["outlier_fraction"] = float(over.mean()) if len(over) else 0.0
    return figures


def parity_failures(figures, limits):
    """[(figure, value, limit)] for each parity figure above its limit; limits has the export.max_* keys.

    The box and score maxima are waived while the matched boxes past either limit stay within
    limits["max_outlier_fraction"]: one candidate near an NMS tie can swap for its neighbour in FP16 (a box
    13 px away on aquarium) without the model drifting. The mAP50 drop is always checked.
    """
    failures = [(figure, figures[figure], limits[limit]) for figure, limit in PARITY_FIGURES
                if figures[figure] > limits[limit]]
    fraction, allowed = figures.get("outlier_fraction"), limits.get("max_outlier_fraction", 0.0)
    if fraction is None or not any(figure != "map50_drop" for figure, _, _ in failures):
        return failures
    if fraction <= allowed:
        return [failure for failure in failures if failure[0] == "map50_drop"]
    return [("outlier_fraction", fraction, allowed)] + failures


def describe_failures(failures):
    return "; ".join("%s %.4g > limit %.4g" % failure for failure in failures)
