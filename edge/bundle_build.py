"""Build a bundle from model files and a dataset's data.yaml (the `bundle build` command)."""
import logging
import os
import shutil
import tempfile

import numpy as np

from edge import __version__
from edge.bundle import (CALIBRATED_PROFILES, CATEGORIES, DEFAULT_DECODE_THR, DEFAULT_FUSION, DEFAULT_NMS_IOU,
                         DEFAULT_VARIANT_THR, FORMATS, VARIANTS, Bundle, ClassSpec, ModelSpec, copy_model,
                         default_profiles, load_bundle, make_manifest, model_entry, sha256_of, write_bundle)
from edge.decode import EFFICIENT_NMS_OUTPUTS
from edge.errors import BundleError, EdgeError
from edge.tta import view_plan

logger = logging.getLogger(__name__)

# The ReefWatch taxonomy's id ranges; used only for 36-class data.yaml files without a categories map.
_REEFWATCH_RANGES = ((range(0, 20), "critical"), (range(20, 29), "important"), (range(29, 36), "general"))


def _load_yaml(data_yaml):
    try:
        import yaml
    except ImportError as e:
        raise EdgeError("reading %s needs PyYAML (pip install pyyaml)" % data_yaml) from e
    try:
        with open(data_yaml) as f:
            return yaml.safe_load(f)
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError) as e:
        raise BundleError("cannot read classes file %s: %s" % (data_yaml, e)) from e


def read_classes(data_yaml, critical=(), important=()):
    """[(id, name, category)] from an ultralytics data.yaml.

    Categories come from ReefWatch's `categories: {id: critical|important|general}` map; a plain
    ultralytics data.yaml without one has every class general except those named in `critical` /
    `important` (names or ids), and the 36-class ReefWatch taxonomy its id ranges.
    """
    data = _load_yaml(data_yaml)
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        try:
            names = [names[k] for k in sorted(names, key=int)]
        except (TypeError, ValueError) as e:
            raise BundleError("%s: 'names:' map keys must be class ids 0..N-1" % data_yaml) from e
    if not isinstance(names, list) or not names:
        raise BundleError("%s has no 'names:' list or {id: name} map" % data_yaml)
    names = [str(n) for n in names]
    categories = data.get("categories")
    if categories is not None and not isinstance(categories, dict):
        raise BundleError("%s: 'categories:' must map class ids to critical|important|general" % data_yaml)
    named = _named_categories(names, critical, important, data_yaml)
    classes = []
    for class_id, name in enumerate(names):
        category = None
        if categories:
            category = categories.get(class_id, categories.get(str(class_id)))
        elif class_id in named:
            category = named[class_id]
        elif len(names) == 36:
            category = next(c for r, c in _REEFWATCH_RANGES if class_id in r)
        else:
            category = "general"
        if category not in CATEGORIES:
            raise BundleError("%s: class %d (%s) has category %r; expected one of %s in its 'categories:' map"
                              % (data_yaml, class_id, name, category, ", ".join(CATEGORIES)))
        classes.append((class_id, name, category))
    if categories and named:
        raise BundleError("%s has a 'categories:' map; --critical/--important would contradict it: drop them or "
                          "edit the map" % data_yaml)
    return classes


def _named_categories(names, critical, important, where):
    named = {}
    for category, items in (("critical", critical), ("important", important)):
        for item in items or ():
            item = str(item).strip()
            if item.isdigit() and int(item) < len(names):
                class_id = int(item)
            elif item in names:
                class_id = names.index(item)
            else:
                raise BundleError("--%s %r: no such class in %s; its classes are %s"
                                  % (category, item, where, ", ".join(names)))
            if named.get(class_id, category) != category:
                raise BundleError("class %r is named both critical and important" % names[class_id])
            named[class_id] = category
    return named


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


def parse_profile_values(pairs, what):
    """['single=0.3', 'ensemble_full=0.2'] -> {'single': 0.3, ...} for --operating-thr and the like."""
    values = {}
    for pair in pairs or ():
        name, sep, text = pair.partition("=")
        if not sep or name not in CALIBRATED_PROFILES:
            raise BundleError("--%s %r: expected PROFILE=VALUE with PROFILE one of %s"
                              % (what, pair, ", ".join(CALIBRATED_PROFILES)))
        try:
            value = float(text)
        except ValueError as e:
            raise BundleError("--%s %r: %r is not a number" % (what, pair, text)) from e
        if not 0.0 <= value <= 1.0:
            raise BundleError("--%s %r: expected a score in [0, 1]" % (what, pair))
        values[name] = value
    return values


def probe_model(path, num_classes, imgsz=None):
    """(input [h, w], batch or None, output layout) of a model, checking its output fits num_classes.

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


def _per_variant(value, variant, default):
    if isinstance(value, dict):
        return value.get(variant, default)
    return default if value is None else value


def build_bundle(out_dir, models, classes, tta="full", target="x86-cpu", decode_thr=DEFAULT_DECODE_THR, iou_thr=DEFAULT_NMS_IOU,
                 operating_thr=None, thresholds=None, temperatures=None, fusion=None, deployment=None, energy=None,
                 accuracy=None, weights=None, imgsz=None, calibration_method=None, multi_label=True):
    """Copy models into a new bundle folder and write a verified manifest; nothing is left half-written.

    `decode_thr`, `operating_thr` and `weights` are a number or {variant: value}; `thresholds` and
    `temperatures` map profile -> number or per-class list (see edge.bundle.make_manifest).
    """
    if os.path.exists(os.path.join(out_dir, "manifest.json")):
        raise BundleError("%s already holds a bundle; choose another --out or remove it first" % out_dir)
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise BundleError("%s exists and is not an empty folder; choose a new --out" % out_dir)
    parent = os.path.dirname(os.path.abspath(out_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    try:
        entries = []
        for variant, src in models:
            input_size, batch, _ = probe_model(src, len(classes), imgsz)
            file_name = copy_model(src, staging, variant)
            entries.append(model_entry(variant, variant, file_name, staging, input_size, batch,
                                       _per_variant(decode_thr, variant, DEFAULT_DECODE_THR), iou_thr,
                                       _per_variant(weights, variant, 1.0), _per_variant(operating_thr, variant, None),
                                       multi_label))
        software = {"reefwatch": __version__, "numpy": np.__version__}
        manifest = make_manifest(entries, classes, tta=tta, fusion=fusion, target=target, thresholds=thresholds,
                                 temperatures=temperatures, deployment=deployment, energy=energy, accuracy=accuracy,
                                 software=software, calibration_method=calibration_method)
        write_bundle(staging, manifest)
        if os.path.isdir(out_dir):
            os.rmdir(out_dir)
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load_bundle(out_dir)


def bundle_from_models(models, names, imgsz=None, plan="none", categories=None, decode_thr=DEFAULT_DECODE_THR):
    """An in-memory Bundle over model files ([(variant, path)] or one path), nothing written.

    For the trainer and benchmarks: the same pipeline as a bundle on disk, with default thresholds
    and identity calibration. `categories` maps class id -> category (default: all general).
    """
    if isinstance(models, str):
        models = [("balanced", models)]
    names = [str(n) for n in names]
    classes = [ClassSpec(i, n, (categories or {}).get(i, "general")) for i, n in enumerate(names)]
    specs = []
    for variant, path in models:
        if variant not in VARIANTS:
            raise BundleError("model %s: variant %r; expected one of %s" % (path, variant, ", ".join(VARIANTS)))
        if not os.path.isfile(path):
            raise BundleError("model file %s does not exist" % path)
        input_size, batch, _ = probe_model(path, len(names), imgsz)
        fmt = FORMATS.get(os.path.splitext(path)[1], "onnx")
        specs.append(ModelSpec(variant, variant, os.path.abspath(path), sha256_of(path), fmt, tuple(input_size), batch,
                               decode_thr, DEFAULT_NMS_IOU, 1.0, None, DEFAULT_VARIANT_THR[variant], True))
    root = os.path.dirname(os.path.abspath(models[0][1]))
    manifest = {"schema_version": 2, "in_memory": True}
    fusion = dict(DEFAULT_FUSION)
    return Bundle(root, manifest, specs, classes, np.ones(len(classes)), view_plan(plan), fusion,
                  default_profiles(specs, len(classes)))
