"""Frames/s through the whole daemon loop versus the raw pipeline, same frames and profile.

    python -m benchmarks.daemon --bundle DIR --images DIR [--frames 100] [--profile ensemble_full] [--repeats 3]

The daemon runs as `serve` would (folder source without watching, SQLite
store with its per-frame fsync, crops, power sampler with an energy window
per stage, HTTP status on 127.0.0.1), unpaced. The raw pipeline runs the
same profile on the same frames, already decoded. Both are warmed up first;
each is repeated and the medians are compared (target: daemon >= 95% of raw).
The daemon's figure includes reading and decoding each image file.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

from benchmarks.common import load_images, machine_facts, write_json
from edge.bundle import load_bundle
from edge.config import load_edge_config
from edge.daemon import Daemon, source_factory_for
from edge.daemon_reload import open_pipeline_factory
from edge.images import list_images
from edge.pipeline import Pipeline
from edge.power.auto import MeterOptions, meter_names, open_meter
from edge.profiles import PROFILES, run_profile, settings_from_config

TARGET_RATIO = 0.95


def frame_folder(images_dir, frames, dest):
    """`frames` links named in order into `dest`, cycling over the images of `images_dir`."""
    paths = list_images(images_dir)
    os.makedirs(dest)
    for i in range(frames):
        path = paths[i % len(paths)]
        os.symlink(os.path.abspath(path), os.path.join(dest, "%06d%s" % (i, os.path.splitext(path)[1])))
    return dest


def bench_config(args, folder, work):
    return load_edge_config(None, dict(
        bundle=args.bundle, source=folder, store_path=os.path.join(work, "store.sqlite"),
        crops_dir=os.path.join(work, "crops"), http_address="127.0.0.1:0", profile=args.profile,
        budget_wh_day=1.0e6, meter=args.meter, store_synchronous=args.synchronous,
        critical_classes=[] if args.no_crops else None))


def raw_run(args, images, config):
    """Seconds per frame of the bare pipeline over the frames (after warm-up)."""
    bundle = load_bundle(args.bundle)
    settings = settings_from_config(bundle, config)
    with Pipeline.open(bundle, backend=args.backend) as pipeline:
        for i in range(args.warmup):
            run_profile(pipeline, images[i % len(images)], args.profile, settings)
        times = []
        for i in range(args.frames):
            start = time.perf_counter()
            run_profile(pipeline, images[i % len(images)], args.profile, settings)
            times.append(time.perf_counter() - start)
    return times


def _warm_factory(args, images, config):
    opener = open_pipeline_factory(args.backend)

    def factory(path):
        pipeline = opener(path)
        settings = settings_from_config(pipeline.bundle, config)
        for i in range(args.warmup):
            run_profile(pipeline, images[i % len(images)], args.profile, settings)
        return pipeline
    return factory


class _TimedSource(object):
    """Wraps a source; `marks` gets the time each frame is handed out and when the source ends."""

    def __init__(self, source, marks):
        self.source, self.marks = source, marks

    def __iter__(self):
        for frame in self.source:
            self.marks.append(time.perf_counter())
            yield frame
        self.marks.append(time.perf_counter())

    def close(self):
        self.source.close()


def daemon_run(args, images, folder, work):
    """(seconds from the first frame to the end of the last, the daemon's summary)."""
    config = bench_config(args, folder, work)
    plain = source_factory_for(config, watch=False)
    marks = []
    choice = open_meter(config.meter, MeterOptions())
    try:
        daemon = Daemon(config, pipeline_factory=_warm_factory(args, images, config), meter=choice.meter,
                        meter_skipped=choice.skipped, pace=False,
                        source_factory=lambda stop, wait: _TimedSource(plain(stop, wait), marks))
        summary = daemon.run()
    finally:
        choice.meter.close()
    if summary["processed"] != args.frames:
        raise RuntimeError("the daemon processed %d of %d frames: %s" % (summary["processed"], args.frames, summary))
    return marks[-1] - marks[0], summary


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--profile", default="ensemble_full", choices=PROFILES)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--meter", default="auto", choices=meter_names())
    parser.add_argument("--synchronous", default="FULL", choices=("FULL", "NORMAL"),
                        help="store fsync mode (FULL, the daemon's default: one fsync per frame)")
    parser.add_argument("--no-crops", action="store_true",
                        help="no critical classes: no crops (and no critical-class cascade escalation)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    return parser


def run_repeats(args):
    """(raw frames/s per repeat, daemon frames/s per repeat, raw seconds per frame, the last daemon summary)."""
    images = load_images(args.images)
    raw_fps, daemon_fps, raw_frame_s, summary = [], [], [], None
    root = tempfile.mkdtemp(prefix="reefwatch-bench-daemon-")
    try:
        folder = frame_folder(args.images, args.frames, os.path.join(root, "frames"))
        for repeat in range(args.repeats):
            times = raw_run(args, images, bench_config(args, folder, root))
            raw_frame_s.extend(times)
            raw_fps.append(len(times) / sum(times))
            work = os.path.join(root, "run%d" % repeat)
            os.makedirs(work)
            elapsed_s, summary = daemon_run(args, images, folder, work)
            daemon_fps.append(args.frames / elapsed_s)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return raw_fps, daemon_fps, raw_frame_s, summary


def main(argv=None):
    args = build_parser().parse_args(argv)
    raw_fps, daemon_fps, raw_frame_s, summary = run_repeats(args)
    raw, daemon = statistics.median(raw_fps), statistics.median(daemon_fps)
    ratio = daemon / raw
    print("bundle %s, profile %s, %d frames x %d repeats, %s" % (args.bundle, args.profile, args.frames,
                                                                args.repeats, machine_facts()))
    print("%-22s %10s %14s" % ("", "frames/s", "ms per frame"))
    print("%-22s %10.2f %14.2f" % ("raw pipeline", raw, 1000.0 / raw))
    print("%-22s %10.2f %14.2f" % ("daemon (full loop)", daemon, 1000.0 / daemon))
    print("daemon overhead: %.2f ms per frame (read + decode, store %s, crops %s, energy windows, status)" % (
        1000.0 / daemon - 1000.0 / raw, args.synchronous, "off" if args.no_crops else "on"))
    print("daemon / raw: %.1f%% (target >= %.0f%%) %s; raw per-frame median %.2f ms; last run: %s" % (
        100 * ratio, 100 * TARGET_RATIO, "ok" if ratio >= TARGET_RATIO else "BELOW TARGET",
        1000.0 * statistics.median(raw_frame_s), {k: v for k, v in summary.items() if k != "loop_s"}))
    if args.json:
        write_json(args.json, {"profile": args.profile, "frames": args.frames, "repeats": args.repeats,
                               "raw_fps": raw_fps, "daemon_fps": daemon_fps, "raw_fps_median": raw,
                               "daemon_fps_median": daemon, "ratio": ratio, "target_ratio": TARGET_RATIO,
                               "machine": machine_facts()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
