"""Baseline detector: ultralytics training from a model yaml, optionally from an SSL backbone.

Writes under `out_dir`: train/ (ultralytics' run: weights/last.pt, best.pt, epochN.pt
every `save_period` epochs, the newest `keep_last` of them kept), metrics.json,
baseline_config.json and, with an SSL backbone, backbone_transfer.json.

A rerun with resume=True continues train/weights/last.pt when it is an unfinished run
and only re-validates when that run already finished.

Attributes read from `config` (any object, e.g. a SimpleNamespace):
    model            model yaml, e.g. "yolov8m.yaml" or "yolov8l.yaml"
    epochs, batch_size, imgsz
  optional: save_period (10), keep_last (3), patience (100), ssl_backbone (used when the
    argument is None), and optimizer, lr0, lrf, momentum, weight_decay, warmup_epochs
    (passed to ultralytics when present; else trainer.yolo's SGD and ultralytics' defaults)
Attributes read from `general`: device ("cpu", "0", "0,1" or a list of GPU ids; several
GPUs train with ultralytics' DDP), num_workers, seed.
"""
import dataclasses
import json
import logging
import os
import re

from trainer import backbone as backbone_io
from trainer import yolo
from trainer.errors import ConfigError, DataError, TrainerError

logger = logging.getLogger(__name__)
CATEGORIES = ("critical", "important", "general")
# The project's 36-class taxonomy: ids 0-19 critical, 20-28 important, 29-35 general.
DEFAULT_36_CATEGORIES = {i: "critical" if i < 20 else "important" if i < 29 else "general" for i in range(36)}
PERIODIC_RE = re.compile(r"^epoch(\d+)\.pt$")
# Config attributes passed to ultralytics under the same name when present.
OPTIONAL_TRAIN_ARGS = ("optimizer", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "mosaic", "cache")


@dataclasses.dataclass(frozen=True)
class BaselineResult:
    out_dir: str
    weights: str          # best.pt (last.pt when no best was written)
    last: str
    metrics_path: str
    metrics: dict
    transfer_report_path: str | None


def run_baseline(config, general, data, out_dir, ssl_backbone=None, resume=True, callbacks=None):
    """Train (or resume) the baseline and write metrics.json; returns a BaselineResult.

    `callbacks` maps ultralytics callback events (e.g. "on_fit_epoch_end") to functions of the
    trainer; they run in this process only, so not under multi-GPU DDP.
    """
    ssl_backbone = ssl_backbone or getattr(config, "ssl_backbone", None)
    if ssl_backbone and os.path.isdir(ssl_backbone):  # an `trainer ssl --out` folder
        ssl_backbone = os.path.join(ssl_backbone, "backbone.pt")
    data_cfg = _read_data_yaml(data)
    save_dir = os.path.abspath(os.path.join(out_dir, "train"))
    last = os.path.join(save_dir, "weights", "last.pt")
    best = os.path.join(save_dir, "weights", "best.pt")
    keep_last = int(getattr(config, "keep_last", 3))
    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "baseline_config.json"),
                {"config": _plain(config), "general": _plain(general), "data": str(data),
                 "ssl_backbone": None if ssl_backbone is None else str(ssl_backbone)})
    report_path = _check_backbone(ssl_backbone, config.model, data_cfg, out_dir) if ssl_backbone else None

    state = _run_state(last) if resume else "new"
    metrics = None
    if state == "finished":
        logger.info("baseline in %s already finished; validating it again", save_dir)
    else:
        model = yolo.yolo(last if state == "unfinished" else config.model)
        model.add_callback("on_model_save", lambda trainer: prune_periodic_checkpoints(trainer.wdir, keep_last))
        for event, func in (callbacks or {}).items():
            model.add_callback(event, func)
        metrics = model.train(**_train_args(config, general, data, save_dir, ssl_backbone, state == "unfinished"))
    prune_periodic_checkpoints(os.path.dirname(last), keep_last)  # DDP runs the callback in a subprocess
    weights = best if os.path.exists(best) else last
    if not os.path.exists(weights):
        raise TrainerError("training in %s wrote neither best.pt nor last.pt" % save_dir)
    if not _has_per_class(metrics):  # DDP and reruns return no validator metrics
        metrics = _validate(weights, config, general, data, out_dir)
    summary = summarise_metrics(metrics, categories_for(data_cfg, len(metrics.names)))
    summary.update(model=str(config.model), ssl_backbone=None if ssl_backbone is None else str(ssl_backbone),
                   weights=weights)
    metrics_path = os.path.join(out_dir, "metrics.json")
    _write_json(metrics_path, summary)
    return BaselineResult(out_dir=str(out_dir), weights=weights, last=last, metrics_path=metrics_path,
                          metrics=summary, transfer_report_path=report_path)


def _train_args(config, general, data, save_dir, ssl_backbone, resuming):
    args = {"data": str(data), "save_dir": save_dir, "device": ultralytics_device(getattr(general, "device", None)),
            "workers": int(getattr(general, "num_workers", 0)), "save_period": int(getattr(config, "save_period", 10)),
            "patience": int(getattr(config, "patience", 100))}
    if resuming:  # everything else comes from the checkpoint's own arguments
        return yolo.train_args(resume=True, **args)
    args.update(epochs=int(config.epochs), batch=int(config.batch_size), imgsz=int(config.imgsz),
                seed=int(getattr(general, "seed", 0)), pretrained=str(ssl_backbone) if ssl_backbone else False)
    for name in OPTIONAL_TRAIN_ARGS:
        if getattr(config, name, None) is not None:
            args[name] = getattr(config, name)
    return yolo.train_args(**args)


def _validate(weights, config, general, data, out_dir):
    device = ultralytics_device(getattr(general, "device", None)).split(",")[0]  # val runs on one device
    return yolo.yolo(weights).val(data=str(data), imgsz=int(config.imgsz), batch=int(config.batch_size),
                                  device=device, workers=int(getattr(general, "num_workers", 0)), plots=False,
                                  verbose=False, save_dir=os.path.abspath(os.path.join(out_dir, "val")))


def _run_state(last):
    """'new' without last.pt, 'unfinished' when it still holds an optimizer, else 'finished'."""
    if not os.path.exists(last):
        return "new"
    _, ckpt = yolo.load_checkpoint(last)
    return "unfinished" if ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None else "finished"


def _check_backbone(ssl_backbone, model_yaml, data_cfg, out_dir):
    """Write backbone_transfer.json; raise when a backbone tensor would silently not load."""
    report = backbone_io.transfer_report(ssl_backbone, model_yaml, nc=len(_names(data_cfg)))
    path = backbone_io.write_transfer_report(report, os.path.join(out_dir, "backbone_transfer.json"))
    if report["unused"] or not report["matched"]:
        raise TrainerError("SSL backbone %s does not fit %s: %d of %d tensors have no same-shaped counterpart "
                           "(e.g. %s); pretrain with the same model yaml (see %s)"
                           % (ssl_backbone, model_yaml, len(report["unused"]), report["counts"]["backbone"],
                              (report["unused"] or ["-"])[0], path))
    return path


# ----------------------------------------------------------------------------------------
# Pure helpers


def periodic_checkpoints_to_delete(names, keep_last):
    """Of the names given, the epochN.pt files beyond the newest `keep_last` (by N)."""
    numbered = sorted((int(m.group(1)), n) for n in names for m in [PERIODIC_RE.match(n)] if m)
    return [n for _, n in numbered[:-max(int(keep_last), 1)]]


def prune_periodic_checkpoints(weights_dir, keep_last):
    weights_dir = str(weights_dir)
    if not os.path.isdir(weights_dir):
        return []
    doomed = periodic_checkpoints_to_delete(os.listdir(weights_dir), keep_last)
    for name in doomed:
        os.remove(os.path.join(weights_dir, name))
    return doomed


def ultralytics_device(device):
    """'cpu', '0' or '0,1' as ultralytics wants it, from a string, an int or a list of GPU ids."""
    if device is None or device == "":
        return ""  # ultralytics picks the first GPU, else the CPU
    if isinstance(device, (list, tuple)):
        return ",".join(str(int(d)) for d in device)
    text = str(device).strip().lower().replace("cuda:", "").replace(" ", "")
    if text != "cpu" and not all(part.isdigit() for part in text.split(",")):
        raise ConfigError("device %r: expected 'cpu', a GPU id like '0' or a list like '0,1'" % device)
    return text


def categories_for(data_cfg, nc):
    """Class id -> category from data.yaml's `categories:`; the project default for 36 classes; else {}."""
    mapping = data_cfg.get("categories")
    if mapping:
        out = {int(k): str(v) for k, v in mapping.items()}
        unknown = sorted(set(out.values()) - set(CATEGORIES))
        if unknown:
            raise DataError("data.yaml categories %s: expected only %s" % (unknown, list(CATEGORIES)))
        return out
    return dict(DEFAULT_36_CATEGORIES) if nc == 36 else {}


def category_recall(recall, class_index, categories):
    """Mean recall per category over the classes present in validation; None where none is."""
    out = {}
    for category in CATEGORIES:
        values = [float(r) for r, c in zip(recall, class_index) if categories.get(int(c)) == category]
        out[category] = sum(values) / len(values) if values else None
    return out


def summarise_metrics(metrics, categories):
    """The metrics.json record from an ultralytics DetMetrics."""
    box = metrics.box
    index = [int(c) for c in metrics.ap_class_index]
    per_class = {}
    for i, c in enumerate(index):
        per_class[str(metrics.names[c])] = {"id": c, "category": categories.get(c), "precision": float(box.p[i]),
                                            "recall": float(box.r[i]), "ap50": float(box.ap50[i]),
                                            "ap50_95": float(box.ap[i])}
    return {"mAP50": float(box.map50), "mAP50-95": float(box.map), "precision": float(box.mp),
            "recall": float(box.mr), "recall_by_category": category_recall(box.r, index, categories),
            "per_class": per_class}


def _has_per_class(metrics):
    return metrics is not None and hasattr(metrics, "box") and hasattr(metrics, "ap_class_index")


def check_inputs(data):
    """Refuse an unreadable data.yaml before the caller writes anything to the output folder (run_baseline
    reads it again)."""
    _read_data_yaml(data)


def _read_data_yaml(path):
    from trainer.data.yolo_dataset import load_yaml_file

    data = load_yaml_file(str(path), what="data yaml")
    if not isinstance(data, dict) or "names" not in data:
        raise DataError("data yaml %r has no 'names:'; expected an ultralytics detection data.yaml" % str(path))
    return data


def _names(data_cfg):
    names = data_cfg["names"]
    return list(names.values()) if isinstance(names, dict) else list(names)


def _plain(obj):
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj) if isinstance(obj, dict) \
        else {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return json.loads(json.dumps(data, default=str))


def _write_json(path, data):
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
