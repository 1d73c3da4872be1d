"""Per-frame time of a bundle's pipeline, split into backend inference and everything else.

    python -m benchmarks.pipeline --bundle DIR --images DIR [--frames 20] [--tta full] [--threads N]

Runs every model of the bundle over every view of the plan (3 models x 7 views
for a full ensemble), first with all views of a frame in one backend call, then
with one call per view, and prints medians: frame time, inference time, the
non-inference share (target <= 5%) and the batching speed-up.
"""
import argparse
import sys

from benchmarks.common import load_images, machine_facts, median_ms, write_json
from edge.bundle import load_bundle
from edge.pipeline import Pipeline


def measure(pipeline, frames, warmup, plan):
    timings = []
    for i, frame in enumerate(frames):
        pipeline.detect(frame, plan=plan)
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
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    bundle = load_bundle(args.bundle)
    images = load_images(args.images)
    frames = [images[i % len(images)] for i in range(args.frames + args.warmup)]
    options = {"intra_op_threads": args.threads} if args.threads else {}
    results = {}
    for label, batch_views in (("batched", True), ("per_view", False)):
        with Pipeline.open(bundle, backend=args.backend, batch_views=batch_views, **options) as pipeline:
            results[label] = measure(pipeline, frames, args.warmup, args.tta)
    speedup = results["per_view"]["frame_ms"] / results["batched"]["frame_ms"]
    print("bundle %s: %d models x %d views, input %s, %s" % (
        bundle.root, len(bundle.models), results["batched"]["views"], bundle.models[0].input_size, machine_facts()))
    print("%-9s %6s %10s %13s %10s %12s" % ("mode", "calls", "frame ms", "inference ms", "other ms", "other share"))
    for label, r in results.items():
        print("%-9s %6d %10.1f %13.1f %10.2f %11.1f%%" % (label, r["calls_per_frame"], r["frame_ms"],
                                                         r["inference_ms"], r["other_ms"], 100 * r["other_share"]))
    print("batching views into one call: %.2fx faster per frame (median of %d frames)"
          % (speedup, results["batched"]["frames"]))
    if args.json:
        write_json(args.json, {"results": results, "batching_speedup": speedup, "machine": machine_facts()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
