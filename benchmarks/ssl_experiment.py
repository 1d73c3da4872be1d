"""Does MoCo v3 pretraining on unlabelled DeepFish frames help a small YOLO? Same budget, two starts.

    python -m benchmarks.ssl_experiment [--data /work/shared/data/deepfish] [--work out/ssl_experiment]
        [--unlabelled 2000] [--ssl-epochs 10] [--ssl-imgsz 128] [--temperature 0.2] [--labelled 250]
        [--min-fish-px 40] [--epochs 50] [--imgsz 160] [--backbone runs/ssl/backbone.pt] [--seed 0]

The labelled and evaluation frames are chosen as `benchmarks.deepfish_sets`
explains (large-fish videos; each video's later frames held out for evaluation).
`--labelled` training frames are drawn evenly across those videos' earlier frames.
Pretraining sees up to `--unlabelled` frames drawn evenly from every DeepFish video
(labels ignored) except the held-out frames; the labelled frames may be among
them, as in practice. Two YOLOv8n models are then trained on the labelled frames
with identical settings and seed: one from scratch, one starting from the MoCo v3
backbone (`pretrained=backbone.pt`). mAP50 on the evaluation frames (mean of the
last epochs, see `benchmarks.small_yolo`) is printed for both, with the
difference, written as JSON and plotted (ssl_experiment.png).

The temperature defaults to 0.2, not the 1.0 of MoCo v3's ResNet recipe: at 1.0 the
logits are bounded cosines and a CPU budget of a few hundred iterations leaves the
loss at chance (measured: 16.66 to 16.53 over 138 iterations, chance 16.64).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from benchmarks.deepfish_sets import (DEFAULT_DATA, add_selection_arguments, even_sample, label_stats, list_frames,
                                      materialize, parse_name, select_videos, site_split, write_data)
from benchmarks.small_yolo import add_training_arguments, new_work_folder, plot_curves, summarize, train


def plan(args, rng):
    frames = list_frames(args.data)
    videos = set(select_videos(frames, args.min_fish_px, args.no_fish_clips))
    early, late = site_split(frames, args.eval_fraction, args.gap)
    early_large = [p for p in early if parse_name(p)[0] in videos]
    late_large = [p for p in late if parse_name(p)[0] in videos]
    return {"videos": sorted(videos),
            "labelled": sorted(even_sample(early_large, args.labelled, rng)),
            "unlabelled": sorted(even_sample(early, args.unlabelled, rng)),
            "eval": sorted(str(p) for p in rng.choice(late_large, size=min(args.val_images, len(late_large)),
                                                     replace=False))}


def pretrain(images_dir, args, work):
    from trainer.config import load_config
    from trainer.ssl import run_ssl

    config = load_config(overrides=[
        "ssl.model=%s" % args.model, "ssl.epochs=%d" % args.ssl_epochs, "ssl.imgsz=%d" % args.ssl_imgsz,
        "ssl.batch_size=%d" % args.ssl_batch, "ssl.lr=%g" % args.ssl_lr, "ssl.temperature=%g" % args.temperature,
        "ssl.proj_hidden_dim=1024", "ssl.pred_hidden_dim=1024", "ssl.checkpoint_every=1",
        "general.num_workers=%d" % args.workers, "general.seed=%d" % args.seed, "general.device=cpu"])
    start = time.perf_counter()
    result = run_ssl(config.ssl, config.general, images_dir, os.path.join(work, "ssl"))
    return result, time.perf_counter() - start


def reuse(backbone_path):
    """The SSLResult of an earlier run whose backbone.pt is given (its folder holds ssl_log.csv)."""
    from trainer.ssl import SSLResult, read_log

    folder = os.path.dirname(os.path.abspath(backbone_path))
    log_path = os.path.join(folder, "ssl_log.csv")
    if not (os.path.isfile(backbone_path) and os.path.isfile(log_path)):
        raise SystemExit("--backbone %s: expected backbone.pt beside ssl_log.csv, as trainer ssl writes them"
                         % backbone_path)
    rows = read_log(log_path)
    return SSLResult(out_dir=folder, backbone_path=os.path.abspath(backbone_path),
                     transfer_report_path=os.path.join(folder, "backbone_transfer.json"), log_path=log_path,
                     checkpoint_path=None, epochs_done=int(rows[-1]["epoch"]), iterations=int(rows[-1]["iteration"]),
                     last_loss=rows[-1]["loss"])


def ssl_losses(log_path):
    from trainer.ssl import read_log

    return [round(float(row["loss"]), 4) for row in read_log(log_path)]


def run(args):
    reused = reuse(args.backbone) if args.backbone else None
    rng = np.random.default_rng(args.seed)
    work = new_work_folder(args.work)
    sets = plan(args, rng)
    labelled = materialize(os.path.join(work, "labelled"), sets["labelled"], args.imgsz)
    eval_images = materialize(os.path.join(work, "eval"), sets["eval"], args.imgsz)
    if reused:
        ssl, ssl_s = reused, 0.0
    else:
        materialize(os.path.join(work, "unlabelled"), sets["unlabelled"], args.imgsz, with_labels=False)
        ssl, ssl_s = pretrain(os.path.join(work, "unlabelled", "images"), args, work)
    data = write_data(work, "labelled", labelled, eval_images)
    results = {}
    for name, start in (("scratch", None), ("moco_v3", ssl.backbone_path)):
        _, train_s, curve = train(data, args, work, name, start=start)
        results[name] = dict(summarize(curve, args.tail), train_s=round(train_s, 1))
        print("%-8s mAP50 %.4f +- %.4f (last %d epochs; last epoch %.4f; %.0f s)" % (
            name, results[name]["map50"], results[name]["map50_sd"], results[name]["tail_epochs"],
            results[name]["map50_last_epoch"], train_s), flush=True)
    plot = plot_curves(os.path.join(work, "ssl_experiment.png"),
                       {"from scratch": (results["scratch"]["curve"], 0),
                        "from MoCo v3 backbone": (results["moco_v3"]["curve"], 0)},
                       "DeepFish: %d labelled frames, %s" % (len(labelled), args.model))
    return {"settings": dict(vars(args)), "videos": sets["videos"],
            "sizes": {k: len(v) for k, v in sets.items() if k != "videos"}, "labelled": label_stats(labelled),
            "eval": label_stats(eval_images),
            "ssl": {"epochs": ssl.epochs_done, "iterations": ssl.iterations, "losses": ssl_losses(ssl.log_path),
                    "seconds": round(ssl_s, 1), "backbone": ssl.backbone_path},
            "results": results, "plot": plot,
            "map50_difference": round(results["moco_v3"]["map50"] - results["scratch"]["map50"], 4)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="out/ssl_experiment", help="scratch folder (must be empty or new)")
    p.add_argument("--unlabelled", type=int, default=2000)
    p.add_argument("--ssl-epochs", type=int, default=10)
    p.add_argument("--ssl-batch", type=int, default=64)
    p.add_argument("--ssl-imgsz", type=int, default=128)
    p.add_argument("--ssl-lr", type=float, default=1.5e-3, help="AdamW lr per 256 images (scaled by batch/256)")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--backbone", help="reuse this backbone.pt from an earlier run instead of pretraining "
                                      "(e.g. to repeat the two trainings with another --seed)")
    p.add_argument("--labelled", type=int, default=250)
    add_selection_arguments(p)
    add_training_arguments(p, epochs=50)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = run(args)
    losses = result["ssl"]["losses"]
    print("MoCo v3: %d epochs, %d iterations, loss %s -> %s, %s" % (
        result["ssl"]["epochs"], result["ssl"]["iterations"], losses[0] if losses else "-",
        losses[-1] if losses else "-", "reused %s" % args.backbone if args.backbone else "%.0f s over %d frames" % (
            result["ssl"]["seconds"], result["sizes"]["unlabelled"])))
    print("MoCo v3 minus scratch: %+.4f mAP50" % result["map50_difference"])
    path = os.path.join(os.path.abspath(args.work), "ssl_experiment.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2, default=str)
    print("wrote %s, %s" % (path, result["plot"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
