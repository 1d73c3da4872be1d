"""The YOLO backbone as a chain of layers, and its hand-over to ultralytics training.

`YOLO(model_yaml).train(pretrained=path)` rebuilds the model from the yaml, so weights
set in memory are lost; the trainer instead reads `path` with
`ultralytics.nn.tasks.load_checkpoint` (which wants a dict whose "ema" or "model" is a
torch Module) and `DetectionModel.load()` copies every tensor whose key and shape match.
We therefore save a DetectionModel cut down to its backbone layers: its state_dict has
only `model.0.` ... `model.<n-1>.` keys, so the neck and head cannot match by accident
and `load()`'s head-transfer branch (which needs a Detect layer) stays off.
"""
import datetime
import json
import os

from edge.atomic_file import atomic_output
from trainer import yolo
from trainer.errors import TrainerError

FORMAT = "reefwatch-ssl-backbone/1"


def backbone_layer_count(model):
    """Number of backbone layers of a DetectionModel, checked to be a plain chain.

    A sequential pass equals ultralytics' own forward only when every backbone layer
    reads the previous layer's output (`m.f == -1`); YOLOv8's layers 0-9 do.
    """
    spec = (getattr(model, "yaml", None) or {}).get("backbone")
    if not spec:
        raise TrainerError("model has no 'backbone' section in its yaml; expected an ultralytics detection yaml")
    n = len(spec)
    for i, layer in enumerate(model.model[:n]):
        if layer.f != -1:
            raise TrainerError("backbone layer %d of %s reads layers %r, not just the previous one; only chained "
                               "backbones (e.g. YOLOv8 layers 0-9) can be pretrained as a sequence"
                               % (i, model.yaml.get("yaml_file", "model"), layer.f))
    return n


def build_backbone(model_yaml):
    """(nn.Sequential of the backbone layers, channels of its last feature map) from a model yaml."""
    import torch

    full = yolo.detection_model(model_yaml)
    layers = full.model[:backbone_layer_count(full)]
    stride = int(max(full.stride)) if hasattr(full, "stride") else 32
    was_training = layers.training
    layers.eval()
    with torch.no_grad():
        channels = layers(torch.zeros(1, 3, 2 * stride, 2 * stride)).shape[1]
    layers.train(was_training)
    return layers, int(channels)


def truncated_model(model_yaml, backbone_state):
    """A DetectionModel reduced to its backbone layers, holding `backbone_state` (keys `0.conv.weight`...)."""
    model = yolo.detection_model(model_yaml)
    n = backbone_layer_count(model)
    model.model = model.model[:n]
    try:
        model.model.load_state_dict(backbone_state, strict=True)
    except RuntimeError as e:
        raise TrainerError("backbone weights do not fit the backbone of %s: %s" % (model_yaml, e)) from e
    return model.float().cpu().eval()


def save_backbone(backbone_state, model_yaml, path, meta=None):
    """Write an ultralytics-loadable checkpoint of the backbone; returns the path.

    Weights stay float32 (ultralytics' own checkpoints are fp16) so the transfer is exact.
    """
    import torch

    model = truncated_model(model_yaml, {k: v.detach().cpu() for k, v in backbone_state.items()})
    ckpt = {
        "model": model,
        "train_args": {},
        "date": datetime.datetime.now().astimezone().isoformat(),
        "reefwatch": dict(meta or {}, format=FORMAT, model_yaml=str(model_yaml),
                          layers=len(model.model)),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_output(path, "wb") as fh:  # a reader never sees half a file
        torch.save(ckpt, fh)
    return str(path)


def transfer_report(backbone_path, model_yaml, nc=None):
    """Which keys of the model built from `model_yaml` (with `nc` classes) a load of
    `backbone_path` fills, computed with the same intersection ultralytics' load() uses."""
    try:
        source, _ = yolo.load_checkpoint(backbone_path)
    except TypeError as e:  # ultralytics' word for "no Module under 'model'/'ema'"
        raise TrainerError("%s is not a backbone checkpoint (an SSL training checkpoint?); pass the backbone.pt "
                           "that `trainer ssl` writes" % backbone_path) from e
    target = yolo.detection_model(model_yaml, nc=nc)
    src_sd, dst_sd = source.float().state_dict(), target.state_dict()
    matched = yolo.intersect_state_dicts(src_sd, dst_sd)
    return {
        "backbone": str(backbone_path),
        "model": str(model_yaml),
        "nc": nc,
        "matched": sorted(matched, key=_key_order),
        "missing": sorted((k for k in dst_sd if k not in matched), key=_key_order),
        "unused": sorted((k for k in src_sd if k not in matched), key=_key_order),
        "matched_layers": sorted({_layer_index(k) for k in matched}),
        "counts": {"matched": len(matched), "model": len(dst_sd), "backbone": len(src_sd)},
    }


def write_transfer_report(report, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as fh:
        json.dump(report, fh, indent=2)
    return str(path)


def _layer_index(key):
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "model" and parts[1].isdigit() else -1


def _key_order(key):
    return _layer_index(key), key
