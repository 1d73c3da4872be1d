"""The `active` command group: select (pool -> vendor package) and import (vendor COCO -> dataset).

`add_active_parser(subparsers)` registers it; `run_active(args, config, stream)`
runs it and writes its summary to `stream`. TrainerError/DataError propagate
to main(). `active import` returns 1 when the annotations were rejected.
"""
from __future__ import annotations

import os
import sys

from trainer.active import uncertainty as unc
from trainer.active.select import DEFAULT_MAX_DISTANCE, SelectOptions, run_select
from trainer.active.vendor_import import import_vendor, write_report
from trainer.cli import existing_file, existing_folder, existing_path, number, output_file, output_folder, printable

UNIT = number(float, 0.0, 1.0)


def add_active_parser(subparsers):
    p = subparsers.add_parser("active", help="active learning: choose images to annotate, import annotations")
    add_active_arguments(p)
    return p


def add_active_arguments(p):
    """Flags whose dest is `active.<key>` override training_config.yaml's active section."""
    sub = p.add_subparsers(dest="active_command", required=True)

    sel = sub.add_parser("select", help="score an unlabelled pool and package the K most uncertain images")
    sel.add_argument("--model", required=True, type=existing_path("an .onnx file, a bundle folder/.tar.gz or a .pt"),
                     help=".onnx file, ensemble bundle folder/.tar.gz, or .pt checkpoint")
    sel.add_argument("--pool", required=True, type=existing_folder("a folder of unlabelled images"),
                     help="folder of unlabelled images (searched recursively)")
    sel.add_argument("--k", dest="active.k", type=int, help="images to pick (default: active.k)")
    sel.add_argument("--out", required=True, type=output_file, help="package zip to write")
    sel.add_argument("--strategy", dest="active.strategy", choices=unc.STRATEGIES,
                     help="per-detection uncertainty (disagreement needs an ensemble bundle; default active.strategy)")
    sel.add_argument("--aggregate", dest="active.aggregate", choices=unc.AGGREGATES,
                     help="per image (default active.aggregate)")
    sel.add_argument("--low-conf", dest="active.low_conf", type=float,
                     help="least_confidence counts boxes below this score (default active.low_conf)")
    sel.add_argument("--conf", dest="active.conf", type=float,
                     help="detection threshold while scoring (default active.conf)")
    sel.add_argument("--draft-conf", type=UNIT, default=0.25,
                     help="boxes at or above this go into the package as drafts (default 0.25)")
    sel.add_argument("--empty-score", type=number(float), default=0.0,
                     help="score of an image without detections (default 0; raise to rank empty frames first)")
    sel.add_argument("--match-iou", type=UNIT, default=unc.DEFAULT_MATCH_IOU,
                     help="disagreement: IoU for two models' boxes to agree (default 0.5)")
    sel.add_argument("--max-distance", dest="active.dedupe_hamming", type=int,
                     help="near-duplicate threshold in bits of the 64-bit perceptual hash (default active.dedupe_hamming)")
    sel.add_argument("--imgsz", type=number(int, 32), default=640, help="input size for a .pt export or a dynamic ONNX")
    sel.add_argument("--names", type=existing_file("a data.yaml with names"),
                     help="data.yaml giving class names when the ONNX carries none")

    imp = sub.add_parser("import", help="validate a vendor's COCO annotations and merge them all-or-nothing")
    imp.add_argument("--coco", required=True, type=existing_file("the annotated COCO JSON"),
                     help="annotated COCO JSON returned by the vendor")
    imp.add_argument("--images", type=existing_folder("the folder of annotated images"),
                     help="folder of the annotated images (default: the --package's images)")
    imp.add_argument("--into", required=True, type=output_folder,
                     help="dataset folder to merge into (created when absent)")
    imp.add_argument("--package", type=existing_file("the package zip written by `active select`"),
                     help="the package zip that was sent: images must be in it, byte for byte")
    imp.add_argument("--report", type=output_folder,
                     help="folder for the import report (default: beside the COCO file)")
    imp.add_argument("--taxonomy", type=existing_file("a taxonomy yaml"),
                     help="taxonomy yaml for a new dataset (default: the packaged one)")
    return p


def _active_settings(args, config):
    """The active section: the resolved config's when given, else the flags over the section defaults."""
    if config is not None:
        section = config.active
        return {k: getattr(section, k) for k in ("k", "strategy", "aggregate", "low_conf", "conf", "dedupe_hamming")}
    from trainer.config import load_config

    section = load_config().active
    return {k: (getattr(args, "active." + k, None) if getattr(args, "active." + k, None) is not None
                else getattr(section, k))
            for k in ("k", "strategy", "aggregate", "low_conf", "conf", "dedupe_hamming")}


def run_active(args, config=None, stream=None):
    """Run `active <command>`; 0 on success, 1 when an import was rejected."""
    stream = stream or sys.stdout
    if args.active_command == "select":
        active = _active_settings(args, config)
        options = SelectOptions(k=active["k"], strategy=active["strategy"], aggregate=active["aggregate"],
                                low_conf=active["low_conf"], conf=active["conf"], draft_conf=args.draft_conf,
                                empty_score=args.empty_score, match_iou=args.match_iou,
                                max_distance=active["dedupe_hamming"], imgsz=args.imgsz)
        summary = run_select(args.model, args.pool, args.out, options, names_file=args.names)
        stream.write(printable("selected %d of %d pool images (%s, %s) into %s\n"
                               % (summary["k"], summary["pool_size"], options.strategy, options.aggregate, args.out)))
        stream.write("  draft boxes: %d, unreadable images skipped: %d\n" % (summary["drafts"], summary["skipped"]))
        return 0
    if args.active_command == "import":
        taxonomy = args.taxonomy or getattr(config, "taxonomy", None)
        report = import_vendor(args.coco, args.images, args.into, package=args.package,
                               taxonomy_path=taxonomy if isinstance(taxonomy, str) else None)
        folder = args.report or os.path.dirname(os.path.abspath(args.coco))
        stem = os.path.splitext(os.path.basename(args.coco))[0] + ".import_report"
        paths = write_report(report, folder, stem)
        stream.write(printable(report.to_text() + "".join("  wrote %s\n" % path for path in paths)))
        return 0 if report.merged else 1
    raise ValueError("unknown active command %r" % args.active_command)  # argparse prevents this
