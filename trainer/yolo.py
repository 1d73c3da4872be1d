"""The one adapter around ultralytics.

ultralytics reads its environment when first imported (settings file, offline
mode, auto-install), downloads fonts and weights on demand and reports
telemetry. Everything in the trainer reaches it through here, so the offline
environment is in place before that first import and every training argument
is passed explicitly.
"""
import os

from edge.bundle import DEFAULT_NMS_IOU

ULTRALYTICS_VERSION = "8.4.190"

_OFFLINE_ENV = {
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "false",
    "YOLO_VERBOSE": "false",
}

# Arguments that would otherwise trigger downloads or machine-dependent choices.
SAFE_TRAIN_ARGS = {
    "plots": False,        # plotting fetches Arial.ttf
    "amp": False,          # the AMP check downloads yolo11n.pt on GPU
    "pretrained": False,   # never fetch hub weights; fine-tuning a .pt must pass pretrained=<path> (False drops its weights)
    "optimizer": "SGD",    # "auto" switches optimizer by iteration count
    "exist_ok": True,
    "verbose": False,
    # Validation during training and of best.pt at the device's NMS IoU (edge.bundle.DEFAULT_NMS_IOU):
    # ultralytics' 0.7 reported the demo's balanced variant at mAP50 0.478 where the same weights score
    # 0.491 at 0.5, in ultralytics' evaluator and in edge's. Only NMS reads it, never the loss.
    "iou": DEFAULT_NMS_IOU,
}


def ultralytics_module():
    """Import ultralytics with the offline environment set; check the pinned version."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    import ultralytics

    if ultralytics.__version__ != ULTRALYTICS_VERSION:
        from trainer.errors import TrainerError

        raise TrainerError("ultralytics %s is installed; ReefWatch is pinned to %s (pip install 'ultralytics==%s')"
                           % (ultralytics.__version__, ULTRALYTICS_VERSION, ULTRALYTICS_VERSION))
    return ultralytics


def yolo(model):
    """A YOLO object from a model yaml (built, nothing downloaded) or a local .pt/.onnx file."""
    model = str(model)
    if not model.endswith((".yaml", ".yml")) and not os.path.exists(model):
        from trainer.errors import TrainerError

        raise TrainerError("model %r is neither a model yaml nor an existing file; ReefWatch never downloads "
                           "weights: pass e.g. yolov8n.yaml or a path to a .pt you trained" % model)
    return ultralytics_module().YOLO(model)


def train_args(**overrides):
    """The full argument dict for YOLO.train: safe defaults, then the caller's choices."""
    args = dict(SAFE_TRAIN_ARGS)
    args.update(overrides)
    return args


def detection_model(cfg, nc=None):
    """A DetectionModel built from a model yaml (nothing downloaded), quietly."""
    ultralytics_module()
    from ultralytics.nn.tasks import DetectionModel

    return DetectionModel(str(cfg), nc=nc, verbose=False)


def load_checkpoint(path):
    """(model, checkpoint dict) exactly as the ultralytics trainer loads a `pretrained=` path."""
    if not os.path.isfile(str(path)):
        from trainer.errors import TrainerError

        raise TrainerError("checkpoint %r does not exist; ReefWatch never downloads weights" % str(path))
    ultralytics_module()
    from ultralytics.nn.tasks import load_checkpoint as _load_checkpoint

    return _load_checkpoint(str(path))


def intersect_state_dicts(source, target):
    """The keys DetectionModel.load() transfers: same name and same shape, source values."""
    ultralytics_module()
    from ultralytics.utils.torch_utils import intersect_dicts

    return intersect_dicts(source, target)
