"""Per-frame time of a bundle's pipeline, split into backend inference and everything else.

    python -m benchmarks.pipeline --bundle DIR --images DIR [--frames 20] [--tta full] [--threads N]
        [--decode-thr 0.001] [--models balanced]

Runs the chosen models of the bundle (default all: 3 models x 7 views for a
full ensemble) over every view of the plan at the given decode threshold
(default 0.001, an evaluator's; the device's default is 0.01), first with all
views of a frame in one backend call, then with one call per view, and prints
medians: frame time, inference time, the non-inference share against its
target (<= 5% for one model, <= 8% for three) and the batching speed-up.
Everything but the backend calls counts as overhead: letterboxing, decoding
and NMS, TTA inversion, both fusion stages, calibration.
"""
import argparse
import os
import sys

from benchmarks.common import load_images, machine_facts, median_ms, write_json
from edge.bundle import load_bundle
from edge.pipeline import Pipeline


TARGET_SHARE = {1: 0.05, 3: 0.08}


def measure(pipeline, frames, warmup, plan, models=None):
    timings = []
    for i, frame in enumerate(frames):
        pipeline.detect(frame, models=models, plan=plan, all_scores=True)
        if i >= warmup:
            timings.append(pipeline.last_timing)
    total = [t.total_s for t in timings]
    inference = [t.inference_s for t in timings]
    other = [t.total_s - t.inference_s for t in timings]
    return {
        "frames": len(timings),
        "calls_per_frame": timings[0].calls,
        "views": timings[0].views,
        "frame_ms": median_ms(total),
        "inference_ms": median_ms(inference),
        "other_ms": median_ms(other),
        "other_share": sorted(o / t for o, t in zip(other, total))[len(total) // 2],
    }


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--frames", type=int, default=20, help="frames measured (cycled over the images)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tta", default=None, help="view plan (default: the bundle's)")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads")
    parser.add_argument("--decode-thr", type=float, default=0.001, help="every model's decode threshold")
    parser.add_argument("--models", default=None, help="comma-separated subset of the bundle's models")
    parser.add_argument("--modes", default="batched,per_view", help="batched and/or per_view")
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    bundle = load_bundle(args.bundle)
    images = load_images(args.images)
    frames = [images[i % len(images)] for i in range(args.frames + args.warmup)]
    options = {"intra_op_threads": args.threads} if args.threads else {}
    models = args.models.split(",") if args.models else None
    n_models = len(models) if models else len(bundle.models)
    results = {}
    modes = [m for m in ("batched", "per_view") if m in args.modes.split(",")]
    for label in modes:
        with Pipeline.open(bundle, backend=args.backend, batch_views=label == "batched",
                           decode_thr=args.decode_thr, **options) as pipeline:
            results[label] = measure(pipeline, frames, args.warmup, args.tta, models)
    first = results[modes[0]]
    # Other jobs on the machine stretch both parts of the frame unevenly: say how busy it was.
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print("bundle %s: %d models x %d views, input %s, decode threshold %g, %s, load average %s" % (
        bundle.root, n_models, first["views"], bundle.models[0].input_size, args.decode_thr, machine_facts(),
        "n/a" if load is None else "%.2f %.2f %.2f" % load))
    print("%-9s %6s %10s %13s %10s %12s" % ("mode", "calls", "frame ms", "inference ms", "other ms", "other share"))
    for label, r in results.items():
        print("%-9s %6d %10.1f %13.1f %10.2f %11.1f%%" % (label, r["calls_per_frame"], r["frame_ms"],
                                                         r["inference_ms"], r["other_ms"], 100 * r["other_share"]))
    target = TARGET_SHARE.get(n_models)
    if target is not None:
        share = first["other_share"]
        print("non-inference share %.1f%% (%s) against the target <= %.0f%% for %d model(s): %s" % (
            100 * share, modes[0], 100 * target, n_models, "PASS" if share <= target else "MISS"))
    speedup = None
    if len(results) == 2:
        speedup = results["per_view"]["frame_ms"] / results["batched"]["frame_ms"]
        print("batching views into one call: %.2fx faster per frame (median of %d frames)"
              % (speedup, results["batched"]["frames"]))
    if args.json:
        write_json(args.json, {"results": results, "batching_speedup": speedup, "machine": machine_facts(),
                               "load_average": load})
    return 0


if __name__ == "__main__":
    sys.exit(main())
