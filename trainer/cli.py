"""`python -m trainer <command>` / `reefwatch-train <command>`.

Global options: `--config training_config.yaml` (defaults when left out) and
repeatable `--set section.key=value`. A command's own flags are overrides too:
a flag whose dest is `section.key` (e.g. `--images` -> synth.images) replaces
that key, after `--set`. So precedence is: defaults < file < --set < flags.

A stage plugs in with one COMMANDS entry: name -> (add_arguments, run), where
add_arguments(parser) declares its flags and run(config, args) -> result does
the work. Errors raised on purpose (TrainerError, EdgeError) and bad arguments
become one line on stderr and exit code 2; success returns 0. Path flags are
checked as they are parsed (`existing_file`, `output_folder`, ...), so a
missing input or a file where a folder belongs is refused before work starts.
"""
import argparse
import importlib
import logging
import math
import os
import sys

from edge.console import OneLineParser, one_line, printable
from trainer.errors import ConfigError, TrainerError

logger = logging.getLogger(__name__)


# argparse `type=` checks. Each returns the text unchanged or raises ArgumentTypeError, which argparse
# reports as "argument --flag: <message>".

def _kind(path):
    return "folder" if os.path.isdir(path) else "file" if os.path.exists(path) else None


def _existing(wanted, other, what):
    def check(text):
        kind = _kind(text)
        if kind != wanted:
            raise argparse.ArgumentTypeError("%s %s; expected %s" % (
                text, "is a %s" % other if kind else "does not exist", what))
        return text
    return check


def existing_file(what):
    return _existing("file", "folder", what)


def existing_folder(what):
    return _existing("folder", "file", what)


def existing_path(what):
    def check(text):
        if _kind(text) is None:
            raise argparse.ArgumentTypeError("%s does not exist; expected %s" % (text, what))
        return text
    return check


def output_problem(path, kind):
    """Why `path` cannot become an output of `kind` ('folder' or 'file'), or None when it can."""
    if _kind(path) not in (None, kind):
        return "%s is a %s; expected a %s (or a new name)" % (path, _kind(path), kind)
    parent = os.path.dirname(os.path.abspath(path))
    while _kind(parent) is None:    # folders get created; a file on the way blocks them
        parent = os.path.dirname(parent)
    if _kind(parent) != "folder":
        return "%s cannot be created: %s is a file" % (path, parent)
    return None


def output_folder(text):
    problem = output_problem(text, "folder")
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def output_file(text):
    """A file to write whose folder already exists (nothing is created on the way)."""
    problem = output_problem(text, "file")
    if problem is None and not os.path.isdir(os.path.dirname(os.path.abspath(text))):
        problem = "folder %s does not exist; create it first" % os.path.dirname(os.path.abspath(text))
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def number(kind, low=None, high=None, low_exclusive=False):
    """A finite int or float within [low, high] (low excluded when low_exclusive)."""
    def check(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not %s" % (text, "an integer" if kind is int else "a number"))
        too_low = low is not None and (value < low or (low_exclusive and value == low))
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            bounds = [("> %s" if low_exclusive else ">= %s") % low if low is not None else None,
                      "<= %s" % high if high is not None else None]
            raise argparse.ArgumentTypeError(("%s: expected a finite number %s" % (
                text, " and ".join(b for b in bounds if b))).rstrip())
        return value
    return check


def _add_synth(parser):
    parser.add_argument("--out", dest="synth.out_dir", metavar="DIR", help="output folder (empty or new)")
    parser.add_argument("--images", dest="synth.images", type=int, metavar="N", help="number of still images")
    parser.add_argument("--classes", dest="synth.classes", type=int, metavar="N",
                        help="use the first N taxonomy classes (default 36)")
    parser.add_argument("--seed", dest="synth.seed", type=int, help="random seed (default: general.seed)")
    parser.add_argument("--imgsz", dest="synth.imgsz", type=int, help="square image size in pixels")
    parser.add_argument("--background-fraction", dest="synth.background_fraction", type=float, metavar="F",
                        help="share of stills with no animal, only distractors")
    parser.add_argument("--val-fraction", dest="synth.val_fraction", type=float, metavar="F",
                        help="share of stills and sequences put in val")
    parser.add_argument("--sequences", dest="synth.sequences", type=int, metavar="K",
                        help="number of short sequences with moving animals")
    parser.add_argument("--sequence-length", dest="synth.sequence_length", type=int, metavar="L",
                        help="frames per sequence")


def _run_synth(config, args):
    from trainer.data.synth import run_synth

    _check_output(config.synth.out_dir, "synth.out_dir (--out)")
    path = run_synth(config, progress=True)
    print(printable("wrote %s" % path))
    return path


def _add_data(parser):
    from trainer.data.commands import add_data_arguments

    add_data_arguments(parser)


def _run_data(config, args):
    from trainer.data.commands import run_data

    return run_data(args, config)


def _add_ssl(parser):
    parser.add_argument("--images", required=True, type=existing_path("a folder of images or a list file"),
                        help="folder (recursive) or list file of unlabelled images")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder: checkpoints, backbone.pt, log")
    parser.add_argument("--epochs", dest="ssl.epochs", type=int, help="default: ssl.epochs")
    parser.add_argument("--model", dest="ssl.model", help="YOLO model yaml whose backbone is pretrained")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming")


def _run_ssl(config, args):
    from trainer.config import save_config
    from trainer.ssl import check_inputs, run_ssl

    check_inputs(config.ssl, args.images)  # before anything is written to --out
    save_config(config, _beside(args.out, "training_config.yaml"))
    result = run_ssl(config.ssl, config.general, args.images, args.out, resume=not args.no_resume)
    print(printable("ssl: %d epochs, last loss %.4f; backbone %s (transfer report %s)"
                    % (result.epochs_done, result.last_loss, result.backbone_path, result.transfer_report_path)))
    return result


def _add_baseline(parser):
    parser.add_argument("--data", required=True, type=existing_file("a dataset's data.yaml"),
                        help="dataset data.yaml")
    parser.add_argument("--out", required=True, type=output_folder, help="output folder: weights and metrics.json")
    parser.add_argument("--ssl-backbone", dest="baseline.ssl_backbone", help="backbone.pt (or the ssl output folder)")
    parser.add_argument("--epochs", dest="baseline.epochs", type=int, help="default: baseline.epochs")
    parser.add_argument("--model", dest="baseline.model", help="YOLO model yaml, e.g. yolov8m.yaml")
    parser.add_argument("--device", dest="general.device", help="cpu, 0, or 0,1 for several GPUs")
    parser.add_argument("--no-resume", action="store_true", help="start over instead of resuming")


def _run_baseline(config, args):
    from trainer.config import save_config
    from trainer.stages.baseline import check_inputs, run_baseline

    backbone = config.baseline.ssl_backbone
    if backbone and not os.path.exists(backbone):
        raise ConfigError("baseline.ssl_backbone (--ssl-backbone) %s does not exist; expected the backbone.pt "
                          "or the output folder of `trainer ssl`" % backbone)
    check_inputs(args.data)  # before anything is written to --out
    save_config(config, _beside(args.out, "training_config.yaml"))
    result = run_baseline(config.baseline, config.general, args.data, args.out, resume=not args.no_resume)
    print(printable("baseline: mAP50 %.4f, mAP50-95 %.4f; weights %s; metrics %s" % (
        result.metrics.get("mAP50", float("nan")), result.metrics.get("mAP50-95", float("nan")),
        result.weights, result.metrics_path)))
    return result


def _add_active(parser):
    from trainer.active.commands import add_active_arguments

    add_active_arguments(parser)


def _run_active(config, args):
    from trainer.active.commands import run_active

    return run_active(args, config)


def stage_command(module, summary):
    """(add_arguments, run) of a stage module offering add_arguments(parser) and run_command(config, args),
    imported only when the command is used (the stages pull in torch, ultralytics and ONNX Runtime)."""
    def add(parser):
        importlib.import_module(module).add_arguments(parser)

    def run(config, args):
        return importlib.import_module(module).run_command(config, args)

    run.__doc__ = summary
    return add, run


def _check_output(folder, where):
    problem = output_problem(folder, "folder")
    if problem:
        raise ConfigError("%s: %s" % (where, problem))


def _beside(folder, name):
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, name)


# name -> (add_arguments(parser), run(config, args) -> result or exit status). Add a stage here.
COMMANDS = {
    "synth": (_add_synth, _run_synth),
    "data": (_add_data, _run_data),
    "ssl": (_add_ssl, _run_ssl),
    "baseline": (_add_baseline, _run_baseline),
    "active": (_add_active, _run_active),
    "specialize": stage_command("trainer.stages.specialize", "Week 4: critical-species oversampling and "
                                "hard-negative mining through the device's pipeline."),
    "ensemble": stage_command("trainer.stages.ensemble", "Week 5: the variants the device runs (recall, balanced, "
                              "precision, ...), fine-tuned from the specialized weights."),
    "export": stage_command("trainer.stages.export", "Week 6: ONNX for TensorRT 8.2 with an FP16 parity check per "
                            "variant, and the engines or their build script."),
    "calibrate": stage_command("trainer.stages.calibrate", "Week 6: temperatures and operating thresholds per "
                               "inference profile, fitted through the device's pipeline."),
    "bundle": stage_command("trainer.stages.bundle", "Week 6: the edge bundle with accuracy and energy measured "
                            "through edge's pipeline, behind the budget gate."),
    "run-all": stage_command("trainer.run_all", "Weeks 1-6 in one resumable command: synth or --data, ssl, "
                             "baseline, active, specialize, ensemble, export, calibrate, bundle."),
}


def build_parser(commands=None):
    commands = COMMANDS if commands is None else commands
    parser = OneLineParser(prog="reefwatch-train", description="ReefWatch training pipeline")
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="training_config.yaml to read (default: built-in defaults, "
                             "see trainer/configs/training_config.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config key (repeatable), e.g. --set ssl.epochs=5")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (add_arguments, run) in commands.items():
        add_arguments(sub.add_parser(name, help=(run.__doc__ or "").strip().split("\n")[0] or None))
    return parser


def flag_overrides(args):
    """'section.key=value' strings for every command flag that was given."""
    overrides = []
    for dest, value in sorted(vars(args).items()):
        if "." in dest and value is not None:
            # YAML-quote strings so a path like 'null' or '1e3' stays a string.
            text = value if not isinstance(value, str) else "'%s'" % value.replace("'", "''")
            overrides.append("%s=%s" % (dest, text))
    return overrides


def main(argv=None, commands=None):
    """Parse, load the config, run the command; 0 on success, 2 on a bad input (one line on stderr)."""
    from edge.errors import EdgeError
    from trainer.config import load_config

    commands = COMMANDS if commands is None else commands
    try:
        args = build_parser(commands).parse_args(argv)
    except SystemExit as e:     # argparse has printed usage or help already
        return e.code if isinstance(e.code, int) else 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        config = load_config(args.config, list(args.overrides) + flag_overrides(args))
        result = commands[args.command][1](config, args)
    except (TrainerError, EdgeError) as e:
        print(printable("reefwatch-train %s: error: %s" % (args.command, one_line(e))), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reefwatch-train %s: interrupted" % args.command, file=sys.stderr)
        return 130
    # A stage may answer with an exit status (1: validation found problems, an import was rejected).
    return result if isinstance(result, int) and not isinstance(result, bool) else 0
