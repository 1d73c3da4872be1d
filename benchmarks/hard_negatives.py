"""Hard-negative mining on DeepFish, through the trainer's own stages: baseline, then `specialize`.

    python -m benchmarks.hard_negatives [--data ../shared/data/deepfish] [--work out/hard_negatives]
        [--train-images 400] [--negatives 400] [--val-images 250] [--imgsz 160]
        [--set section.key=value ...] [--phase all|baseline] [--name specialize]

DeepFish's no-fish clips are a real pool of frames known to hold no target. The
frames come from `benchmarks.deepfish_sets` (large-fish videos and the no-fish clips
of the same sites; each video's later frames held out): the training set is earlier
fish frames only, the negative pool is earlier no-fish frames (the stage keeps a share
of it back, never mined, to measure false positives per background image), and the
validation set is later frames of both kinds. A YOLOv8n baseline is trained with
`trainer.stages.baseline.run_baseline`; `trainer.stages.specialize.run_specialize`
then mines the pool with edge's Pipeline, round by round. The fish class is the
critical one (so critical recall is fish recall); oversampling is off (one class).
The work folder is reused: a rerun resumes where the last one stopped.
"""
import argparse
import json
import os
import sys

import numpy as np

from benchmarks.deepfish_sets import (DEFAULT_DATA, even_sample, label_stats, list_frames, materialize, parse_name,
                                      read_boxes, select_videos, site_split)

# CPU scale: 160 px frames, a short AdamW schedule for the baseline (see benchmarks.small_yolo on why).
DEFAULT_SETTINGS = ["general.device=cpu", "general.batch_size=32", "general.num_workers=2",
                    "baseline.model=yolov8n.yaml", "baseline.epochs=40", "baseline.optimizer=AdamW",
                    "baseline.lr0=0.002", "baseline.warmup_epochs=1", "baseline.patience=0",
                    "critical_species.oversample=1", "critical_species.epochs=5", "critical_species.iterations=3"]


def plan_sets(data, args, rng):
    frames = list_frames(data)
    videos = set(select_videos(frames, args.min_fish_px, no_fish_clips=True))
    early, late = site_split([p for p in frames if parse_name(p)[0] in videos], 0.25, 10)
    fish = [p for p in early if len(read_boxes(p))]
    empty = [p for p in early if not len(read_boxes(p))]
    return {"videos": sorted(videos),
            "train": even_sample(fish, args.train_images, rng),
            "negatives": sorted(str(p) for p in rng.choice(empty, min(args.negatives, len(empty)), replace=False)),
            "val": sorted(str(p) for p in rng.choice(late, min(args.val_images, len(late)), replace=False))}


def prepare(args):
    """The three folders under work/, made once; returns the data.yaml path and the negatives folder."""
    data_yaml = os.path.join(args.work, "deepfish.yaml")
    negatives = os.path.join(args.work, "negatives", "images")
    if os.path.exists(data_yaml):
        return data_yaml, negatives
    sets = plan_sets(args.data, args, np.random.default_rng(args.seed))
    made = {split: materialize(os.path.join(args.work, split), sets[split], args.imgsz, with_labels=split != "negatives")
            for split in ("train", "val", "negatives")}
    for split in ("train", "val"):
        with open(os.path.join(args.work, split + ".txt"), "w") as f:
            f.write("".join(p + "\n" for p in made[split]))
    stats = {split: label_stats(sets[split]) for split in ("train", "val", "negatives")}
    with open(os.path.join(args.work, "sets.json"), "w") as f:
        json.dump({"videos": sets["videos"], "stats": stats}, f, indent=2)
    with open(data_yaml, "w") as f:
        f.write("path: %s\ntrain: train.txt\nval: val.txt\nnames: [fish]\ncategories: {0: critical}\n" % args.work)
    return data_yaml, negatives


def run(args):
    from trainer.config import load_config
    from trainer.stages.baseline import run_baseline

    args.work = os.path.abspath(args.work)
    os.makedirs(args.work, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(args.work, "yolo_config"))
    data_yaml, negatives = prepare(args)
    config = load_config(None, DEFAULT_SETTINGS + ["general.imgsz=%d" % args.imgsz] + list(args.set))
    base = run_baseline(config.baseline, config.general, data_yaml, os.path.join(args.work, "baseline"))
    result = {"baseline": {k: base.metrics[k] for k in ("mAP50", "mAP50-95", "recall", "precision")},
              "baseline_weights": base.weights}
    if args.phase == "all":
        from trainer.stages.specialize import run_specialize

        special = run_specialize(config, data_yaml, base.weights, os.path.join(args.work, args.name),
                                 negatives=negatives)
        result["specialize"] = os.path.join(args.work, args.name)
        result["summary"] = getattr(special, "summary", None)
    return result


def build_parser():
    p = argparse.ArgumentParser(prog="python -m benchmarks.hard_negatives", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="DeepFish in YOLO format (train/, val/)")
    p.add_argument("--work", default="out/hard_negatives", help="work folder (reused: reruns resume)")
    p.add_argument("--train-images", type=int, default=400)
    p.add_argument("--negatives", type=int, default=400, help="no-fish frames in the mining pool (with its holdout)")
    p.add_argument("--val-images", type=int, default=250)
    p.add_argument("--min-fish-px", type=float, default=40)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--phase", choices=("all", "baseline"), default="all")
    p.add_argument("--name", default="specialize", help="the specialize stage's folder under --work")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="trainer config override")
    return p


def main(argv=None):
    result = run(build_parser().parse_args(argv))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
