"""Build a bundle from model files and a dataset's data.yaml (the `bundle build` command)."""
import os
import shutil
import tempfile

import numpy as np

from edge import __version__
from edge.bundle import CATEGORIES, VARIANTS, copy_model, make_manifest, model_entry, write_bundle
from edge.decode import EFFICIENT_NMS_OUTPUTS
from edge.errors import BundleError, EdgeError

# The ReefWatch taxonomy's id ranges; used only for 36-class data.yaml files without a categories map.
_REEFWATCH_RANGES = ((range(0, 20), "critical"), (range(20, 29), "important"), (range(29, 36), "general"))


def read_classes(data_yaml):
    """[(id, name, category)] from an ultralytics data.yaml, with ReefWatch's `categories:` map."""
    try:
        import yaml
    except ImportError as e:
        raise EdgeError("reading %s needs PyYAML (pip install pyyaml)" % data_yaml) from e
    try:
        with open(data_yaml) as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        raise BundleError("cannot read classes file %s: %s" % (data_yaml, e)) from e
    names = (data or {}).get("names")
    if isinstance(names, dict):
        names = [names[k] for k in sorted(names, key=int)]
    if not isinstance(names, list) or not names:
        raise BundleError("%s has no 'names:' list or {id: name} map" % data_yaml)
    categories = data.get("categories") or {}
    classes = []
    for class_id, name in enumerate(names):
        category = categories.get(class_id, categories.get(str(class_id)))
        if category is None and len(names) == 36:
            category = next(c for r, c in _REEFWATCH_RANGES if class_id in r)
        if category not in CATEGORIES:
            raise BundleError("%s: class %d (%s) has no category; add a 'categories: {id: critical|important|"
                              "general}' map to the file" % (data_yaml, class_id, name))
        classes.append((class_id, str(name), category))
    return classes


def parse_model_args(pairs):
    """['recall=a.onnx', ...] -> [('recall', 'a.onnx'), ...] in the order given."""
    models = []
    for pair in pairs:
        variant, sep, path = pair.partition("=")
        if not sep or variant not in VARIANTS or not path:
            raise BundleError("--model %r: expected VARIANT=PATH with VARIANT one of %s" % (pair, ", ".join(VARIANTS)))
        if variant in [v for v, _ in models]:
            raise BundleError("--model %r: variant %s given twice" % (pair, variant))
        models.append((variant, path))
    if not models:
        raise BundleError("bundle build needs at least one --model VARIANT=PATH")
    return models


def probe_model(path, num_classes, imgsz=None):
    """(input [h, w], batch or None) of a model, checking its output fits num_classes.

    A model with a dynamic input size runs at ``imgsz`` (the size it was exported at).
    """
    from edge.backends import open_backend

    with open_backend(path, kind="auto") as backend:
        _, _, in_h, in_w = backend.input_shape
        if in_h is None or in_w is None:
            if not imgsz:
                raise BundleError("model %s has a dynamic input size; pass --imgsz (the export size)" % path)
            in_h = in_h or imgsz
            in_w = in_w or imgsz
        outputs = backend.run(np.zeros((1, 3, in_h, in_w), np.float32))
        return [int(in_h), int(in_w)], backend.fixed_batch, _check_outputs(path, outputs, num_classes)


def _check_outputs(path, outputs, num_classes):
    if all(name in outputs for name in EFFICIENT_NMS_OUTPUTS):
        return "efficient_nms"
    if len(outputs) != 1:
        raise BundleError("model %s has outputs %s; expected one detect head (B, 4+nc, anchors) or an "
                          "EfficientNMS_TRT tail" % (path, sorted(outputs)))
    (shape,) = [o.shape for o in outputs.values()]
    if len(shape) != 3 or shape[1] != 4 + num_classes:
        raise BundleError("model %s outputs %s but the classes file lists %d classes (expected (B, %d, anchors)); "
                          "was it trained on another data.yaml?" % (path, tuple(shape), num_classes, 4 + num_classes))
    return "head"


def build_bundle(out_dir, models, classes, tta="full", target="x86-cpu", conf_thr=0.25, iou_thr=0.7,
                 fusion=None, temperatures=None, energy=None, accuracy=None, weights=None, imgsz=None):
    """Copy models into a new bundle folder and write a verified manifest; nothing is left half-written."""
    if os.path.exists(os.path.join(out_dir, "manifest.json")):
        raise BundleError("%s already holds a bundle; choose another --out or remove it first" % out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    try:
        entries = []
        for variant, src in models:
            input_size, batch, _ = probe_model(src, len(classes), imgsz)
            file_name = copy_model(src, staging, variant)
            weight = (weights or {}).get(variant, 1.0)
            conf = conf_thr.get(variant, 0.25) if isinstance(conf_thr, dict) else conf_thr
            entries.append(model_entry(variant, variant, file_name, staging, input_size, batch,
                                       conf, iou_thr, weight))
        software = {"reefwatch": __version__, "numpy": np.__version__}
        manifest = make_manifest(entries, classes, tta=tta, fusion=fusion, target=target,
                                 temperatures=temperatures, energy=energy, accuracy=accuracy, software=software)
        write_bundle(staging, manifest)
        if os.path.isdir(out_dir) and not os.listdir(out_dir):
            os.rmdir(out_dir)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    from edge.bundle import load_bundle
    return load_bundle(out_dir)
