"""One benchmark suite for a bundle: everything it is judged on, per inference profile.

    python -m benchmarks run --bundle DIR --data data.yaml --out DIR [--split val]
        [--profiles single,ensemble,ensemble_flip,ensemble_full,cascade] [--limit N] [--frames N]
        [--meter auto] [--deployment FIELD=VALUE,...] [--daemon-frames N [--daemon-profile P]]
        [--compare ultralytics --weights VARIANT=PATH.pt ...]

Per profile: accuracy on the split's labelled images (mAP50 by edge.metrics and by
faster-coco-eval, mAP50-95, recall per category and for critical species at the profile's
operating thresholds, D-ECE), latency p50 / p95 and frames per second over --frames frames,
energy per frame gross and net of idle with the meter's name and whether it is measured or
estimated, Wh/day for the bundle's deployment profile against its budget, and the time outside
the backend calls against benchmarks.pipeline's targets; with --daemon-frames N also the whole
daemon loop against the bare pipeline (benchmarks.daemon). The parts are benchmarks.suite_measure's,
which call the code `trainer bundle` and the single benchmarks use.
With --compare ultralytics the same images also go through ultralytics' predict on each
variant's ONNX and .pt and with its augment=True TTA (benchmarks.compare_ultralytics).

--out must be new or empty: the results are written to a temporary folder beside it and
renamed into place at the end (report.md, results.json, PNG plots; benchmarks.suite_report),
so an interrupted run leaves nothing half-written.
"""
import argparse
import datetime
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from benchmarks.common import machine_facts, write_json
from benchmarks.energy import benchmark_deployment
from edge.errors import EdgeError
from edge.power.auto import meter_names
from edge.profiles import PROFILES, check_profile, single_model
from trainer.errors import ConfigError, TrainerError

COMPARISONS = ("ultralytics",)
VERSIONED = ("numpy", "onnxruntime", "faster-coco-eval", "ultralytics", "torch")
RESULTS, REPORT = "results.json", "report.md"


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m benchmarks run", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle folder or .tar.gz")
    parser.add_argument("--data", required=True, help="YOLO data.yaml with the labelled split")
    parser.add_argument("--split", default="val")
    parser.add_argument("--out", required=True, help="a new or empty folder for report.md, results.json, plots")
    parser.add_argument("--profiles", default=",".join(PROFILES))
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="first N images of the split")
    parser.add_argument("--frames", type=int, default=20, metavar="N",
                        help="frames per profile for latency and for the energy window")
    parser.add_argument("--decode-thr", type=float, default=None,
                        help="every model's decode threshold (default: the bundle's)")
    parser.add_argument("--meter", default="auto", choices=meter_names(),
                        help="power meter as `edge serve` picks it (auto: a sensor, else the estimate)")
    parser.add_argument("--idle-seconds", type=float, default=2.0, help="idle window before the profiles (0: none)")
    parser.add_argument("--deployment", default="", metavar="FIELD=VALUE,...",
                        help="change fields of the bundle's deployment profile for Wh/day")
    parser.add_argument("--backend", default="onnxruntime")
    parser.add_argument("--compare", default=None, choices=COMPARISONS,
                        help="also run the reference detector on the same images")
    parser.add_argument("--weights", action="append", default=[], metavar="VARIANT=PATH.pt",
                        help="the .pt of a bundle variant for --compare (repeat per variant)")
    parser.add_argument("--daemon-frames", type=int, default=0, metavar="N",
                        help="also run N frames through the whole daemon loop against the bare pipeline (0: skip)")
    parser.add_argument("--daemon-profile", default=None, choices=PROFILES,
                        help="profile of the daemon part (default: the bundle's default profile, else the first "
                             "of --profiles)")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def check_args(args):
    """ConfigError naming the option when --out, --profiles, --limit, --frames or --compare cannot work."""
    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        raise ConfigError("--out %s exists and is not an empty folder; choose a new one (results are never "
                          "overwritten)" % args.out)
    profiles = [p.strip() for p in args.profiles.split(",") if p.strip()]
    if not profiles:
        raise ConfigError("--profiles %r names no profile; expected some of %s" % (args.profiles, ", ".join(PROFILES)))
    try:
        for p in profiles:
            check_profile(p)
    except EdgeError as e:
        raise ConfigError("--profiles: %s" % e) from e
    for name, least in (("limit", 1), ("frames", 1), ("daemon_frames", 0)):
        value = getattr(args, name)
        if value is not None and value < least:
            raise ConfigError("--%s %d: expected at least %d" % (name.replace("_", "-"), value, least))
    if args.weights and not args.compare:
        raise ConfigError("--weights is for --compare ultralytics; add --compare ultralytics or drop --weights")
    if args.compare and not args.weights:
        raise ConfigError("--compare %s needs the .pt of at least one variant: --weights balanced=PATH.pt"
                          % args.compare)
    return profiles


def _progress(enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return lambda items, what: tqdm(items, desc=what, leave=False)


def read_inputs(args):
    """(profiles, Bundle, [(path, ground truth)], {variant: .pt}) or ConfigError naming the option at fault."""
    from edge.bundle import load_bundle
    from trainer.stages.device_eval import load_ground_truth

    profiles = check_args(args)
    try:
        bundle = load_bundle(args.bundle)
    except EdgeError as e:
        raise ConfigError("--bundle %s: %s" % (args.bundle, e)) from e
    try:
        items = load_ground_truth(args.data, args.split, args.limit)
    except TrainerError as e:
        raise ConfigError("--data %s: %s" % (args.data, e)) from e
    if not items:
        raise ConfigError("--data %s: the %s split has no images" % (args.data, args.split))
    return profiles, bundle, items, _weights(args, bundle)


def run_suite(args, command):
    """(all figures of the suite as one JSON-ready dict, curves for the plots); see the module docstring."""
    from edge.images import read_image
    from edge.pipeline import Pipeline
    from benchmarks import suite_measure

    profiles, bundle, items, weights = read_inputs(args)
    deployment = benchmark_deployment(bundle, args.deployment)
    progress = _progress(not args.no_progress)
    with Pipeline.open(bundle, backend=args.backend, decode_thr=args.decode_thr) as pipeline:
        accuracy, curves = suite_measure.measure_accuracy(pipeline, items, profiles, progress)
        frames = [read_image(path) for path, _ in items[:args.frames]]
        latency = suite_measure.measure_latency(pipeline, frames, profiles, args.frames, progress=progress)
        energy = suite_measure.measure_energy(pipeline, frames, profiles, args.frames, args.meter, deployment,
                                              args.idle_seconds, progress)
    decode_thr = [m.decode_thr for m in bundle.models] if args.decode_thr is None else args.decode_thr
    # The paths as given (the command is in the provenance): a committed report names no machine's folders.
    results = {"provenance": provenance(command), "bundle": args.bundle, "data": args.data,
               "split": args.split, "images": len(items), "frames": args.frames, "decode_thr": decode_thr,
               "profiles": profiles, "single_model": single_model(bundle).variant, "accuracy": accuracy,
               "latency": latency, "energy": energy, "daemon": None, "comparison": None}
    if args.daemon_frames:
        profile = args.daemon_profile or bundle.default_profile or profiles[0]
        results["daemon"] = suite_measure.measure_daemon(args.bundle, [p for p, _ in items], args.daemon_frames,
                                                         profile, args.meter, args.backend)
    if weights:
        from benchmarks.compare_ultralytics import compare

        results["comparison"] = compare(bundle, weights, items, progress)
    return results, curves


def _weights(args, bundle):
    if not args.compare:
        return {}
    from benchmarks.compare_ultralytics import parse_weights

    return parse_weights(args.weights, bundle)


def package_versions(names=VERSIONED):
    """{distribution: version or None} read from installed metadata (nothing imported)."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision(folder=None):
    """`git rev-parse HEAD` of the checkout holding this package, or None outside a git checkout."""
    folder = folder or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def provenance(command):
    return {"machine": machine_facts(), "versions": package_versions(), "command": command,
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "git_revision": git_revision()}


def write_outputs(out, results, curves):
    """report.md, results.json and the plots into a temporary folder beside `out`, then renamed to `out`."""
    from benchmarks import suite_report

    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".%s.partial-" % os.path.basename(os.path.abspath(out)), dir=parent)
    try:
        results["plots"] = suite_report.write_plots(staging, results, curves)
        write_json(os.path.join(staging, RESULTS), results)
        suite_report.write_report(os.path.join(staging, REPORT), results)
        if os.path.isdir(out):
            os.rmdir(out)  # empty, checked before measuring; rename cannot replace a folder
        os.rename(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    command = "python -m benchmarks run " + " ".join(shlex.quote(a) for a in argv)
    try:
        results, curves = run_suite(args, command)
        write_outputs(args.out, results, curves)
    except (ConfigError, TrainerError, EdgeError) as e:
        print("benchmarks run: error: %s" % e, file=sys.stderr)
        return 2
    from benchmarks.suite_report import summary_lines

    for line in summary_lines(results):
        print(line)
    print("wrote %s (report.md, results.json, %d plots)" % (args.out, len(results["plots"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
