"""Reading `trainer export`'s export.json: the one check of its variants that calibrate and bundle share."""
import json
import os

from edge.bundle import VARIANTS, sha256_of
from trainer.errors import TrainerError

EXPORT_FILE = "export.json"


def read_export_variants(export_dir):
    """export.json's variant entries, each with `onnx` resolved to an existing file that matches its sha256,
    a float `threshold` and a list of `fp32_layers`; TrainerError naming the entry and the fix otherwise."""
    path = os.path.join(export_dir, EXPORT_FILE)
    if not os.path.isfile(path):
        raise TrainerError("%s has no %s; run `trainer export` first and pass its --out" % (export_dir, EXPORT_FILE))
    try:
        with open(path) as fh:
            export = json.load(fh)
    except (OSError, ValueError) as e:
        raise TrainerError("cannot read %s (%s); rerun `trainer export`" % (path, e)) from e
    variants = export.get("variants") if isinstance(export, dict) else None
    if not isinstance(variants, list) or not variants:
        raise TrainerError("%s lists no variants; expected {\"variants\": [{\"name\", \"onnx\", \"threshold\", ...}]}"
                           % path)
    return [_checked(entry, "%s variants[%d]" % (path, i), export_dir) for i, entry in enumerate(variants)]


def _checked(entry, where, export_dir):
    if not isinstance(entry, dict):
        raise TrainerError("%s: %r is not a variant entry; rerun `trainer export`" % (where, entry))
    if entry.get("name") not in VARIANTS:
        raise TrainerError("%s: name %r; the device runs the variants %s" % (where, entry.get("name"),
                                                                            ", ".join(VARIANTS)))
    missing = [k for k in ("onnx", "threshold") if k not in entry]
    if missing:
        raise TrainerError("%s lacks %s; rerun `trainer export`" % (where, ", ".join(missing)))
    onnx = os.path.join(export_dir, str(entry["onnx"]))  # an absolute onnx path stays absolute
    if not os.path.isfile(onnx):
        raise TrainerError("%s (%s): model %s does not exist; rerun `trainer export`" % (where, entry["name"], onnx))
    if entry.get("sha256") and sha256_of(onnx) != entry["sha256"]:
        raise TrainerError("%s: %s does not match its sha256 in export.json; rerun `trainer export`" % (where, onnx))
    fp32_layers = entry.get("fp32_layers") or []
    if not isinstance(fp32_layers, list) or not all(isinstance(n, str) and n for n in fp32_layers):
        raise TrainerError("%s: fp32_layers %r; expected a list of layer names; rerun `trainer export`"
                           % (where, fp32_layers))
    return dict(entry, onnx=onnx, threshold=float(entry["threshold"]), fp32_layers=fp32_layers)
