"""A simulated active-learning round on DeepFish: uncertainty-picked vs randomly picked images, same budget.

    python -m benchmarks.active_learning [--data /work/shared/data/deepfish] [--work out/active_learning]
        [--seed-images 150] [--pool 600] [--k 100] [--val-images 250] [--min-fish-px 40]
        [--epochs 50] [--finetune-epochs 25] [--imgsz 160] [--strategy margin] [--aggregate sum] [--seed 0]

The frames are chosen as `benchmarks.deepfish_sets` explains (large-fish videos; each
video's later frames held out for evaluation). From the earlier frames come a seed
set (drawn evenly across videos) and a disjoint unlabelled pool. A small YOLOv8n is
trained on the seed set, exported to ONNX and run over the pool by `active select`;
K pool images are picked by uncertainty and K at random. Their labels are revealed
and two models are trained on seed + picks, both continuing the seed model
(without warmup; see `benchmarks.small_yolo.train`) for the same epochs with the
same random seed. A third, the control, trains on the seed set alone for those
epochs: it tells the added images' share of the gain from that of the extra
epochs. mAP50 on the evaluation frames (mean of the last epochs, see
`benchmarks.small_yolo`) is printed for every arm, with the difference between the
picks, written as JSON and plotted (active_learning.png).
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


def plan_sets(data, args, rng):
    frames = list_frames(data)
    videos = set(select_videos(frames, args.min_fish_px, args.no_fish_clips))
    early, late = site_split([p for p in frames if parse_name(p)[0] in videos], args.eval_fraction, args.gap)
    seed = even_sample(early, args.seed_images, rng)
    chosen = set(seed)
    remaining = sorted(p for p in early if p not in chosen)
    pool = sorted(str(p) for p in rng.choice(remaining, size=min(args.pool, len(remaining)), replace=False))
    evaluation = sorted(str(p) for p in rng.choice(late, size=min(args.val_images, len(late)), replace=False))
    return {"videos": sorted(videos), "seed": sorted(seed), "pool": pool, "eval": evaluation}


def pick_uncertain(seed_weights, pool_dir, args, work):
    from trainer.active.select import SelectOptions, run_select
    from trainer.export import export_onnx

    onnx_path = export_onnx(seed_weights, os.path.join(work, "seed.onnx"), args.imgsz)
    options = SelectOptions(k=args.k, strategy=args.strategy, aggregate=args.aggregate, imgsz=args.imgsz,
                            conf=args.conf)
    t0 = time.perf_counter()
    summary = run_select(onnx_path, pool_dir, os.path.join(work, "package.zip"), options)
    picked = summary["manifest"]["images"]
    stats = {"pool": summary["manifest"]["pool_uncertainty"],
             "picked_nonzero": sum(e["uncertainty"] > 0 for e in picked), "picked_drafts": summary["drafts"]}
    return [e["file_name"] for e in picked], stats, time.perf_counter() - t0


def run(args):
    rng = np.random.default_rng(args.seed)
    work = new_work_folder(args.work)
    sets = plan_sets(args.data, args, rng)
    seed_images = materialize(os.path.join(work, "seed"), sets["seed"], args.imgsz)
    eval_images = materialize(os.path.join(work, "eval"), sets["eval"], args.imgsz)
    pool_dir = os.path.join(work, "pool")
    pool_images = materialize(pool_dir, sets["pool"], args.imgsz, with_labels=False)   # labels hidden until picked
    source_of = {os.path.basename(made): src for made, src in zip(pool_images, sets["pool"])}

    t_start = time.perf_counter()
    seed_weights, t_seed, seed_curve = train(write_data(work, "seed", seed_images, eval_images), args, work, "seed")
    picks = {}
    names, uncertainty, t_select = pick_uncertain(seed_weights, os.path.join(pool_dir, "images"), args, work)
    picks["uncertainty"] = [source_of[os.path.basename(n)] for n in names]
    # Same budget at random; if dedup left fewer than K, random gets the same smaller number.
    picks["random"] = sorted(str(p) for p in rng.choice(sets["pool"], size=len(names), replace=False))
    results = {"seed": dict(summarize(seed_curve, args.tail), train_s=round(t_seed, 1), **label_stats(seed_images))}
    picks["none"] = []   # control: the seed set alone for the same extra epochs
    for how, chosen in picks.items():
        added = materialize(os.path.join(work, how), chosen, args.imgsz)
        data = write_data(work, how, seed_images + added, eval_images)
        _, t_train, curve = train(data, args, work, how, start=seed_weights, epochs=args.finetune_epochs,
                                  warmup_epochs=0)
        results[how] = dict(summarize(curve, args.tail), train_s=round(t_train, 1), picked=label_stats(added))
    plot = plot_curves(os.path.join(work, "active_learning.png"), {
        "seed (%d images)" % len(seed_images): (results["seed"]["curve"], 0),
        "+%d by %s/%s" % (len(names), args.strategy, args.aggregate): (results["uncertainty"]["curve"], len(seed_curve)),
        "+%d at random" % len(names): (results["random"]["curve"], len(seed_curve)),
        "+0 (seed set, same epochs)": (results["none"]["curve"], len(seed_curve))},
        "DeepFish active-learning round (%s)" % args.model)
    return {"settings": dict(vars(args)), "videos": sets["videos"],
            "sizes": {k: len(sets[k]) for k in ("seed", "pool", "eval")}, "k": len(names),
            "select_s": round(t_select, 1), "uncertainty": uncertainty, "results": results, "plot": plot,
            "map50_difference": round(results["uncertainty"]["map50"] - results["random"]["map50"], 4),
            "total_s": round(time.perf_counter() - t_start, 1)}


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default="out/active_learning", help="scratch folder (must be empty or new)")
    p.add_argument("--json", help="result file (default WORK/active_learning.json)")
    p.add_argument("--seed-images", type=int, default=150)
    p.add_argument("--pool", type=int, default=600)
    p.add_argument("--k", type=int, default=100)
    add_selection_arguments(p)
    add_training_arguments(p, epochs=50)
    p.add_argument("--finetune-epochs", type=int, default=25, help="epochs on seed + picks, from the seed model")
    p.add_argument("--conf", type=float, default=0.05, help="detection threshold while scoring the pool")
    p.add_argument("--strategy", default="margin")
    p.add_argument("--aggregate", default="sum")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    result = run(args)
    path = args.json or os.path.join(args.work, "active_learning.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    r = result["results"]
    for label, key in (("seed only (%d images)" % result["sizes"]["seed"], "seed"),
                       ("seed + %d by %s/%s" % (result["k"], args.strategy, args.aggregate), "uncertainty"),
                       ("seed + %d at random" % result["k"], "random"),
                       ("seed + 0 (same extra epochs)", "none")):
        print("%-30s mAP50 %.4f +- %.4f (last %d epochs; last epoch %.4f)" % (
            label, r[key]["map50"], r[key]["map50_sd"], r[key]["tail_epochs"], r[key]["map50_last_epoch"]))
    for key in ("uncertainty", "random"):
        picked = r[key]["picked"]
        print("%-11s picks: %d images, %d boxes, %d backgrounds" % (key, picked["images"], picked["boxes"],
                                                                     picked["backgrounds"]))
    pool = result["uncertainty"]["pool"]
    if pool["min"] == pool["max"]:
        print("note: every pool image scored %.4g: the seed model is untrained, so the 'uncertain' pick is in "
              "name order; use more --epochs" % pool["max"])
    elif result["uncertainty"]["picked_nonzero"] < result["k"]:
        print("note: %d of %d picks had zero uncertainty (the seed model found nothing above --conf %g there); "
              "those were taken in name order: train the seed model longer or lower --conf"
              % (result["k"] - result["uncertainty"]["picked_nonzero"], result["k"], args.conf))
    print("difference (uncertainty - random): %+.4f mAP50   (%.0f s in all; wrote %s, %s)"
          % (result["map50_difference"], result["total_s"], path, result["plot"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
