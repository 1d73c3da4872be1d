"""Accuracy of a bundle on a labelled YOLO dataset, for each inference profile, as the device computes it.

    python -m benchmarks.accuracy --bundle DIR --data data.yaml [--split val] \
        [--profiles single,ensemble,ensemble_flip,ensemble_full,cascade] [--limit N] [--decode-thr T] \
        [--ultralytics-val WEIGHTS.pt] [--report DIR]

mAP50 is computed over every fused box (the pipeline with all_scores, at the
bundle's decode threshold or --decode-thr: ultralytics validates at 0.001);
recall per category is what the device reports: boxes at or above each
profile's per-class operating thresholds (for the cascade, those of the stage
that produced the frame's boxes). With --ultralytics-val the same images are
also scored by ultralytics' own validation of the given weights, the figure
the single profile should reproduce. With --report writes JSON and a
precision-recall PNG (all classes pooled, and critical species).
"""
import argparse
import os
import sys

import numpy as np

from benchmarks.common import write_json
from edge.bundle import load_bundle
from edge.metrics import evaluate
from edge.pipeline import Pipeline
from edge.profiles import PROFILES
from trainer.profile_accuracy import evaluate_profiles
from trainer.stages.device_eval import load_ground_truth

DEFAULT_PROFILES = PROFILES  # every profile, from their one home


def paired_bootstrap(predictions_a, predictions_b, ground_truth, num_classes, resamples=200, seed=0):
    """mAP50(b) - mAP50(a) and its 95% interval, resampling images with replacement (both profiles alike)."""
    rng = np.random.RandomState(seed)
    n = len(ground_truth)
    base = evaluate(predictions_b, ground_truth, num_classes)["map50"] - evaluate(
        predictions_a, ground_truth, num_classes)["map50"]
    diffs = []
    for _ in range(resamples):
        pick = rng.randint(0, n, n)
        gt = [ground_truth[i] for i in pick]
        diffs.append(evaluate([predictions_b[i] for i in pick], gt, num_classes)["map50"]
                     - evaluate([predictions_a[i] for i in pick], gt, num_classes)["map50"])
    low, high = np.nanpercentile(diffs, [2.5, 97.5])
    return float(base), float(low), float(high)


def profile_steps(results, ground_truth, num_classes, resamples):
    """Each profile against the previous one in the order given: mAP50 difference with its interval."""
    names = list(results)
    steps = []
    for a, b in zip(names, names[1:]):
        diff, low, high = paired_bootstrap(results[a]["predictions"], results[b]["predictions"], ground_truth,
                                           num_classes, resamples)
        steps.append({"from": a, "to": b, "map50_diff": diff, "ci95": [low, high]})
    return steps


def ultralytics_val(weights, data_yaml, split, imgsz):
    """mAP50 of ultralytics' own validation (conf 0.001, IoU 0.7, max_det 300) of one model."""
    from trainer.yolo import yolo

    metrics = yolo(weights).val(data=data_yaml, split=split, imgsz=imgsz, batch=8, device="cpu", plots=False,
                                verbose=False, conf=0.001, iou=0.7)
    return float(metrics.box.map50)


PR_PANELS = (("pooled", "all classes"), ("critical", "critical species"))


def plot_pr(results, path, panels=PR_PANELS):
    """One precision-recall panel per (key, title): a line per profile from results[profile][key] (a curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        for profile, r in results.items():
            curve = r.get(key)
            if curve is not None and len(curve.recall):
                ax.plot(curve.recall, curve.precision, label="%s (AP50 %.3f)" % (profile, curve.ap50))
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall, " + title)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a category without boxes has no curve to name
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary(results):
    return {p: {k: v for k, v in r.items() if k not in ("curves", "pooled", "critical", "predictions")}
            for p, r in results.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--data", required=True, help="YOLO data.yaml")
    parser.add_argument("--split", default="val")
    parser.add_argument("--profiles", default=",".join(DEFAULT_PROFILES))
    parser.add_argument("--limit", type=int, default=None, help="first N images of the split")
    parser.add_argument("--decode-thr", type=float, default=None,
                        help="decode threshold of every model (default: the bundle's; ultralytics validates at 0.001)")
    parser.add_argument("--ultralytics-val", default=None, metavar="WEIGHTS",
                        help="also score these .pt weights with ultralytics' validation on the same split")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="paired bootstrap over images (N resamples): each profile's mAP50 change over the "
                             "previous one with a 95%% interval")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--report", default=None, help="folder for accuracy.json and precision_recall.png")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    items = load_ground_truth(args.data, args.split, args.limit)
    with Pipeline.open(bundle, backend=args.backend, decode_thr=args.decode_thr) as pipeline:
        results = evaluate_profiles(pipeline, items, args.profiles.split(","))
    print("%d images of %s (%s split), decode threshold %s" % (
        len(items), args.data, args.split, args.decode_thr or "of the bundle"))
    print("%-14s %7s %9s %9s %9s %9s" % ("profile", "mAP50", "critical", "important", "general", "frame ms"))
    for profile, r in results.items():
        rc = r["recall_by_category"]
        print("%-14s %7.3f %9s %9s %9s %9.1f" % (profile, r["map50"], *("%.3f" % rc[k] if k in rc else "-"
                                                  for k in ("critical", "important", "general")), r["frame_ms"]))
    print("(mAP50 over every fused box; recall per category at each profile's operating thresholds)")
    if "cascade" in results:
        print("cascade escalated %.1f%% of frames to the full ensemble" % (100 * results["cascade"]["escalated_share"]))
    steps = []
    if args.bootstrap:
        steps = profile_steps(results, [gt for _, gt in items], bundle.num_classes, args.bootstrap)
        for step in steps:
            print("%s -> %s: mAP50 %+.4f (95%% interval %+.4f .. %+.4f, %d paired resamples of the images)" % (
                step["from"], step["to"], step["map50_diff"], step["ci95"][0], step["ci95"][1], args.bootstrap))
    if args.ultralytics_val:
        reference = ultralytics_val(args.ultralytics_val, args.data, args.split, bundle.models[0].input_size[0])
        print("ultralytics val of %s: mAP50 %.3f" % (args.ultralytics_val, reference))
        if "single" in results:
            print("single profile minus ultralytics val: %+.4f mAP50" % (results["single"]["map50"] - reference))
        for r in results.values():
            r["ultralytics_val_map50"] = reference
    if args.report:
        os.makedirs(args.report, exist_ok=True)
        write_json(os.path.join(args.report, "accuracy.json"), summary(results))
        if steps:
            write_json(os.path.join(args.report, "profile_steps.json"), steps)
        print("wrote %s" % plot_pr(results, os.path.join(args.report, "precision_recall.png")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
