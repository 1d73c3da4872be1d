"""`--compare ultralytics`: the same images through ultralytics' own predict, scored like the bundle.

What a user would otherwise pick: `YOLO(model).predict` on each variant's ONNX file (from the
bundle) and its .pt (given with --weights variant=PATH.pt), and on the .pt with ultralytics'
own test-time augmentation (`augment=True`: scales 1, 0.83, 0.67, a flip, plain NMS). Every
call decodes at conf 0.001 (ultralytics' validation) with the NMS IoU of the variant's model in
the bundle, one image at a time; each call's wall time is its latency. The boxes are scored by
the bundle's evaluators (edge.metrics, trainer.coco_eval) and recall is taken at the threshold
the device would apply to that model alone: the single profile's per-class thresholds for the
single profile's model, the model's own operating threshold for the others.
"""
import collections
import os
import time

import numpy as np

from edge.detections import Detections
from edge.errors import BundleError
from edge.images import read_image
from edge.metrics import evaluate
from edge.profiles import single_model
from trainer.errors import ConfigError

PREDICT_CONF = 0.001
MAX_DET = 300
WARMUP = 2


def parse_weights(items, bundle):
    """{variant: .pt path} from ["variant=PATH.pt", ...], each variant one of the bundle's models."""
    out = collections.OrderedDict()
    for item in items or ():
        variant, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError("--weights %r: expected VARIANT=PATH.pt, e.g. balanced=runs/best.pt" % item)
        try:
            bundle.model(variant)
        except BundleError as e:
            raise ConfigError("--weights %r: %s" % (item, e)) from e
        if not path.endswith(".pt") or not os.path.isfile(path):
            raise ConfigError("--weights %r: %s is not an existing .pt file (the variant's trained weights)"
                              % (item, path))
        out[variant] = path
    return out


def operating_thresholds(bundle, variant):
    """Per-class thresholds the device applies to this model running alone."""
    spec = bundle.model(variant)
    if spec.name == single_model(bundle).name:
        return np.asarray(bundle.profile_settings("single").thresholds, np.float64)
    return np.full(bundle.num_classes, float(spec.operating_thr))


def runs(bundle, weights):
    """[(row name, variant, model file, augment)] of the comparison, ONNX first for each variant."""
    rows = []
    for variant, pt in weights.items():
        rows += [("ultralytics %s onnx" % variant, variant, bundle.model(variant).path, False),
                 ("ultralytics %s pt" % variant, variant, pt, False),
                 ("ultralytics %s pt augment" % variant, variant, pt, True)]
    return rows


def predict_all(model, frames, imgsz, iou, augment, num_classes, progress=None, desc=""):
    """(Detections per frame, wall seconds per frame) of ultralytics' predict, one frame per call."""
    args = dict(conf=PREDICT_CONF, iou=iou, imgsz=imgsz, augment=augment, max_det=MAX_DET, device="cpu",
                verbose=False, save=False)
    for frame in frames[:WARMUP]:
        model.predict(frame, **args)
    detections, latencies = [], []
    for frame in (progress(frames, desc) if progress else frames):
        start = time.perf_counter()
        boxes = model.predict(frame, **args)[0].boxes
        latencies.append(time.perf_counter() - start)
        cls = boxes.cls.cpu().numpy().astype(np.int32)
        if len(cls) and int(cls.max()) >= num_classes:
            raise ConfigError("ultralytics predicted class %d; the bundle has %d classes: are these the bundle's "
                              "weights?" % (int(cls.max()), num_classes))
        detections.append(Detections(boxes.xyxy.cpu().numpy().astype(np.float32),
                                     boxes.conf.cpu().numpy().astype(np.float32), cls))
    return detections, latencies


def score(bundle, variant, detections, ground_truth):
    """The bundle's accuracy figures for one ultralytics run."""
    from benchmarks.suite_measure import d_ece, reliability_inputs
    from trainer.coco_eval import coco_map

    categories = {c.id: c.category for c in bundle.classes}
    at_all = evaluate(detections, ground_truth, bundle.num_classes, categories)
    at_device = evaluate(detections, ground_truth, bundle.num_classes, categories,
                         score_thr=operating_thresholds(bundle, variant))
    coco = coco_map(detections, ground_truth, bundle.num_classes)
    return {"map50": at_all["map50"], "map50_95": coco["map50_95"], "coco_map50": coco["map50"],
            "ap50": at_all["ap50"], "recall_by_category": at_device["recall_by_category"],
            "critical_recall": at_device["recall_by_category"].get("critical"),
            "precision_by_category": at_device["precision_by_category"],
            "critical_precision": at_device["precision_by_category"].get("critical"),
            "d_ece": d_ece(*reliability_inputs(detections, ground_truth)), "images": len(detections)}


def compare(bundle, weights, items, progress=None):
    """{row name: accuracy figures + "latency" (suite_measure.latency_figures) + settings} per ultralytics run."""
    from benchmarks.suite_measure import latency_figures
    from trainer.yolo import yolo

    frames = [read_image(path) for path, _ in items]
    ground_truth = [gt for _, gt in items]
    out = collections.OrderedDict()
    for name, variant, path, augment in runs(bundle, weights):
        spec = bundle.model(variant)
        model = yolo(path)
        if len(model.names) != bundle.num_classes:
            raise ConfigError("%s has %d classes, the bundle %d: pass the weights the bundle's %s model was "
                              "exported from" % (path, len(model.names), bundle.num_classes, variant))
        detections, latencies = predict_all(model, frames, list(spec.input_size), spec.iou_thr, augment,
                                            bundle.num_classes, progress, name)
        out[name] = dict(score(bundle, variant, detections, ground_truth), latency=latency_figures(latencies),
                         model=path, augment=augment, conf=PREDICT_CONF, iou=spec.iou_thr,
                         imgsz=list(spec.input_size))
    return out
