"""Train a small three-variant ensemble on a YOLO dataset and bundle it, for benchmarks.

    python -m benchmarks.reference_bundle --data DATASET/data.yaml --out out/ref-bundle \
        [--model yolov8n.yaml] [--imgsz 320] [--epochs 15]

This is a measuring instrument, not the trainer's ensemble stage: the three
variants are the same architecture trained with different seeds, exported with
a dynamic batch (all TTA views in one call) and given recall / balanced /
precision operating thresholds. Their accuracy is what a few CPU epochs buy.
"""
import argparse
import json
import os
import sys
import time

from edge.bundle_build import build_bundle, read_classes
from trainer.export import export_onnx
from trainer.yolo import train_args, yolo

VARIANTS = (("recall", 0, 0.15), ("balanced", 1, 0.25), ("precision", 2, 0.40))


def train_variant(data, model_yaml, imgsz, epochs, seed, workdir, batch):
    model = yolo(model_yaml)
    args = train_args(data=data, epochs=epochs, imgsz=imgsz, batch=batch, workers=2, device="cpu", seed=seed,
                      project=workdir, name="seed%d" % seed, val=True, cache="ram", patience=0)
    model.train(**args)
    best = os.path.join(workdir, "seed%d" % seed, "weights", "best.pt")
    metrics = yolo(best).val(data=data, imgsz=imgsz, batch=batch, device="cpu", plots=False, verbose=False,
                             project=workdir, name="val%d" % seed, exist_ok=True)
    return best, {"map50": float(metrics.box.map50), "map50_95": float(metrics.box.map)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="yolov8n.yaml")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tta", default="full")
    parser.add_argument("--critical", default="", help="critical class names for a data.yaml without categories")
    args = parser.parse_args(argv)
    workdir = os.path.abspath(args.out + ".work")
    models, accuracy = [], {}
    for variant, seed, _ in VARIANTS:
        start = time.time()
        best, metrics = train_variant(os.path.abspath(args.data), args.model, args.imgsz, args.epochs, seed,
                                      workdir, args.batch)
        onnx_path = export_onnx(best, os.path.join(workdir, variant + ".onnx"), args.imgsz, dynamic=True)
        models.append((variant, onnx_path))
        accuracy[variant] = dict(metrics, train_s=round(time.time() - start, 1), epochs=args.epochs)
        print("%s: %s" % (variant, json.dumps(accuracy[variant])))
    classes = read_classes(args.data, critical=[n for n in args.critical.split(",") if n])
    bundle = build_bundle(args.out, models, classes, tta=args.tta, imgsz=args.imgsz,
                          operating_thr={v: c for v, _, c in VARIANTS}, accuracy={"validation": accuracy})
    print("bundle: %s" % bundle.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
