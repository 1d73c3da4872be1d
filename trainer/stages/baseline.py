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
import logging
import os

from trainer import backbone as backbone_io
from trainer.errors import TrainerError
from trainer.stages.training import (CATEGORIES, DEFAULT_36_CATEGORIES, PERIODIC_RE, categories_for,  # noqa: F401
                                     category_recall, data_names, fit, periodic_checkpoints_to_delete, plain,
                                     prune_periodic_checkpoints, read_data_yaml, summarise_metrics,
                                     ultralytics_device, write_json)

logger = logging.getLogger(__name__)
# Config attributes passed to ultralytics under the same name when present.
OPTIONAL_TRAIN_ARGS = ("optimizer", "lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "mosaic", "cache",
                       "nbs")


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
    data_cfg = read_data_yaml(data)
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "baseline_config.json"),
               {"config": plain(config), "general": plain(general), "data": str(data),
                "ssl_backbone": None if ssl_backbone is None else str(ssl_backbone)})
    report_path = _check_backbone(ssl_backbone, config.model, data_cfg, out_dir) if ssl_backbone else None
    result = fit(out_dir, config.model, _train_args(config, general, data, ssl_backbone),
                 keep_last=int(getattr(config, "keep_last", 3)), resume=resume, callbacks=callbacks,
                 val_args={"imgsz": int(config.imgsz), "batch": int(config.batch_size)})
    summary = dict(result.metrics, model=str(config.model),
                   ssl_backbone=None if ssl_backbone is None else str(ssl_backbone), weights=result.weights)
    metrics_path = os.path.join(out_dir, "metrics.json")
    write_json(metrics_path, summary)
    return BaselineResult(out_dir=str(out_dir), weights=result.weights, last=result.last, metrics_path=metrics_path,
                          metrics=summary, transfer_report_path=report_path)


def _train_args(config, general, data, ssl_backbone):
    args = {"data": str(data), "device": ultralytics_device(getattr(general, "device", None)),
            "workers": int(getattr(general, "num_workers", 0)), "save_period": int(getattr(config, "save_period", 10)),
            "patience": int(getattr(config, "patience", 100)), "epochs": int(config.epochs),
            "batch": int(config.batch_size), "imgsz": int(config.imgsz), "seed": int(getattr(general, "seed", 0)),
            "pretrained": str(ssl_backbone) if ssl_backbone else False}
    for name in OPTIONAL_TRAIN_ARGS:
        if getattr(config, name, None) is not None:
            args[name] = getattr(config, name)
    return args


def _check_backbone(ssl_backbone, model_yaml, data_cfg, out_dir):
    """Write backbone_transfer.json; raise when a backbone tensor would silently not load."""
    report = backbone_io.transfer_report(ssl_backbone, model_yaml, nc=len(data_names(data_cfg)))
    path = backbone_io.write_transfer_report(report, os.path.join(out_dir, "backbone_transfer.json"))
    if report["unused"] or not report["matched"]:
        raise TrainerError("SSL backbone %s does not fit %s: %d of %d tensors have no same-shaped counterpart "
                           "(e.g. %s); pretrain with the same model yaml (see %s)"
                           % (ssl_backbone, model_yaml, len(report["unused"]), report["counts"]["backbone"],
                              (report["unused"] or ["-"])[0], path))
    return path


def check_inputs(data):
    """Refuse an unreadable data.yaml before the caller writes anything to the output folder (run_baseline
    reads it again)."""
    read_data_yaml(data)


