"""A reference bundle for the benchmarks: the trainer's whole chain on a YOLO dataset, sized small.

    python -m benchmarks.reference_bundle --data DATASET/data.yaml --out out/ref-bundle \
        [--preset demo] [--model yolov8n.yaml] [--imgsz 320] [--epochs 15] [--set section.key=value ...]

This is `trainer run-all --data DATASET --preset PRESET` in OUT.work (resumable: a rerun continues
where it stopped), with the model, image size and baseline epochs given here as config overrides;
the bundle it ends in (OUT.work/bundle: the ensemble, FP16-checked ONNX, calibrated temperatures
and thresholds per profile, accuracy and energy measured through edge's pipeline) is copied to OUT.
Categories come from the data.yaml's `categories:`. The small presets open the budget gate
(floors at zero): the bundle is a measuring instrument, not a release.
"""
import argparse
import os
import shutil
import sys

STRIDE = 32


def size_overrides(model=None, imgsz=None, epochs=None):
    """Config overrides for the model, the image size (training range one stride either side) and epochs."""
    overrides = []
    if model:
        overrides.append("baseline.model=%s" % model)
    if imgsz:
        low, high = max(STRIDE, imgsz - STRIDE), imgsz + STRIDE
        overrides += ["general.imgsz=%d" % imgsz, "baseline.imgsz=%d" % imgsz, "multiscale.min=%d" % low,
                      "multiscale.max=%d" % high]
    if epochs:
        overrides.append("baseline.epochs=%d" % epochs)
    return overrides


def main(argv=None):
    from benchmarks.demo import run_all_argv
    from trainer.cli import main as trainer_main

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True, help="where the bundle is copied (a new folder)")
    parser.add_argument("--preset", default="demo", choices=("smoke", "demo", "full"))
    parser.add_argument("--model", default=None, help="baseline.model (default: the preset's)")
    parser.add_argument("--imgsz", type=int, default=None, help="image size (default: the preset's)")
    parser.add_argument("--epochs", type=int, default=None, help="baseline.epochs (default: the preset's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    if os.path.exists(out):
        print("reference_bundle: --out %s exists; name a new folder" % out, file=sys.stderr)
        return 2
    work = out + ".work"
    overrides = size_overrides(args.model, args.imgsz, args.epochs) + list(args.overrides)
    code = trainer_main(run_all_argv(work, args.preset, os.path.abspath(args.data), overrides))
    if code != 0:
        return code
    shutil.copytree(os.path.join(work, "bundle"), out)
    print("bundle: %s (run-all work folder %s; report %s)" % (out, work, os.path.join(work, "release", "report.md")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
