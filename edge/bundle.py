"""The bundle: the contract between trainer and device.

A folder (or a .tar.gz of one) holding model files and a manifest.json that
says everything the device needs to reproduce the trainer's figures: models
with checksums, classes and categories, temperatures, the TTA plan, fusion
settings, the energy budget and the accuracy it was validated at.
"""
import collections
import hashlib
import json
import os
import shutil
import tarfile
import tempfile

from edge.errors import BundleError, ConfigError
from edge.tta import plan_to_json, view_plan

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
VARIANTS = ("recall", "balanced", "precision")
CATEGORIES = ("critical", "important", "general")
FORMATS = {".onnx": "onnx", ".engine": "engine", ".plan": "engine"}
TARGETS = ("jetson-nano", "x86-cpu", "gpu-server")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
DEFAULT_FUSION = {"iou_thr": 0.55, "skip_box_thr": 0.0, "conf_type": "avg", "score_thr": 0.0}

ModelSpec = collections.namedtuple(
    "ModelSpec", "name variant path sha256 format input_size batch conf_thr iou_thr fusion_weight engine_path")
ClassSpec = collections.namedtuple("ClassSpec", "id name category")


def sha256_of(path, chunk_bytes=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle(object):
    """A verified bundle on disk; ``root`` is the folder holding manifest.json."""

    def __init__(self, root, manifest, models, classes, temperatures, plan, fusion):
        self.root = root
        self.manifest = manifest
        self.models = models
        self.classes = classes
        self.temperatures = temperatures
        self.plan = plan
        self.fusion = fusion

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def names(self):
        return [c.name for c in self.classes]

    def ids_in(self, category):
        return [c.id for c in self.classes if c.category == category]

    def model(self, name):
        for m in self.models:
            if m.name == name or m.variant == name:
                return m
        raise BundleError("bundle %s has no model %r; it has %s" % (self.root, name, [m.name for m in self.models]))

    def __repr__(self):
        return "Bundle(%s, models=%s, classes=%d)" % (self.root, [m.name for m in self.models], self.num_classes)


def _field(obj, key, kind, where):
    if key not in obj:
        raise BundleError("%s: missing field %r" % (where, key))
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise BundleError("%s: field %r is %r; expected %s" % (where, key, value, getattr(kind, "__name__", kind)))
    return value


def _parse_model(entry, index, root, verify):
    where = "%s models[%d]" % (os.path.join(root, MANIFEST), index)
    name = _field(entry, "name", str, where)
    variant = _field(entry, "variant", str, where)
    if variant not in VARIANTS:
        raise BundleError("%s: variant %r; expected one of %s" % (where, variant, ", ".join(VARIANTS)))
    path = _file_in_bundle(root, _field(entry, "file", str, where), where)
    digest = _field(entry, "sha256", str, where)
    if verify and sha256_of(path) != digest:
        raise BundleError("%s: checksum of %s does not match the manifest; the file is corrupt or was replaced"
                          % (where, path))
    size = _field(entry, "input_size", list, where)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise BundleError("%s: input_size %r; expected [height, width] in pixels" % (where, size))
    batch = entry.get("batch")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise BundleError("%s: batch %r; expected a positive integer or null for dynamic" % (where, batch))
    engine_path = None
    if entry.get("engine"):
        engine = entry["engine"]
        engine_path = _file_in_bundle(root, _field(engine, "file", str, where + ".engine"), where)
        if verify and sha256_of(engine_path) != _field(engine, "sha256", str, where + ".engine"):
            raise BundleError("%s: checksum of engine %s does not match the manifest" % (where, engine_path))
    fmt = _field(entry, "format", str, where)
    if fmt not in set(FORMATS.values()):
        raise BundleError("%s: format %r; expected onnx or engine" % (where, fmt))
    return ModelSpec(name, variant, path, digest, fmt, tuple(size), batch,
                     float(entry.get("conf_thr", 0.25)), float(entry.get("iou_thr", 0.7)),
                     float(entry.get("fusion_weight", 1.0)), engine_path)


def _file_in_bundle(root, relative, where):
    path = os.path.normpath(os.path.join(root, relative))
    if os.path.isabs(relative) or not path.startswith(os.path.normpath(root) + os.sep):
        raise BundleError("%s: file %r lies outside the bundle" % (where, relative))
    if not os.path.isfile(path):
        raise BundleError("%s: file %s is missing from the bundle" % (where, path))
    return path


def _parse_classes(raw, where):
    classes = []
    for i, entry in enumerate(raw):
        item_where = "%s classes[%d]" % (where, i)
        class_id = _field(entry, "id", int, item_where)
        category = _field(entry, "category", str, item_where)
        if class_id != i:
            raise BundleError("%s: id %d; classes must be listed in id order 0..N-1" % (item_where, class_id))
        if category not in CATEGORIES:
            raise BundleError("%s: category %r; expected one of %s" % (item_where, category, ", ".join(CATEGORIES)))
        classes.append(ClassSpec(class_id, _field(entry, "name", str, item_where), category))
    if not classes:
        raise BundleError("%s: the classes list is empty" % where)
    return classes


def parse_manifest(manifest, root, verify=True):
    where = os.path.join(root, MANIFEST)
    if not isinstance(manifest, dict):
        raise BundleError("%s: expected a JSON object" % where)
    version = _field(manifest, "schema_version", int, where)
    if version != SCHEMA_VERSION:
        raise BundleError("%s: schema_version %d; this runtime reads version %d (upgrade reefwatch or rebuild "
                          "the bundle)" % (where, version, SCHEMA_VERSION))
    target = _field(manifest, "target", str, where)
    if target not in TARGETS:
        raise BundleError("%s: target %r; expected one of %s" % (where, target, ", ".join(TARGETS)))
    models = [_parse_model(m, i, root, verify) for i, m in enumerate(_field(manifest, "models", list, where))]
    if not models:
        raise BundleError("%s: the models list is empty" % where)
    classes = _parse_classes(_field(manifest, "classes", list, where), where)
    temperatures = _field(manifest.get("calibration", {"temperatures": [1.0] * len(classes)}),
                          "temperatures", list, where + " calibration")
    fusion = dict(DEFAULT_FUSION)
    fusion.update(manifest.get("fusion") or {})
    try:
        from edge.calibration import check_temperatures
        temperatures = check_temperatures(temperatures, len(classes))
        plan = view_plan(manifest.get("tta", "none"))
    except ConfigError as e:
        raise BundleError("%s: %s" % (where, e)) from e
    if fusion["conf_type"] not in CONF_TYPES:
        raise BundleError("%s: fusion.conf_type %r; expected one of %s" % (where, fusion["conf_type"], CONF_TYPES))
    return Bundle(root, manifest, models, classes, temperatures, plan, fusion)


def _safe_extract(archive, dest):
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            target = os.path.normpath(os.path.join(dest, member.name))
            if os.path.isabs(member.name) or not (target + os.sep).startswith(os.path.normpath(dest) + os.sep):
                raise BundleError("%s: entry %r escapes the bundle; refusing to extract" % (archive, member.name))
            if not (member.isfile() or member.isdir()):
                raise BundleError("%s: entry %r is a link or device; bundles hold plain files only"
                                  % (archive, member.name))
        # Members were checked above; the 'data' filter (Python >= 3.12) checks again.
        tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    entries = os.listdir(dest)
    if MANIFEST not in entries and len(entries) == 1 and os.path.isdir(os.path.join(dest, entries[0])):
        return os.path.join(dest, entries[0])
    return dest


def load_bundle(path, verify=True, extract_dir=None):
    """Load and verify a bundle folder or .tar.gz; any fault is a BundleError naming it."""
    if not os.path.exists(path):
        raise BundleError("bundle %s does not exist" % path)
    root = path
    if os.path.isfile(path):
        if not path.endswith((".tar.gz", ".tgz")):
            raise BundleError("bundle %s is a file but not a .tar.gz; pass the bundle folder or its archive" % path)
        try:
            root = _safe_extract(path, extract_dir or tempfile.mkdtemp(prefix="reefwatch-bundle-"))
        except (tarfile.TarError, EOFError, OSError) as e:
            raise BundleError("bundle archive %s cannot be read: %s" % (path, e)) from e
    manifest_path = os.path.join(root, MANIFEST)
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BundleError("cannot read %s: %s" % (manifest_path, e)) from e
    return parse_manifest(manifest, os.path.abspath(root), verify=verify)


def model_entry(name, variant, file_name, out_dir, input_size, batch, conf_thr=0.25, iou_thr=0.7, fusion_weight=1.0):
    path = os.path.join(out_dir, file_name)
    ext = os.path.splitext(file_name)[1]
    if ext not in FORMATS:
        raise BundleError("model file %s: unknown extension %r; expected one of %s" % (file_name, ext, sorted(FORMATS)))
    return {"name": name, "variant": variant, "file": file_name, "sha256": sha256_of(path),
            "format": FORMATS[ext], "input_size": list(input_size), "batch": batch,
            "conf_thr": conf_thr, "iou_thr": iou_thr, "fusion_weight": fusion_weight}


def write_bundle(out_dir, manifest):
    """Write manifest.json atomically and load the result back, so a bad bundle never ships."""
    tmp = os.path.join(out_dir, MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(out_dir, MANIFEST))
    return load_bundle(out_dir)


def make_manifest(models, classes, tta="full", fusion=None, target="x86-cpu", temperatures=None,
                  energy=None, accuracy=None, software=None):
    fused = dict(DEFAULT_FUSION)
    fused.update(fusion or {})
    return {
        "schema_version": SCHEMA_VERSION,
        "target": target,
        "models": models,
        "classes": [{"id": c[0], "name": c[1], "category": c[2]} for c in classes],
        "calibration": {"temperatures": list(temperatures) if temperatures is not None else [1.0] * len(classes),
                        "method": "per-class temperature" if temperatures is not None else "identity"},
        "tta": plan_to_json(view_plan(tta)),
        "fusion": fused,
        "energy": energy or {"budget_wh_day": None},
        "accuracy": accuracy or {},
        "software": software or {},
    }


def copy_model(src, out_dir, name):
    if not os.path.isfile(src):
        raise BundleError("model file %s does not exist" % src)
    file_name = "models/%s%s" % (name, os.path.splitext(src)[1])
    os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
    shutil.copyfile(src, os.path.join(out_dir, file_name))
    return file_name


def archive_bundle(bundle_dir, archive_path):
    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(bundle_dir, arcname=".")
    return archive_path
