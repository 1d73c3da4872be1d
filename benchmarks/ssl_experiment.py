"""Does MoCo v3 pretraining on unlabelled DeepFish frames help a small YOLO? Same budget, two starts.

    python -m benchmarks.ssl_experiment [--data /work/shared/data/deepfish] [--work out/ssl_experiment]
        [--unlabelled 2000] [--ssl-epochs 4] [--labelled 300] [--epochs 12] [--imgsz 160]

DeepFish videos are split as in benchmarks/active_learning.py: `--eval-videos`
held out for evaluation (from val/), the rest give `--labelled` training images
(drawn evenly across videos) and up to `--unlabelled` frames for pretraining
(labels ignored; the labelled images are among the frames an SSL run may see, as
in practice). Two YOLOv8n models are then trained on the labelled images with
identical settings and seed: one from scratch, one starting from the MoCo v3
backbone (`pretrained=backbone.pt`). mAP50 on the held-out videos is printed for
both, with the difference, and written as JSON.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks.active_learning import (DEFAULT_DATA, evaluate, even_sample, link_set, list_split, train,
                                        video_of, write_data)


def plan(args, rng):
    train_images, val_images = list_split(args.data, "train"), list_split(args.data, "val")
    videos = sorted({video_of(os.path.basename(p)) for p in train_images + val_images})
    eval_videos = set(str(v) for v in rng.choice(videos, size=args.eval_videos, replace=False))
    rest = [p for p in train_images if video_of(os.path.basename(p)) not in eval_videos]
    held_out = [p for p in val_images if video_of(os.path.basename(p)) in eval_videos]
    return {"eval_videos": sorted(eval_videos),
            "labelled": sorted(even_sample(rest, args.labelled, rng)),
            "unlabelled": sorted(even_sample(rest, args.unlabelled, rng)),
            "eval": sorted(str(p) for p in rng.choice(held_out, size=min(args.val_images, len(held_out)),
                                                     replace=False))}


def pretrain(images_dir, args, work):
    from trainer.config import load_config
    from trainer.ssl import run_ssl

    config = load_config(overrides=[
        "ssl.model=%s" % args.model, "ssl.epochs=%d" % args.ssl_epochs, "ssl.imgsz=%d" % args.imgsz,
        "ssl.batch_size=%d" % args.ssl_batch, "ssl.lr=%g" % args.ssl_lr, "ssl.proj_hidden_dim=1024",
        "ssl.pred_hidden_dim=1024", "ssl.checkpoint_every=1", "general.num_workers=%d" % args.workers,
        "general.seed=%d" % args.seed, "general.device=cpu"])
    start = time.perf_counter()
    result = run_ssl(config.ssl, config.general, images_dir, os.path.join(work, "ssl"))
    return result, time.perf_counter() - start


def run(args):
    rng = np.random.default_rng(args.seed)
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", os.path.join(work, "yolo_config"))
    sets = plan(args, rng)
    labelled = link_set(os.path.join(work, "labelled"), sets["labelled"])
    eval_images = link_set(os.path.join(work, "eval"), sets["eval"])
    link_set(os.path.join(work, "unlabelled"), sets["unlabelled"], with_labels=False)
    ssl, ssl_s = pretrain(os.path.join(work, "unlabelled", "images"), args, work)
    data = write_data(work, "labelled", labelled, eval_images)
    results = {}
    for name, start in (("scratch", None), ("moco_v3", ssl.backbone_path)):
        weights, train_s = train(data, args, work, name, start=start)
        results[name] = dict(evaluate(weights, data, args, work, "val_" + name), train_s=round(train_s, 1))
        print("%-8s mAP50 %.4f  mAP50-95 %.4f  (%.0f s)" % (name, results[name]["map50"],
                                                          results[name]["map50_95"], train_s), flush=True)
    return {"settings": vars(args), "eval_videos": sets["eval_videos"],
            "sizes": {k: len(v) for k, v in sets.items() if k != "eval_videos"},
            "ssl": {"epochs": ssl.epochs_done, "last_loss": ssl.last_loss, "seconds": round(ssl_s, 1),
                    "backbone": ssl.backbone_path},
            "results": results, "map50_difference": results["moco_v3"]["map50"] - results["scratch"]["map50"]}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA, help="DeepFish in YOLO format (train/, val/)")
    p.add_argument("--work", default="out/ssl_experiment")
    p.add_argument("--unlabelled", type=int, default=2000)
    p.add_argument("--ssl-epochs", type=int, default=4)
    p.add_argument("--ssl-batch", type=int, default=64)
    p.add_argument("--ssl-lr", type=float, default=1.5e-3, help="AdamW lr per 256 images (scaled by batch/256)")
    p.add_argument("--labelled", type=int, default=300)
    p.add_argument("--val-images", type=int, default=200)
    p.add_argument("--eval-videos", type=int, default=4)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--imgsz", type=int, default=160)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="yolov8n.yaml")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = run(args)
    print("MoCo v3 minus scratch: %+.4f mAP50 (pretraining %.0f s over %d frames)" % (
        result["map50_difference"], result["ssl"]["seconds"], result["sizes"]["unlabelled"]))
    path = os.path.join(os.path.abspath(args.work), "ssl_experiment.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print("wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
