"""Jetson Nano latency and energy per frame, ESTIMATED from published figures until the device is measured.

Anchors (../shared/REFERENCE.md, "Published figures to compare against"), TensorRT FP16 at
640 px, one view, MAXN 10 W mode:

    yolov8n  ~22 FPS  (19-25 FPS published, Qengineering YoloV8-TensorRT-Jetson_Nano)
    yolov8s   ~9 FPS  (published)
    yolov8m  ~3.4, l ~1.6, x ~1.0 FPS (unpublished: compute scaling of the published two)

Scaling rule (documented, not measured):
    latency_s(size, imgsz, views) = views x (imgsz / 640)^2 / FPS_640(size)
i.e. compute grows with the pixels of the letterboxed input and each TTA view is one more
image through the network (a batch of views costs its views' compute on a GPU this small).
    energy_j = BUSY_POWER_W x latency_s
with BUSY_POWER_W = 6.8 W, the board power of a Nano running YOLOv5n (Machado et al., arXiv
2207.06150: about 0.55 J/frame at about 6.8 W, their pipeline at ~12 FPS). An ensemble or TTA
profile sums its models' figures. Every figure from here is labelled "estimate".
"""
import collections

import numpy as np

from trainer.errors import TrainerError

LABEL = "estimate"
SOURCE = "Jetson Nano device table (published FPS x (imgsz/640)^2 x views, 6.8 W busy): an estimate"
REFERENCE_IMGSZ = 640
BUSY_POWER_W = 6.8
FPS_640 = collections.OrderedDict((("n", 22.0), ("s", 9.0), ("m", 3.4), ("l", 1.6), ("x", 1.0)))
SIZES = tuple(FPS_640)
# Parameters (millions) of YOLOv8 and YOLO11 at each scale, to recognise an exported model's size.
PARAMS_M = {"n": (3.2, 2.6), "s": (11.2, 9.4), "m": (25.9, 20.1), "l": (43.7, 25.3), "x": (68.2, 56.9)}

DeviceEstimate = collections.namedtuple("DeviceEstimate", "latency_s energy_j label")


def _check(size, imgsz, views):
    if size not in FPS_640:
        raise TrainerError("model size %r is not in the Jetson Nano table; expected one of %s"
                           % (size, ", ".join(SIZES)))
    if isinstance(imgsz, bool) or not isinstance(imgsz, (int, float)) or not imgsz > 0:
        raise TrainerError("imgsz %r: expected a positive number of pixels" % (imgsz,))
    if isinstance(views, bool) or not isinstance(views, int) or views < 1:
        raise TrainerError("views %r: expected a whole number >= 1 (TTA views per model call)" % (views,))


def model_estimate(size, imgsz, views=1):
    """DeviceEstimate of one model call on a Nano: `views` images of imgsz x imgsz through model `size`."""
    _check(size, imgsz, views)
    latency_s = views * (float(imgsz) / REFERENCE_IMGSZ) ** 2 / FPS_640[size]
    return DeviceEstimate(latency_s, BUSY_POWER_W * latency_s, LABEL)


def profile_estimate(models, views):
    """Sum over `models` [(size, imgsz)] each run on `views` views: one profile's frame on a Nano."""
    if not models:
        raise TrainerError("a profile runs at least one model; got none")
    parts = [model_estimate(size, imgsz, views) for size, imgsz in models]
    return DeviceEstimate(sum(p.latency_s for p in parts), sum(p.energy_j for p in parts), LABEL)


def size_from_params(params):
    """The scale letter whose YOLOv8/YOLO11 parameter count is nearest to `params` (on a log scale)."""
    if not params > 0:
        raise TrainerError("a model with %r parameters has no size in the device table" % (params,))
    distance = {s: min(abs(np.log(params / (m * 1e6))) for m in PARAMS_M[s]) for s in SIZES}
    return min(SIZES, key=lambda s: distance[s])


def onnx_params(path):
    """Number of weights stored in an ONNX model's initializers."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (OSError, ValueError, DecodeError) as e:
        raise TrainerError("cannot read ONNX model %s: %s" % (path, e)) from e
    return int(sum(int(np.prod(t.dims)) for t in model.graph.initializer))
