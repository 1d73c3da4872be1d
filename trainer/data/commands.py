"""The `data` command group: import, validate, split.

`add_data_parser(subparsers)` registers it; `run_data(args, config, stream)`
runs it and writes its summary to `stream`. DataError propagates to main().
"""
from __future__ import annotations

import os
import sys

from trainer.cli import existing_file, existing_folder, existing_path, number, output_folder, printable
from trainer.data import importers, report, split, validate
from trainer.data.taxonomy import load_taxonomy
from trainer.errors import DataError

RATIO_SUM_TOL = 1e-6


def add_data_parser(subparsers):
    p = subparsers.add_parser("data", help="import, validate and split datasets")
    add_data_arguments(p)
    return p


def add_data_arguments(p):
    sub = p.add_subparsers(dest="data_command", required=True)

    imp = sub.add_parser("import", help="import a COCO/YOLO/VOC/DeepFish source into a YOLO dataset")
    imp.add_argument("--format", required=True, choices=sorted(importers.READERS), dest="fmt")
    imp.add_argument("--src", required=True, type=existing_path("a COCO JSON, a data.yaml, a VOC folder or a CSV"),
                     help="source file or folder (COCO JSON, data.yaml, VOC, CSV)")
    imp.add_argument("--out", required=True, type=output_folder,
                     help="dataset folder (created, or extended all-or-nothing)")
    imp.add_argument("--source", help="source name for the taxonomy's label map (e.g. aquarium, fathomnet)")
    imp.add_argument("--images", type=existing_folder("a folder of images"),
                     help="folder to look for images by file name (COCO/VOC/CSV)")
    imp.add_argument("--drop-unmapped", action="store_true",
                     help="drop boxes with unmapped labels instead of quarantining their images")

    val = sub.add_parser("validate", help="check a dataset and write a report")
    val.add_argument("dataset")
    val.add_argument("--report", type=output_folder, help="folder for validation.{json,md} and the class chart")
    val.add_argument("--fix", action="store_true", help="clip labels and move bad records to quarantine/")

    spl = sub.add_parser("split", help="grouped, category-stratified train/val/test lists")
    spl.add_argument("dataset")
    spl.add_argument("--out", required=True, type=output_folder,
                     help="folder for train.txt, val.txt, test.txt and data.yaml")
    spl.add_argument("--ratios", type=number(float, 0.0, 1.0), nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                     help="split ratios (default: data.train_fraction, val_fraction, test_fraction)")
    spl.add_argument("--group-pattern", dest="data.group_pattern", metavar="REGEX",
                     help="regex on the file name giving the video/sequence key (default: data.group_pattern)")
    spl.add_argument("--seed", dest="general.seed", type=int, metavar="N", help="default: general.seed")
    for q in (imp, val, spl):
        q.add_argument("--taxonomy", type=existing_file("a taxonomy yaml"),
                       help="taxonomy yaml (default: the packaged 36-class one)")
    return p


def _taxonomy(args, config):
    path = getattr(args, "taxonomy", None) or (config.data.taxonomy if config is not None else None)
    return load_taxonomy(path if isinstance(path, str) else None)


def run_data(args, config=None, stream=None):
    """Run `data <command>`; 0 on success, 1 when validation found bad records."""
    stream = stream or sys.stdout
    taxonomy = _taxonomy(args, config)
    if args.data_command == "import":
        if args.fmt == "coco" and os.path.isdir(args.src):
            raise DataError("--src %s is a folder; a COCO import reads one JSON file (images go in --images)"
                            % args.src)
        rep = importers.import_dataset(args.fmt, args.src, args.out, taxonomy, source=args.source,
                                       images_dir=args.images, drop_unmapped=args.drop_unmapped)
        stem = "import_%s" % args.fmt
        paths = report.write_report(rep, os.path.join(args.out, "reports"), stem,
                                    "Import %s from %s" % (args.fmt, args.src), taxonomy)
        _emit(stream, "imported %s into %s" % (args.src, args.out), rep, paths)
        return 0
    if args.data_command == "validate":
        rep = validate.validate_dataset(args.dataset, taxonomy, fix=args.fix)
        paths = []
        if args.report:
            paths = report.write_report(rep, args.report, "validation", "Validation of %s" % args.dataset, taxonomy)
        _emit(stream, "validated %s" % args.dataset, rep, paths)
        return 0 if rep.ok or args.fix else 1
    if args.data_command == "split":
        if config is None:
            from trainer.config import load_config

            config = load_config()
        data = config.data
        ratios = args.ratios or [data.train_fraction, data.val_fraction, data.test_fraction]
        if abs(sum(ratios) - 1.0) > RATIO_SUM_TOL:
            raise DataError("--ratios %s sum to %g; expected three shares of 1, e.g. 0.7 0.15 0.15"
                            % (" ".join("%g" % r for r in ratios), sum(ratios)))
        pattern = getattr(args, "data.group_pattern", None) or data.group_pattern
        seed = getattr(args, "general.seed", None)
        rep = split.split_dataset(args.dataset, args.out, taxonomy, ratios=ratios, group_pattern=pattern,
                                  seed=config.general.seed if seed is None else seed)
        _emit(stream, "split %s into %s" % (args.dataset, args.out), rep, rep.files)
        return 0
    raise ValueError("unknown data command %r" % args.data_command)  # argparse prevents this


def _emit(stream, headline, rep, paths):
    lines = [headline] + ["  " + line for line in report.summary_lines(rep)] + ["  wrote " + p for p in paths]
    stream.write(printable("\n".join(lines) + "\n"))
