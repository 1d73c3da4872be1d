"""`trainer specialize`: critical-species oversampling, then hard-negative mining rounds.

Round 0 fine-tunes the baseline on a training list where every image holding a critical
class appears `oversample` times (by reference). Rounds 1..iterations each take the frames
of the negative pool that the previous round's model fires on above `mine_conf` (run
through edge's own Pipeline), add them as backgrounds (capped at max_background_fraction
of the list), fine-tune from the previous weights and evaluate: FP per background image
on a held-out part of the pool that is never mined, and recall on the val split, both at
the balanced variant's deployed threshold. A round that is worse than the one before
beyond the tolerances stops the stage; so does a round that finds nothing new to mine.

The pool is `--negatives DIR` or, without it, the dataset's own train background frames.
Pool frames are never in round 0's list: the held-out part must be unseen, and the rest
enters training only when mined. Labelled images are never pool frames.

out_dir: training_config.yaml, oversampling.json, start/ (the starting weights' figures),
round<k>/ (train.txt, data.yaml, selection.json, train/ = the fit run, eval/, round.json),
rounds.json, metrics.json, report.md. A rerun with resume reuses every round whose
round.json exists and resumes an interrupted round's fit with the selection it recorded.
"""
import csv
import dataclasses
import json
import logging
import os

import yaml

from trainer.errors import TrainerError
from trainer.stages import mining
from trainer.stages.device_eval import detect_all, device_figures, false_positives_per_image, load_ground_truth, \
    open_checkpoint
from trainer.stages.specialize_report import report_text, round_summary, summary_line
from trainer.stages.training import categories_for, data_names, finetune_args, fit, read_data_yaml, validate, \
    write_json

logger = logging.getLogger(__name__)
DEFAULT_THRESHOLD = 0.25  # when the config has no balanced variant
FIRST_EPOCH_COLUMN = "metrics/mAP50(B)"


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the rounds work on, all checked before out_dir is written."""
    data: str
    weights: str
    names: list
    categories: dict
    critical: list
    labels: dict          # abs path -> class ids, for the train split and the pool
    base: list            # round 0's training list (oversampled, pool frames left out)
    before: list          # the train split as given (pool frames left out), for the counts
    pool_source: str      # "negatives" or "dataset"
    pool_path: str | None
    mine: list            # pool frames that may be mined
    holdout: list         # pool frames never mined: FP per background image
    excluded_labelled: int


@dataclasses.dataclass(frozen=True)
class SpecializeResult:
    out_dir: str
    weights: str          # the best round's weights
    best_round: int
    reason: str
    stopped: str
    metrics_path: str
    rounds_path: str
    report_path: str
    metrics: dict
    rounds: list
    summary: str


def run_specialize(config, data, weights, out_dir, negatives=None, resume=True, progress=True, callbacks=None):
    """Oversample, mine, fine-tune round by round; returns a SpecializeResult (see the module docstring).

    config: the whole trainer Config; weights: the baseline's best.pt (or its output folder);
    negatives: a folder of target-free images (default: config.critical_species.negatives, else the
    dataset's background frames). `callbacks` go to every fit (ultralytics events -> functions).
    """
    from trainer.config import save_config

    section = config.critical_species
    plan = prepare(config, data, weights, negatives if negatives is not None else section.negatives)
    out_dir = os.path.abspath(str(out_dir))
    os.makedirs(out_dir, exist_ok=True)
    save_config(config, os.path.join(out_dir, "training_config.yaml"))
    oversampling = oversampling_record(plan, section.oversample)
    write_json(os.path.join(out_dir, "oversampling.json"), oversampling)
    ctx = _Context(config, plan, out_dir, resume, progress, callbacks)
    start = ctx.start_figures()
    records = ctx.rounds()
    index, reason = mining.best_round(records)
    best = records[index]
    stopped = next((r["decision"] for r in records if not r["kept"]),
                   "ran every mining round (%d)" % section.iterations if section.iterations else "no mining rounds")
    rounds_path = os.path.join(out_dir, "rounds.json")
    write_json(rounds_path, [round_summary(r) for r in records])
    first = records[0].get("first_epoch") or {}
    metrics = dict(best["fit"], device=best["figures"], best_round=best["round"], reason=reason, stopped=stopped,
                   weights=best["weights"], start=start, first_epoch=first, threshold=ctx.threshold,
                   oversampling={k: oversampling[k] for k in ("critical_classes", "times", "note")})
    metrics_path = os.path.join(out_dir, "metrics.json")
    write_json(metrics_path, metrics)
    report_path = os.path.join(out_dir, "report.md")
    with open(report_path, "w") as fh:
        fh.write(report_text(plan, oversampling, start, records, metrics, section))
    return SpecializeResult(out_dir=out_dir, weights=best["weights"], best_round=best["round"], reason=reason,
                            stopped=stopped, metrics_path=metrics_path, rounds_path=rounds_path,
                            report_path=report_path, metrics=metrics, rounds=records,
                            summary=summary_line(metrics, start, report_path))


# ----------------------------------------------------------------------------------------
# Inputs


def resolve_weights(weights):
    """The .pt to start from: a file, or a baseline output folder's train/weights/best.pt (else last.pt)."""
    weights = str(weights)
    if os.path.isdir(weights):
        for name in ("best.pt", "last.pt"):
            for folder in (os.path.join(weights, "train", "weights"), os.path.join(weights, "weights"), weights):
                if os.path.isfile(os.path.join(folder, name)):
                    return os.path.abspath(os.path.join(folder, name))
        raise TrainerError("--weights %s is a folder without train/weights/best.pt or last.pt; expected the "
                           "baseline's best.pt or its output folder" % weights)
    if not os.path.isfile(weights):
        raise TrainerError("--weights %s does not exist; expected the baseline's best.pt or its output folder"
                           % weights)
    return os.path.abspath(weights)


def checkpoint_classes(weights):
    from trainer import yolo

    try:
        model, _ = yolo.load_checkpoint(weights)
    except TrainerError:
        raise
    except Exception as e:  # torch.load and ultralytics raise many kinds (pickle, zip, attribute errors)
        raise TrainerError("--weights %s cannot be loaded as an ultralytics checkpoint: %s; expected the "
                           "baseline's best.pt" % (weights, " ".join(str(e).split())[:200])) from e
    names = getattr(model, "names", None)
    return len(names) if names else int(model.yaml["nc"])


def prepare(config, data, weights, negatives):
    """The Plan: weights, classes, labels, the oversampled list and the negative pool; raises on bad input."""
    from trainer.data.yolo_dataset import read_data_yaml as read_splits

    section = config.critical_species
    weights = resolve_weights(weights)
    data_cfg = read_data_yaml(data)
    names = data_names(data_cfg)
    _, splits = read_splits(str(data))
    for split in ("train", "val"):
        if not splits.get(split):
            raise TrainerError("%s has no %s images; specialize needs a train and a val split" % (data, split))
    nc = checkpoint_classes(weights)
    if nc != len(names):
        raise TrainerError("--weights %s has %d classes but %s has %d; fine-tune the baseline trained on this "
                           "dataset" % (weights, nc, data, len(names)))
    categories = categories_for(data_cfg, len(names))
    train = [os.path.abspath(p) for p in splits["train"]]
    labels = {p: _class_ids(p) for p in sorted(set(train))}
    pool, source, excluded = _pool(negatives, train, labels)
    mine, holdout = mining.split_pool(pool, section.holdout_fraction, config.general.seed)
    in_pool = set(pool)
    before = [p for p in train if p not in in_pool]
    critical = mining.critical_ids(categories)
    base = mining.oversampled_list(before, labels, critical, section.oversample)
    return Plan(data=os.path.abspath(str(data)), weights=weights, names=names, categories=categories,
                critical=critical, labels=labels, base=base, before=before, pool_source=source,
                pool_path=None if negatives is None else os.path.abspath(str(negatives)), mine=mine,
                holdout=holdout, excluded_labelled=excluded)


def _pool(negatives, train, labels):
    """(pool frames, source, labelled frames left out); the pool holds only frames with no labelled box."""
    from trainer.data.yolo_dataset import list_images

    if negatives is None:
        return sorted(p for p in set(train) if mining.is_background(labels, p)), "dataset", 0
    where = "critical_species.negatives (--negatives) %s" % negatives
    if not os.path.isdir(str(negatives)):
        raise TrainerError("%s is not a folder; expected a folder of images that hold no target" % where)
    paths = [os.path.abspath(p) for p in list_images(str(negatives))]
    if not paths:
        raise TrainerError("%s holds no images; expected a folder of images that hold no target (or leave "
                           "--negatives out to mine the dataset's background frames)" % where)
    for path in paths:
        labels[path] = _class_ids(path)
    pool = [p for p in paths if mining.is_background(labels, p)]
    if len(pool) < len(paths):
        logger.warning("%s: %d images have labelled boxes and are not used as negatives", where,
                       len(paths) - len(pool))
    if not pool:
        raise TrainerError("%s: every image has a label file with boxes; expected images with no target" % where)
    return pool, "negatives", len(paths) - len(pool)


def _class_ids(image_path):
    from trainer.data.yolo_dataset import label_path_for, read_yolo_labels

    label = label_path_for(image_path)
    return [int(c) for c in read_yolo_labels(label)[0]] if os.path.exists(label) else []


def oversampling_record(plan, times):
    note = None if plan.critical else "no critical class in the data's categories: oversampling changes nothing"
    return {"critical_classes": [plan.names[c] for c in plan.critical], "times": int(times), "note": note,
            "before": mining.instance_counts(plan.before, plan.labels, plan.names, plan.categories),
            "after": mining.instance_counts(plan.base, plan.labels, plan.names, plan.categories)}


def _write_list(path, paths):
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write("".join(p + "\n" for p in paths))
    os.replace(tmp, path)
    return path


def first_epoch_map50(results_csv):
    """mAP50 after the first epoch of an ultralytics run (its results.csv), or None."""
    if not os.path.exists(results_csv):
        return None
    with open(results_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            row = {k.strip(): v for k, v in row.items() if k}
            return float(row[FIRST_EPOCH_COLUMN]) if row.get(FIRST_EPOCH_COLUMN) not in (None, "") else None
    return None


# ----------------------------------------------------------------------------------------
# Rounds


class _Context:
    def __init__(self, config, plan, out_dir, resume, progress, callbacks):
        self.config, self.plan, self.out_dir = config, plan, out_dir
        self.section = config.critical_species
        self.resume, self.progress, self.callbacks = resume, progress, callbacks
        variant = (config.ensemble.variants or {}).get("balanced") or {}
        self.threshold = float(variant.get("threshold", DEFAULT_THRESHOLD))
        self._val = None
        self.start = None

    def val_items(self):
        if self._val is None:
            self._val = load_ground_truth(self.plan.data, "val")
        return self._val

    def write_val_list(self):
        """The val split as a list file, so each round's data.yaml points at the original val images."""
        return _write_list(os.path.join(self.out_dir, "val.txt"), [p for p, _ in self.val_items()])

    def bar(self, desc):
        if not self.progress:
            return None
        from tqdm import tqdm

        return lambda items: tqdm(items, desc=desc, unit="img")

    def start_figures(self):
        """The starting weights' device figures and ultralytics mAP50 (the first-epoch check's reference)."""
        path = os.path.join(self.out_dir, "start", "start.json")
        if self.resume and os.path.exists(path):
            with open(path) as fh:
                self.start = json.load(fh)
            return self.start
        figures, _ = self.evaluate(self.plan.weights, os.path.join(self.out_dir, "start"), scan=[])
        val = validate(self.plan.weights, self.plan.data, os.path.join(self.out_dir, "start"),
                       imgsz=self.section.imgsz, batch=self.section.batch_size,
                       device=self.config.general.device, workers=self.config.general.num_workers)
        self.start = {"weights": self.plan.weights, "figures": figures, "mAP50": float(val.box.map50)}
        write_json(path, self.start)
        return self.start

    def evaluate(self, weights, folder, scan):
        """(device figures with FP per held-out background image, {scanned path: highest box score})."""
        pipeline = open_checkpoint(weights, self.plan.names, self.section.imgsz, os.path.join(folder, "eval"))
        try:
            figures = device_figures(pipeline, self.val_items(), self.threshold, self.plan.categories,
                                     progress=self.bar("val"))
            held = detect_all(pipeline, self.plan.holdout, self.bar("holdout backgrounds"))
            mined = detect_all(pipeline, scan, self.bar("mining pool")) if scan else []
        finally:
            pipeline.close()
        figures["val_fp_per_background_image"] = figures.pop("fp_per_background_image")
        figures["holdout_images"] = len(held)
        figures["fp_per_background_image"] = false_positives_per_image(held, self.threshold) if held else None
        scores = {p: float(d.score.max()) if len(d.score) else None for p, d in zip(scan, mined)}
        return figures, scores

    def rounds(self):
        records, added, weights = [], [], self.plan.weights
        for k in range(int(self.section.iterations) + 1):
            folder = os.path.join(self.out_dir, "round%d" % k)
            record = self._finished(folder)
            if record is None:
                record = self.run_round(k, folder, weights, records[-1] if records else None, added)
            records.append(record)
            added = added + record["added"]
            if not record["kept"]:
                break
            weights = record["weights"]
        return records

    def _finished(self, folder):
        path = os.path.join(folder, "round.json")
        if not (self.resume and os.path.exists(path)):
            return None
        with open(path) as fh:
            return json.load(fh)

    def selection(self, k, folder, previous, added):
        """(mined, added) of round k, as recorded when the round first ran."""
        path = os.path.join(folder, "selection.json")
        if self.resume and os.path.exists(path):
            with open(path) as fh:
                chosen = json.load(fh)
            return chosen["mined"], chosen["added"]
        if k == 0:
            return [], []
        mined = mining.select_mined(previous.get("pool_scores") or {}, self.section.mine_conf,
                                    set(self.plan.base) | set(added), self.plan.labels)
        base_backgrounds = sum(mining.is_background(self.plan.labels, p) for p in self.plan.base)
        room = mining.background_room(len(self.plan.base) - base_backgrounds, base_backgrounds + len(added),
                                      self.section.max_background_fraction)
        chosen = {"mined": mined, "added": mining.add_capped(mined, room)}
        os.makedirs(folder, exist_ok=True)
        write_json(path, chosen)
        return chosen["mined"], chosen["added"]

    def run_round(self, k, folder, weights, previous, added_before):
        mined, added = self.selection(k, folder, previous, added_before)
        entries = self.plan.base + added_before + added
        record = {"round": k, "start_weights": weights, "weights": None, "mined": mined, "added": added,
                  "backgrounds": sum(mining.is_background(self.plan.labels, p) for p in entries),
                  "train_images": len(entries), "figures": None, "fit": None, "first_epoch": None,
                  "pool_scores": {}, "kept": True, "decision": "kept"}
        if k > 0 and not added:
            record["kept"] = False
            record["decision"] = ("stopped: nothing new mined above mine_conf %g" % self.section.mine_conf
                                  if not mined else "stopped: the background cap (max_background_fraction %g) "
                                  "leaves no room for the %d mined frames" % (self.section.max_background_fraction,
                                                                              len(mined)))
            write_json(os.path.join(folder, "round.json"), record)
            return record
        result = self.fine_tune(folder, weights, entries)
        # Scanned on the last round too, so a rerun with more iterations continues from its scores.
        scan = [p for p in self.plan.mine if p not in set(added_before + added)]
        figures, scores = self.evaluate(result.weights, folder, scan)
        start_map = previous["fit"]["mAP50"] if previous else self.start["mAP50"]
        record.update(weights=result.weights, fit=result.metrics, figures=figures, pool_scores=scores,
                      first_epoch={"start_mAP50": start_map,
                                   "first_epoch_mAP50": first_epoch_map50(os.path.join(folder, "train",
                                                                                       "results.csv"))})
        worse = mining.regression(previous["figures"], figures, self.section.fp_tolerance,
                                  self.section.recall_tolerance) if previous else None
        if worse:
            record.update(kept=False, decision="stopped: round %d %s" % (k, worse))
        write_json(os.path.join(folder, "round.json"), record)
        return record

    def fine_tune(self, folder, weights, entries):
        os.makedirs(folder, exist_ok=True)
        train_list = _write_list(os.path.join(folder, "train.txt"), entries)
        data_yaml = os.path.join(folder, "data.yaml")
        body = {"path": folder, "train": train_list, "val": self.write_val_list(), "nc": len(self.plan.names),
                "names": dict(enumerate(self.plan.names))}
        if self.plan.categories:
            body["categories"] = dict(self.plan.categories)
        with open(data_yaml, "w") as fh:
            yaml.safe_dump(body, fh, sort_keys=False)
        args = finetune_args(self.section, self.config.general, data_yaml, weights)
        return fit(folder, weights, args, keep_last=self.section.keep_last, resume=self.resume,
                   callbacks=self.callbacks,
                   val_args={"imgsz": int(self.section.imgsz), "batch": int(self.section.batch_size)})


# ----------------------------------------------------------------------------------------
# Command line


def add_arguments(parser):
    from trainer.cli import existing_file, existing_folder, existing_path, output_folder

    parser.add_argument("--data", required=True, type=existing_file("a dataset's data.yaml"), help="dataset data.yaml")
    parser.add_argument("--weights", required=True, type=existing_path("the baseline's best.pt or its output folder"),
                        help="the baseline's best.pt (or the baseline output folder)")
    parser.add_argument("--out", required=True, type=output_folder,
                        help="output folder: rounds, weights, metrics.json, report.md")
    parser.add_argument("--negatives", dest="critical_species.negatives", metavar="DIR",
                        type=existing_folder("a folder of images that hold no target"),
                        help="target-free images to mine (default: the dataset's background frames)")
    parser.add_argument("--iterations", dest="critical_species.iterations", type=int, metavar="N",
                        help="hard-negative mining rounds (default: critical_species.iterations)")
    parser.add_argument("--oversample", dest="critical_species.oversample", type=int, metavar="K",
                        help="times an image holding a critical class is listed")
    parser.add_argument("--epochs", dest="critical_species.epochs", type=int, help="fine-tuning epochs per round")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming")


def run_command(config, args):
    """Critical-species oversampling and hard-negative mining, fine-tuned from a baseline."""
    from edge.console import printable

    result = run_specialize(config, args.data, args.weights, args.out, resume=not args.no_resume)
    print(printable(result.summary))
    return result
