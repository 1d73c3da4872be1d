"""`python -m edge` / `reefwatch-edge`: bundle (build, verify, engines), detect, power, serve.

Each command is an (add_parser, run) pair; main() turns EdgeError and
argparse's usage errors into one line on stderr ("reefwatch-edge COMMAND:
error: ...") and exit status 2, never a traceback for bad input.
"""
import argparse
import logging
import os
import sys

from edge.console import OneLineParser, one_line, printable
from edge.engine_build import DEFAULT_WORKSPACE_MB
from edge.errors import ConfigError, EdgeError
from edge.profiles import PROFILES

BACKENDS = ("auto", "onnxruntime", "tensorrt")


def _add_bundle(subparsers):
    bundle = subparsers.add_parser("bundle", help="build or verify a model bundle, or build its TensorRT engines")
    actions = bundle.add_subparsers(dest="bundle_command", metavar="{build,verify,engines}")
    actions.required = True
    build = actions.add_parser(
        "build", help="bundle ONNX/engine models with their classes",
        description="Bundle models with their classes. Two thresholds: each model decodes at --decode-thr "
                    "(low: it only limits what feeds fusion); each inference profile reports, stores and alerts "
                    "on boxes above its operating threshold, applied after fusion and calibration. The "
                    "trainer's calibration stage fits both; these flags set them by hand.")
    build.add_argument("--model", action="append", default=[], metavar="VARIANT=PATH",
                       help="recall|balanced|precision=model.onnx (repeat for an ensemble)")
    build.add_argument("--classes", required=True,
                       help="data.yaml with names; categories from its 'categories:' map, else --critical/"
                            "--important, else general")
    build.add_argument("--critical", default="", metavar="NAMES",
                       help="comma-separated class names (or ids) that are critical, for a data.yaml without "
                            "a categories map, e.g. shark,stingray")
    build.add_argument("--important", default="", metavar="NAMES", help="likewise, the important classes")
    build.add_argument("--tta", default="full", help="none, flip, full or a comma-separated view list")
    build.add_argument("--imgsz", type=number_type(1, integer=True), default=None,
                       help="input size of models exported with a dynamic size (checked against fixed ones)")
    build.add_argument("--target", default="x86-cpu", choices=("jetson-nano", "x86-cpu", "gpu-server"))
    build.add_argument("--decode-thr", type=SCORE, default=0.01,
                       help="per-model decode threshold feeding fusion (default 0.01)")
    build.add_argument("--operating-thr", action="append", default=[], metavar="PROFILE=SCORE",
                       help="operating threshold of an inference profile (single, ensemble, ensemble_flip, "
                            "ensemble_full), repeatable; default: single = the balanced variant's 0.25, "
                            "fused profiles 0.15")
    build.add_argument("--iou", type=SCORE, default=0.5,
                       help="per-model NMS IoU threshold (default 0.5: below fusion's 0.55, so WBF never merges two "
                            "boxes one model kept apart)")
    build.add_argument("--single-label", action="store_true",
                       help="decode only each anchor's best class (ultralytics predict), not every class above the "
                            "decode threshold (ultralytics val, the default)")
    build.add_argument("--out", required=True, help="new bundle folder")
    verify = actions.add_parser("verify", help="check a bundle's schema, checksums and that its models fit it")
    verify.add_argument("bundle", help="bundle folder or .tar.gz")
    verify.add_argument("--backend", default="onnxruntime", choices=BACKENDS,
                        help="backend to run each model once on (checks outputs against the classes)")
    engines = actions.add_parser(
        "engines", help="build the bundle's TensorRT engines on this device and record them in its manifest",
        description="Build an FP16 TensorRT engine (models/NAME.engine) from each ONNX model of a bundle folder "
                    "that has none, keeping the model's fp32_layers in FP32, and record each engine (file, sha256, "
                    "TensorRT version) in manifest.json; the auto backend then runs them. Engines only load under "
                    "the TensorRT version and on the GPU that built them: run this on the Jetson. A failed build "
                    "changes nothing.")
    engines.add_argument("bundle", help="bundle folder (extract a .tar.gz first)")
    engines.add_argument("--workspace-mb", type=number_type(1, integer=True), default=DEFAULT_WORKSPACE_MB,
                         help="TensorRT builder workspace in MiB (default %d: a 4 GB Nano runs out of memory "
                              "without a limit)" % DEFAULT_WORKSPACE_MB)
    engines.add_argument("--force", action="store_true", help="rebuild the engines of models that have one")


def number_type(minimum=None, maximum=None, integer=False, strict_minimum=False):
    """An argparse `type=`: a finite number within bounds, else a one-line usage error naming the flag.

    argparse's own float() takes 'nan' and 'inf', which would pass every later comparison.
    """
    bounds = []
    if minimum is not None:
        bounds.append(("> %g" if strict_minimum else ">= %g") % minimum)
    if maximum is not None:
        bounds.append("<= %g" % maximum)
    expected = "a finite %s%s" % ("integer" if integer else "number", " " + " and ".join(bounds) if bounds else "")

    def parse(text):
        try:
            value = int(text) if integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("'%s' is not %s" % (text, "an integer" if integer else "a number"))
        too_low = minimum is not None and (value <= minimum if strict_minimum else value < minimum)
        if value != value or value in (float("inf"), float("-inf")) or too_low or (
                maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError("%s: expected %s" % (text, expected))
        return value
    return parse


SCORE = number_type(0.0, 1.0)


def _names(text):
    return [item.strip() for item in text.split(",") if item.strip()]


def _run_bundle(args, out):
    from edge.bundle_build import build_bundle, parse_model_args, parse_profile_values, read_classes

    if args.bundle_command == "verify":
        return _verify_bundle(args, out)
    if args.bundle_command == "engines":
        return _bundle_engines(args, out)
    if not 0.0 <= args.decode_thr <= 1.0:
        raise EdgeError("--decode-thr %r: expected a score in [0, 1], typically 0.001-0.05" % args.decode_thr)
    classes = read_classes(args.classes, critical=_names(args.critical), important=_names(args.important))
    bundle = build_bundle(args.out, parse_model_args(args.model), classes, tta=args.tta, target=args.target,
                          decode_thr=args.decode_thr, iou_thr=args.iou,
                          thresholds=parse_profile_values(args.operating_thr, "operating-thr"), imgsz=args.imgsz,
                          multi_label=not args.single_label)
    if args.imgsz and any(m.input_size != (args.imgsz, args.imgsz) for m in bundle.models):
        out.write("warning: --imgsz %d but the models take %s\n" % (args.imgsz, [m.input_size for m in bundle.models]))
    out.write("built %s with %s\n" % (bundle.root, ", ".join(m.name for m in bundle.models)))
    by_category = {}
    for c in bundle.classes:
        by_category.setdefault(c.category, []).append(c.name)
    out.write("  classes: %s\n" % "; ".join("%s: %s" % (k, ", ".join(v)) for k, v in sorted(by_category.items())))
    return 0


def _bundle_engines(args, out):
    from edge.bundle import MANIFEST
    from edge.bundle_engines import build_bundle_engines

    def report(engine):
        out.write(printable("  %s: %s, %.1f s, %.1f MB (TensorRT %s, %d layers FP32)\n" % (
            engine.name, engine.file, engine.build_s, engine.size_bytes / 1e6, engine.tensorrt,
            engine.constrained_layers)))
        out.flush()

    built = build_bundle_engines(args.bundle, workspace_mb=args.workspace_mb, force=args.force, on_built=report)
    manifest = os.path.join(os.path.abspath(args.bundle), MANIFEST)
    if not built:
        out.write(printable("every model of %s has an engine already; --force rebuilds them\n" % manifest))
    else:
        out.write(printable("recorded %d engine(s) in %s\n" % (len(built), manifest)))
    return 0


def _verify_bundle(args, out):
    from edge.bundle import gate_warning, load_bundle
    from edge.pipeline import Pipeline

    bundle = load_bundle(args.bundle)
    with Pipeline.open(bundle, backend=args.backend):
        pass  # opening runs each model once and checks its output against the classes
    out.write("ok: %s (schema %d)\n  models: %s\n  classes: %d (%d critical)\n  tta: %s\n" % (
        bundle.root, bundle.schema_version,
        ", ".join("%s %s%s %dx%d decode>=%g alone>=%g" % (m.name, m.format, "+engine" if m.engine_path else "",
                                                         m.input_size[1], m.input_size[0], m.decode_thr,
                                                         m.operating_thr) for m in bundle.models),
        bundle.num_classes, len(bundle.ids_in("critical")), ", ".join(v.name for v in bundle.plan)))
    for name in sorted(bundle.profiles):
        settings = bundle.profiles[name]
        out.write("  profile %-13s thresholds %s, temperatures %s\n" % (
            name, _span(settings.thresholds), _span(settings.temperatures)))
    if bundle.deployment is not None:
        out.write("  deployment: %s\n" % bundle.deployment)
    if bundle.default_profile is not None:
        out.write("  default profile: %s\n" % bundle.default_profile)
    warning = gate_warning(bundle)
    if warning:
        out.write("warning: %s\n" % warning)
    elif bundle.gate is not None:
        out.write("  gate: passed\n")
    return 0


def _span(values):
    low, high = float(min(values)), float(max(values))
    return "%.3g" % low if low == high else "%.3g-%.3g" % (low, high)


def _add_detect(subparsers):
    from edge.detect import RESULTS_FORMAT

    detect = subparsers.add_parser("detect", help="detect species in an image, folder or video",
                                   description="Run a bundle over an image, a folder of images or a video and "
                                               "write COCO-style results.", epilog=RESULTS_FORMAT,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    detect.add_argument("--bundle", required=True)
    detect.add_argument("--source", required=True,
                        help="image, folder of images, or video file; unreadable frames are skipped and listed "
                             "(exit status 2 when none could be read)")
    detect.add_argument("--out", required=True, help="COCO-style results JSON file to write (not a folder)")
    detect.add_argument("--profile", default=None, choices=PROFILES,
                        help="inference profile to run, the cascade included (default: the bundle's default "
                             "profile, the one its figures were validated at; without one, --models and --tta)")
    detect.add_argument("--tta", default=None, help="none, flip, full (default: the bundle's plan); not with "
                                                    "--profile")
    detect.add_argument("--models", default=None, help="comma-separated subset of the bundle's models; not with "
                                                       "--profile")
    detect.add_argument("--backend", default="auto", choices=BACKENDS)
    detect.add_argument("--save-images", default=None, metavar="DIR",
                        help="folder (created if absent) for frames with boxes drawn")
    detect.add_argument("--draw-thr", type=SCORE, default=0.25, help="draw boxes scoring at least this")
    detect.add_argument("--all-scores", action="store_true",
                        help="write every fused box above the decode threshold with its calibrated score, not only "
                             "what the device reports (for COCO evaluation)")
    detect.add_argument("--decode-thr", type=SCORE, default=None,
                        help="decode threshold of every model (default: the bundle's); e.g. 0.001 with --all-scores")
    detect.add_argument("--coco-gt", default=None, metavar="INSTANCES.json",
                        help="take image_id and category_id from this COCO ground truth, by file and class name")


def _run_detect(args, out):
    """Exit status 0 when at least one frame was read, 2 when none could be (after writing the empty results)."""
    from edge.bundle import load_bundle
    from edge.detect import CocoIds, check_outputs, run_detect
    from edge.images import display_name
    from edge.pipeline import Pipeline

    if args.profile is not None and (args.tta is not None or args.models is not None):
        raise ConfigError("--profile %s picks the models and views itself; drop --tta/--models, or drop --profile "
                          "to choose them" % args.profile)
    check_outputs(args.out, args.save_images)  # before loading models: a typo costs nothing
    bundle = load_bundle(args.bundle)
    coco_ids = CocoIds(args.coco_gt, bundle.names) if args.coco_gt else None
    models = args.models.split(",") if args.models else None
    profile = args.profile
    if profile is None and args.tta is None and models is None:
        profile = bundle.default_profile  # what the bundle's figures (and the daemon's default) stand for
    with Pipeline.open(bundle, backend=args.backend, decode_thr=args.decode_thr) as pipeline:
        summary = run_detect(pipeline, args.source, args.out, models=models, plan=args.tta,
                             save_images=args.save_images, progress=_progress(out), draw_thr=args.draw_thr,
                             all_scores=args.all_scores, coco_ids=coco_ids, profile=profile)
    if profile is not None:
        out.write("profile %s\n" % profile)
    encoding = getattr(out, "encoding", None) or "utf-8"

    def write(text):  # names may hold any bytes: escape what the output cannot carry instead of failing
        out.write(text.encode(encoding, "backslashreplace").decode(encoding, "replace"))

    write("%d frames, %d skipped, %d detections -> %s\n" % (
        summary["frames"], summary["skipped"], summary["detections"], display_name(summary["results"])))
    for item in summary["skipped_files"]:
        write("  skipped %s: %s\n" % (display_name(item["file_name"]), item["reason"]))
    for note in summary.get("warnings", ()):
        write("  warning: %s\n" % note)
    if summary["frames"] == 0:
        sys.stderr.write("reefwatch-edge detect: error: no frame of %s could be read; the results are empty\n"
                         % display_name(args.source))
        return 2
    return 0


def _progress(out):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return lambda items: tqdm(items, unit="frame", file=sys.stderr, disable=not sys.stderr.isatty())


def _add_power(subparsers):
    from edge.power.command import add_power_parser

    add_power_parser(subparsers)


def _run_power(args, out):
    from edge.power.command import run_power

    return run_power(args, out=out)


def _add_serve(subparsers):
    from edge.serve import add_serve_parser

    add_serve_parser(subparsers)


def _run_serve(args, out):
    from edge.serve import run_serve

    return run_serve(args, out)


COMMANDS = {
    "bundle": (_add_bundle, _run_bundle),
    "detect": (_add_detect, _run_detect),
    "power": (_add_power, _run_power),
    "serve": (_add_serve, _run_serve),
}


def build_parser():
    parser = OneLineParser(prog="reefwatch-edge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="{%s}" % ",".join(sorted(COMMANDS)))
    subparsers.required = True
    for add_parser, _ in COMMANDS.values():
        add_parser(subparsers)
    return parser


def main(argv=None, out=None):
    """Parse and run one command; 0 on success, 2 on a bad input or argument (one line on stderr)."""
    out = out or sys.stdout
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse has printed the help (0) or its one-line error (2) already
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = " ".join(n for n in (args.command, getattr(args, "bundle_command", None)) if n)
    try:
        return COMMANDS[args.command][1](args, out)
    except EdgeError as e:
        sys.stderr.write(printable("reefwatch-edge %s: error: %s\n" % (name, one_line(e))))
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("reefwatch-edge %s: interrupted\n" % name)
        return 130
