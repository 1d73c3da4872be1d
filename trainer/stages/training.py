"""One ultralytics training run, shared by every stage: train or resume, checkpoints, metrics.json.

A stage hands `fit` the arguments of a new run; `fit` writes ultralytics' run under
`out_dir/train` (weights/last.pt, best.pt, epochN.pt every `save_period` epochs with
the newest `keep_last` kept), resumes an unfinished last.pt, only re-validates a run
that already finished, and returns the weights with the validation figures summarised
per class, per category and for the critical classes (`summarise_metrics`).

Fine-tuning passes `pretrained=<weights.pt>`: ultralytics 8.4.190 rebuilds the model
from its yaml and, with `pretrained=False` (the adapter's safe default, which stops
hub downloads), throws the loaded weights away, so a "continued" run silently
restarts from random weights.
"""
import dataclasses
import json
import logging
import os
import re

from trainer import yolo
from trainer.errors import ConfigError, DataError, TrainerError

logger = logging.getLogger(__name__)
CATEGORIES = ("critical", "important", "general")
# The project's 36-class taxonomy: ids 0-19 critical, 20-28 important, 29-35 general.
DEFAULT_36_CATEGORIES = {i: "critical" if i < 20 else "important" if i < 29 else "general" for i in range(36)}
PERIODIC_RE = re.compile(r"^epoch(\d+)\.pt$")
# Keys of a run that a resumed run must be given again (the rest comes from the checkpoint).
RESUME_KEYS = ("data", "device", "workers", "save_period", "patience")


@dataclasses.dataclass(frozen=True)
class FitResult:
    weights: str          # best.pt (last.pt when no best was written)
    last: str
    metrics: dict         # summarise_metrics() of the validation of `weights`
    resumed: str          # "new", "unfinished" (continued) or "finished" (only validated)


def fit(out_dir, model, train_args, keep_last=3, resume=True, callbacks=None, trainer=None, val_args=None):
    """Train (or resume) one run in out_dir/train; returns a FitResult.

    model: a model yaml or a .pt for a new run (fine-tuning also passes pretrained=<.pt> in train_args).
    train_args: the YOLO.train arguments of a new run (trainer.yolo's safe defaults are added).
    trainer: a DetectionTrainer subclass, e.g. for multi-scale batches; it is used on resume too.
    val_args: arguments for the validation when training returned no per-class metrics (imgsz, batch).
    `callbacks` maps ultralytics callback events to functions; they run in this process only (not under DDP).
    """
    save_dir = os.path.abspath(os.path.join(str(out_dir), "train"))
    last = os.path.join(save_dir, "weights", "last.pt")
    best = os.path.join(save_dir, "weights", "best.pt")
    state = run_state(last) if resume else "new"
    metrics = None
    if state == "finished":
        logger.info("run in %s already finished; validating it again", save_dir)
    else:
        runner = yolo.yolo(last if state == "unfinished" else model)
        runner.add_callback("on_model_save", lambda t: prune_periodic_checkpoints(t.wdir, keep_last))
        for event, func in list(epoch_progress(os.path.basename(str(out_dir))).items()) + list((callbacks or {}).items()):
            runner.add_callback(event, func)
        args = dict(train_args, save_dir=save_dir)
        if state == "unfinished":  # everything else comes from the checkpoint's own arguments
            args = {k: v for k, v in args.items() if k in RESUME_KEYS + ("save_dir",)}
            args["resume"] = True
        extra = {"trainer": trainer} if trainer is not None else {}
        metrics = runner.train(**extra, **yolo.train_args(**args))
    prune_periodic_checkpoints(os.path.dirname(last), keep_last)  # DDP runs the callback in a subprocess
    weights = best if os.path.exists(best) else last
    if not os.path.exists(weights):
        raise TrainerError("training in %s wrote neither best.pt nor last.pt" % save_dir)
    if not _has_per_class(metrics):  # DDP and reruns return no validator metrics
        metrics = validate(weights, train_args["data"], out_dir, device=train_args.get("device"),
                           workers=train_args.get("workers", 0), **(val_args or {}))
    summary = summarise_metrics(metrics, categories_for(read_data_yaml(train_args["data"]), len(metrics.names)))
    return FitResult(weights=weights, last=last, metrics=summary, resumed=state)


def epoch_progress(name):
    """ultralytics callbacks drawing one tqdm bar of epochs with the last validation mAP50 (the trainer keeps
    ultralytics quiet, so without this a run is silent for minutes). In this process only, as all callbacks."""
    from tqdm import tqdm

    bars = {}

    def start(trainer):
        bars["bar"] = tqdm(total=trainer.epochs, initial=trainer.start_epoch, desc="%s epochs" % name, unit="epoch")

    def epoch_end(trainer):
        bar = bars.get("bar")
        if bar is not None and bar.n < bar.total:  # the final validation of best.pt fires this event again
            bar.set_postfix(mAP50="%.4f" % float(trainer.metrics.get("metrics/mAP50(B)", float("nan"))))
            bar.update(1)

    def end(trainer):
        bar = bars.pop("bar", None)
        if bar is not None:
            bar.close()

    return {"on_train_start": start, "on_fit_epoch_end": epoch_end, "on_train_end": end}


def validate(weights, data, out_dir, imgsz, batch, device=None, workers=0):
    """ultralytics' validation of `weights` on data's val split, on one device, at the device's NMS IoU
    (so that it and edge's pipeline on the same images measure the same thing)."""
    from edge.bundle import DEFAULT_NMS_IOU

    device = ultralytics_device(device).split(",")[0]
    return yolo.yolo(weights).val(data=str(data), imgsz=int(imgsz), batch=int(batch), device=device,
                                  workers=int(workers), plots=False, verbose=False, iou=DEFAULT_NMS_IOU,
                                  save_dir=os.path.abspath(os.path.join(str(out_dir), "val")))


def run_state(last):
    """'new' without last.pt, 'unfinished' when it still holds an optimizer, else 'finished'."""
    if not os.path.exists(last):
        return "new"
    _, ckpt = yolo.load_checkpoint(last)
    return "unfinished" if ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None else "finished"


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


def category_mean(values, class_index, categories):
    """Mean of a per-class figure per category over the classes present in validation; None where none is."""
    out = {}
    for category in CATEGORIES:
        chosen = [float(v) for v, c in zip(values, class_index) if categories.get(int(c)) == category]
        out[category] = sum(chosen) / len(chosen) if chosen else None
    return out


def category_recall(recall, class_index, categories):
    """Mean recall per category over the classes present in validation; None where none is."""
    return category_mean(recall, class_index, categories)


def summarise_metrics(metrics, categories):
    """The metrics.json record from an ultralytics DetMetrics: overall, per class, per category, critical."""
    box = metrics.box
    index = [int(c) for c in metrics.ap_class_index]
    per_class = {}
    for i, c in enumerate(index):
        per_class[str(metrics.names[c])] = {"id": c, "category": categories.get(c), "precision": float(box.p[i]),
                                            "recall": float(box.r[i]), "ap50": float(box.ap50[i]),
                                            "ap50_95": float(box.ap[i])}
    by_category = {name: category_mean(values, index, categories)
                   for name, values in (("mAP50", box.ap50), ("mAP50-95", box.ap), ("recall", box.r))}
    return {"mAP50": float(box.map50), "mAP50-95": float(box.map), "precision": float(box.mp),
            "recall": float(box.mr), "recall_by_category": by_category["recall"],
            "by_category": {c: {k: by_category[k][c] for k in by_category} for c in CATEGORIES},
            "critical": {k: by_category[k]["critical"] for k in by_category},
            "per_class": per_class}


def _has_per_class(metrics):
    return metrics is not None and hasattr(metrics, "box") and hasattr(metrics, "ap_class_index")


def read_data_yaml(path):
    from trainer.data.yolo_dataset import load_yaml_file

    data = load_yaml_file(str(path), what="data yaml")
    if not isinstance(data, dict) or "names" not in data:
        raise DataError("data yaml %r has no 'names:'; expected an ultralytics detection data.yaml" % str(path))
    return data


def data_names(data_cfg):
    names = data_cfg["names"]
    return list(names.values()) if isinstance(names, dict) else list(names)


def plain(obj):
    data = dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else dict(obj) if isinstance(obj, dict) \
        else {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return json.loads(json.dumps(data, default=str))


def write_json(path, data):
    """Write JSON through a temporary file, so an interruption never leaves half a file."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, str(path))


def finetune_args(section, general, data, weights, **overrides):
    """YOLO.train arguments that continue `weights` on `data` with a section's fine-tuning schedule.

    `section` has epochs, batch_size, imgsz, lr0, lrf, warmup_epochs, save_period and optionally patience
    and mosaic (critical_species, ensemble). The model to pass to `fit` is `weights` itself, so the
    architecture and class count come from the checkpoint; `pretrained=weights` keeps its values.
    """
    args = {"data": str(data), "device": ultralytics_device(getattr(general, "device", None)),
            "workers": int(getattr(general, "num_workers", 0)), "seed": int(getattr(general, "seed", 0)),
            "epochs": int(section.epochs), "batch": int(section.batch_size), "imgsz": int(section.imgsz),
            "lr0": float(section.lr0), "lrf": float(section.lrf), "warmup_epochs": float(section.warmup_epochs),
            "save_period": int(section.save_period), "patience": int(getattr(section, "patience", 100)),
            "pretrained": str(weights)}
    if getattr(section, "mosaic", None) is not None:
        args["mosaic"] = float(section.mosaic)
    args.update(overrides)
    return args
