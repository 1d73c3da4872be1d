"""The bundle: the contract between trainer and device.

A folder (or a .tar.gz of one) holding model files and a manifest.json that
says everything the device needs to reproduce the trainer's figures: models
with checksums, classes and categories, the TTA plan, fusion settings, per
inference profile the temperatures and operating thresholds, the deployment
profile with its energy budget, and the accuracy it was validated at.

Decoding keeps every class above the decode threshold per anchor
(`multi_label`, default true in schema 2), as ultralytics' validation does.

Two thresholds, never one (schema 2):
- a model's `decode_thr` (low, ~0.01) only limits what feeds fusion;
- a profile's `thresholds` (one per class, applied after fusion and
  calibration) decide what the device reports, stores, crops and alerts on.
  A model's `operating_thr` is its threshold when it runs alone (the
  variants' 0.15 / 0.25 / 0.40), the default of the single profile.
Schema 1 bundles load unchanged in behaviour: their per-model `conf_thr` was
applied at decoding, their `fusion.score_thr` after fusion.

A model's optional `engine` {file, sha256, tensorrt version} is built on the
device (edge.bundle_engines), keeping its optional `fp32_layers` (those the
trainer's FP16 parity check kept FP32) in FP32; `auto` prefers the engine.
"""
import collections
import hashlib
import json
import os

from edge import manifest_fields as field
from edge.atomic_file import atomic_output
from edge.errors import BundleError, ConfigError
from edge.tta import plan_to_json, view_plan

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
MANIFEST = "manifest.json"
MAX_MANIFEST_BYTES = 16 << 20
VARIANTS = ("recall", "balanced", "precision")
CATEGORIES = ("critical", "important", "general")
FORMATS = {".onnx": "onnx", ".engine": "engine", ".plan": "engine"}
TARGETS = ("jetson-nano", "x86-cpu", "gpu-server")
CONF_TYPES = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")
DEFAULT_FUSION = {"iou_thr": 0.55, "skip_box_thr": 0.0, "conf_type": "avg", "score_thr": 0.0}
# Profiles whose settings a manifest carries; the cascade uses those of its two stages.
CALIBRATED_PROFILES = ("single", "ensemble", "ensemble_flip", "ensemble_full")
DEFAULT_DECODE_THR = 0.01
# Per-model NMS IoU, below fusion's 0.55: after NMS at ultralytics' 0.7 a list keeps
# same-class boxes overlapping at 0.55-0.7, which WBF then puts in one cluster and
# whose low scores drag the cluster's average down. Measured through this pipeline
# (mAP50, decode 0.001): demo val, balanced model 0.560 -> 0.583, 3-model ensemble
# 0.517 -> 0.560; aquarium valid, balanced 0.116 -> 0.131, ensemble 0.125 -> 0.131.
DEFAULT_NMS_IOU = 0.5
# Operating points until the trainer's calibration fits them: a variant alone
# keeps its own threshold; fused scores under 'avg' are lowered by every model
# that misses a box (2 of 3 models at 0.25 fuse to ~0.17), hence a lower default.
DEFAULT_VARIANT_THR = {"recall": 0.15, "balanced": 0.25, "precision": 0.40}
DEFAULT_FUSED_THR = 0.15

ModelSpec = collections.namedtuple(
    "ModelSpec", "name variant path sha256 format input_size batch decode_thr iou_thr fusion_weight engine_path "
                 "operating_thr multi_label fp32_layers")
ModelSpec.__new__.__defaults__ = (None, False, ())  # operating_thr: the variant's default; best class; no FP32 layers
ClassSpec = collections.namedtuple("ClassSpec", "id name category")
ProfileSettings = collections.namedtuple("ProfileSettings", "temperatures thresholds")


def sha256_of(path, chunk_bytes=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


class Bundle(object):
    """A verified bundle; ``root`` is the folder holding manifest.json.

    ``profiles`` maps each of CALIBRATED_PROFILES to its ProfileSettings;
    without it every profile gets ``temperatures`` and the threshold
    ``fusion['score_thr']`` (schema 1's behaviour). ``deployment`` is an
    ``edge.energy.DeploymentProfile`` or None. ``gate`` is the trainer's
    budget-gate record ({passed, failures, forced}) or None (bundles made
    before the gate); ``default_profile`` the profile the trainer chose to
    run by default, or None.
    """

    def __init__(self, root, manifest, models, classes, temperatures, plan, fusion, profiles=None, deployment=None,
                 gate=None, default_profile=None):
        import numpy as np

        self.root = root
        self.manifest = manifest
        self.models = models
        self.classes = classes
        self.temperatures = np.asarray(temperatures, dtype=np.float64)
        self.plan = plan
        self.fusion = fusion
        if profiles is None:
            thresholds = np.full(len(classes), float(fusion.get("score_thr", 0.0)))
            profiles = {p: ProfileSettings(self.temperatures, thresholds) for p in CALIBRATED_PROFILES}
        self.profiles = profiles
        self.deployment = deployment
        self.gate = gate
        self.default_profile = default_profile

    @property
    def num_classes(self):
        return len(self.classes)

    @property
    def names(self):
        return [c.name for c in self.classes]

    @property
    def schema_version(self):
        return self.manifest.get("schema_version", SCHEMA_VERSION)

    def ids_in(self, category):
        return [c.id for c in self.classes if c.category == category]

    def model(self, name):
        for m in self.models:
            if m.name == name or m.variant == name:
                return m
        raise BundleError("bundle %s has no model %r; it has %s" % (self.root, name, [m.name for m in self.models]))

    def profile_settings(self, profile):
        """Temperatures and operating thresholds (one per class) of an inference profile."""
        if profile not in self.profiles:
            raise BundleError("bundle %s has no settings for profile %r; it has %s"
                              % (self.root, profile, sorted(self.profiles)))
        return self.profiles[profile]

    def with_decode_thr(self, decode_thr):
        """The same bundle with every model decoding at `decode_thr` (e.g. 0.001 for a COCO evaluation)."""
        decode_thr = field.probability(decode_thr, "decode_thr")
        models = [m._replace(decode_thr=decode_thr) for m in self.models]
        return Bundle(self.root, self.manifest, models, self.classes, self.temperatures, self.plan, self.fusion,
                      self.profiles, self.deployment, self.gate, self.default_profile)

    def __repr__(self):
        return "Bundle(%s, models=%s, classes=%d)" % (self.root, [m.name for m in self.models], self.num_classes)


def _parse_model(entry, index, root, verify, version):
    where = "%s models[%d]" % (os.path.join(root, MANIFEST), index)
    field.mapping(entry, where)
    name = field.text(field.require(entry, "name", where), where + ".name")
    variant = field.choice(field.require(entry, "variant", where), VARIANTS, where + ".variant")
    path = _file_in_bundle(root, field.text(field.require(entry, "file", where), where + ".file"), where)
    digest = field.text(field.require(entry, "sha256", where), where + ".sha256")
    if verify and sha256_of(path) != digest:
        raise BundleError("%s: checksum of %s does not match the manifest; the file is corrupt or was replaced"
                          % (where, path))
    size = field.input_size(field.require(entry, "input_size", where), where + ".input_size")
    batch = entry.get("batch")
    if batch is not None:
        field.integer(batch, where + ".batch", 1, 64)
    engine_path = None
    if entry.get("engine"):
        engine = field.mapping(entry["engine"], where + ".engine")
        engine_path = _file_in_bundle(root, field.text(field.require(engine, "file", where + ".engine"),
                                                       where + ".engine.file"), where)
        engine_digest = field.text(field.require(engine, "sha256", where + ".engine"), where + ".engine.sha256")
        if verify and sha256_of(engine_path) != engine_digest:
            raise BundleError("%s: checksum of engine %s does not match the manifest" % (where, engine_path))
        if engine.get("tensorrt") is not None:
            field.text(engine["tensorrt"], where + ".engine.tensorrt")
    fp32_layers = tuple(field.layer_names(entry.get("fp32_layers", []), where + ".fp32_layers"))
    fmt = field.choice(field.require(entry, "format", where), sorted(set(FORMATS.values())), where + ".format")
    if version == 1:  # schema 1 decoded at its one threshold, best class only, no operating point per model
        decode_thr = field.probability(entry.get("conf_thr", 0.25), where + ".conf_thr")
        operating_thr, multi_label = decode_thr, False
    else:
        decode_thr = field.probability(entry.get("decode_thr", DEFAULT_DECODE_THR), where + ".decode_thr")
        operating_thr = field.probability(entry.get("operating_thr", DEFAULT_VARIANT_THR[variant]),
                                          where + ".operating_thr")
        multi_label = field.boolean(entry.get("multi_label", True), where + ".multi_label")
    return ModelSpec(name, variant, path, digest, fmt, size, batch, decode_thr,
                     field.probability(entry.get("iou_thr", DEFAULT_NMS_IOU), where + ".iou_thr"),
                     field.number(entry.get("fusion_weight", 1.0), where + ".fusion_weight", 0.0, 1000.0),
                     engine_path, operating_thr, multi_label, fp32_layers)


def _file_in_bundle(root, relative, where):
    path = os.path.normpath(os.path.join(root, relative))
    if os.path.isabs(relative) or not path.startswith(os.path.normpath(root) + os.sep):
        raise BundleError("%s: file %r lies outside the bundle" % (where, relative))
    if not os.path.isfile(path):
        raise BundleError("%s: file %s is missing from the bundle" % (where, path))
    return path


def _parse_classes(raw, where):
    classes = []
    for i, entry in enumerate(field.array(raw, where + " classes", field.MAX_CLASSES)):
        item_where = "%s classes[%d]" % (where, i)
        class_id = field.integer(field.require(entry, "id", item_where), item_where + ".id")
        if class_id != i:
            raise BundleError("%s: id %d; classes must be listed in id order 0..N-1" % (item_where, class_id))
        category = field.choice(field.require(entry, "category", item_where), CATEGORIES, item_where + ".category")
        classes.append(ClassSpec(class_id, field.text(field.require(entry, "name", item_where), item_where + ".name"),
                                 category))
    if not classes:
        raise BundleError("%s: the classes list is empty" % where)
    return classes


def _parse_fusion(raw, where):
    fusion = dict(DEFAULT_FUSION)
    if raw is None:
        return fusion
    unknown = sorted(set(field.mapping(raw, where + " fusion")) - set(DEFAULT_FUSION))
    if unknown:
        raise BundleError("%s fusion: unknown keys %s; expected %s" % (where, unknown, sorted(DEFAULT_FUSION)))
    fusion.update(raw)
    fusion["iou_thr"] = field.number(fusion["iou_thr"], where + " fusion.iou_thr", 0.0, 1.0, low_open=True)
    fusion["skip_box_thr"] = field.probability(fusion["skip_box_thr"], where + " fusion.skip_box_thr")
    fusion["score_thr"] = field.probability(fusion["score_thr"], where + " fusion.score_thr")
    field.choice(fusion["conf_type"], CONF_TYPES, where + " fusion.conf_type")
    return fusion


def _temperatures(raw, num_classes, where):
    import numpy as np

    def positive(v, w):
        return field.number(v, w, 0.0, 1e6, low_open=True)
    return np.asarray(field.per_class(raw, num_classes, where, positive), dtype=np.float64)


def _parse_profiles(raw, models, num_classes, where):
    """Schema 2 `profiles`: {profile: {temperatures, thresholds}}; missing ones get the defaults."""
    import numpy as np

    field.mapping(raw, where + " profiles")
    unknown = sorted(set(raw) - set(CALIBRATED_PROFILES))
    if unknown:
        raise BundleError("%s profiles: unknown profiles %s; expected %s" % (where, unknown, CALIBRATED_PROFILES))
    profiles = {}
    for name in CALIBRATED_PROFILES:
        entry = field.mapping(raw.get(name, {}), "%s profiles.%s" % (where, name))
        item = "%s profiles.%s" % (where, name)
        default_thr = _single_model(models).operating_thr if name == "single" else DEFAULT_FUSED_THR
        temperatures = _temperatures(entry.get("temperatures", 1.0), num_classes, item + ".temperatures")
        thresholds = field.per_class(entry.get("thresholds", default_thr), num_classes, item + ".thresholds",
                                     field.probability)
        profiles[name] = ProfileSettings(temperatures, np.asarray(thresholds, dtype=np.float64))
    return profiles


def default_profiles(models, num_classes):
    """Profile settings before calibration: T = 1, the single model's operating_thr, DEFAULT_FUSED_THR."""
    return _parse_profiles({}, models, num_classes, "default profiles")


def _single_model(models):
    """The model the single profile runs: the balanced variant, else the first (see edge.profiles)."""
    for spec in models:
        if spec.variant == "balanced":
            return spec
    return models[0]


def _parse_deployment(raw, where):
    from edge.energy import DeploymentProfile

    if raw is None:
        return None
    try:
        return DeploymentProfile.from_dict(field.mapping(raw, where + " deployment"))
    except (ConfigError, TypeError) as e:
        raise BundleError("%s deployment: %s" % (where, e)) from e


def _v1_deployment(manifest, where):
    """Schema 1 carried only a budget (energy.budget_wh_day); the rest takes DeploymentProfile's defaults."""
    energy = manifest.get("energy") or {}
    budget = field.mapping(energy, where + " energy").get("budget_wh_day")
    if budget is None:
        return None
    return _parse_deployment({"budget_wh_day": field.number(budget, where + " energy.budget_wh_day", 0.0,
                                                            low_open=True), "capture_interval_s": 60.0}, where)


def parse_manifest(manifest, root, verify=True):
    where = os.path.join(root, MANIFEST)
    field.mapping(manifest, where)
    version = field.integer(field.require(manifest, "schema_version", where), where + " schema_version")
    if version not in READABLE_SCHEMAS:
        raise BundleError("%s: schema_version %d; this runtime reads versions %s (upgrade reefwatch or rebuild "
                          "the bundle)" % (where, version, ", ".join(map(str, READABLE_SCHEMAS))))
    field.choice(field.require(manifest, "target", where), TARGETS, where + " target")
    entries = field.array(field.require(manifest, "models", where), where + " models", field.MAX_MODELS)
    models = [_parse_model(m, i, root, verify, version) for i, m in enumerate(entries)]
    if not models:
        raise BundleError("%s: the models list is empty" % where)
    if len(set(m.name for m in models)) != len(models):
        raise BundleError("%s models: names %s are not unique" % (where, [m.name for m in models]))
    classes = _parse_classes(field.require(manifest, "classes", where), where)
    calibration = field.mapping(manifest.get("calibration", {}), where + " calibration")
    temperatures = _temperatures(calibration.get("temperatures", 1.0), len(classes), where + " calibration.temperatures")
    fusion = _parse_fusion(manifest.get("fusion"), where)
    try:
        plan = view_plan(manifest.get("tta", "none"))
    except (ConfigError, TypeError, ValueError) as e:
        raise BundleError("%s tta: %s" % (where, e)) from e
    if version == 1:
        return Bundle(root, manifest, models, classes, temperatures, plan, fusion,
                      deployment=_v1_deployment(manifest, where))
    profiles = _parse_profiles(manifest.get("profiles", {}), models, len(classes), where)
    gate = manifest.get("gate")
    default_profile = manifest.get("default_profile")
    if default_profile is not None:
        from edge.profiles import PROFILES

        field.choice(default_profile, PROFILES, where + " default_profile")
    return Bundle(root, manifest, models, classes, temperatures, plan, fusion, profiles,
                  _parse_deployment(manifest.get("deployment"), where),
                  None if gate is None else field.gate_record(gate, where + " gate"), default_profile)


def gate_warning(bundle):
    """The warning a bundle that failed the trainer's budget gate deserves (shipped with --force), else None."""
    gate = getattr(bundle, "gate", None)
    if not gate or gate["passed"]:
        return None
    return "bundle %s FAILED the trainer's budget gate%s and was shipped with --force: %s" % (
        bundle.root, " (profile %s)" % gate["profile"] if gate.get("profile") else "", "; ".join(gate["failures"]))


def read_manifest(root):
    """The manifest.json of a bundle folder as JSON, refusing huge or deeply nested files by name."""
    path = os.path.join(root, MANIFEST)
    try:
        if os.path.getsize(path) > MAX_MANIFEST_BYTES:
            raise BundleError("%s is over %d MB; a manifest is a few kB" % (path, MAX_MANIFEST_BYTES >> 20))
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except RecursionError as e:
        raise BundleError("%s is nested too deeply to be a manifest" % path) from e
    except (OSError, ValueError) as e:
        raise BundleError("cannot read %s: %s" % (path, e)) from e


def load_bundle(path, verify=True, extract_dir=None, cache_dir=None):
    """Load and verify a bundle folder or .tar.gz; any fault is a BundleError naming it.

    An archive is extracted once per checksum into a managed cache folder
    (see edge.bundle_cache); `extract_dir` extracts into that folder instead.
    """
    if not os.path.exists(path):
        raise BundleError("bundle %s does not exist" % path)
    root = path
    if os.path.isfile(path):
        from edge.bundle_cache import extract_archive

        root = extract_archive(path, extract_dir=extract_dir, cache_dir=cache_dir)
    elif not os.path.isdir(path):
        raise BundleError("bundle %s is neither a folder nor a .tar.gz file" % path)
    manifest = read_manifest(root)
    try:
        return parse_manifest(manifest, os.path.abspath(root), verify=verify)
    except RecursionError as e:
        raise BundleError("%s is nested too deeply to be a manifest" % os.path.join(root, MANIFEST)) from e


def model_entry(name, variant, file_name, out_dir, input_size, batch, decode_thr=DEFAULT_DECODE_THR, iou_thr=DEFAULT_NMS_IOU,
                fusion_weight=1.0, operating_thr=None, multi_label=True):
    path = os.path.join(out_dir, file_name)
    ext = os.path.splitext(file_name)[1]
    if ext not in FORMATS:
        raise BundleError("model file %s: unknown extension %r; expected one of %s" % (file_name, ext, sorted(FORMATS)))
    return {"name": name, "variant": variant, "file": file_name, "sha256": sha256_of(path),
            "format": FORMATS[ext], "input_size": list(input_size), "batch": batch,
            "decode_thr": decode_thr, "iou_thr": iou_thr, "fusion_weight": fusion_weight, "multi_label": multi_label,
            "operating_thr": DEFAULT_VARIANT_THR[variant] if operating_thr is None else operating_thr}


def write_bundle(out_dir, manifest):
    """Write manifest.json atomically and load the result back, so a bad bundle never ships."""
    with atomic_output(os.path.join(out_dir, MANIFEST)) as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write("\n")
    return load_bundle(out_dir)


def profiles_entry(num_classes, thresholds=None, temperatures=None):
    """Schema 2 `profiles` with per-class lists; `thresholds`/`temperatures` map profile -> number or list."""
    entry = {}
    for name in CALIBRATED_PROFILES:
        item = {}
        for key, given in (("thresholds", thresholds), ("temperatures", temperatures)):
            value = (given or {}).get(name)
            if value is not None:
                item[key] = [float(value)] * num_classes if isinstance(value, (int, float)) else list(value)
        entry[name] = item
    return entry


def make_manifest(models, classes, tta="full", fusion=None, target="x86-cpu", thresholds=None, temperatures=None,
                  deployment=None, energy=None, accuracy=None, software=None, calibration_method=None, gate=None,
                  default_profile=None):
    """A schema 2 manifest. `thresholds` / `temperatures` map profile -> value (number or one per class);
    profiles not named take the defaults (the single model's operating_thr, DEFAULT_FUSED_THR; T = 1).
    `gate` (the trainer's verdict) and `default_profile` are left out when None (optional fields).
    """
    fused = dict(DEFAULT_FUSION)
    fused.update(fusion or {})
    fused.pop("score_thr", None)  # schema 2 thresholds live in the profiles
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "target": target,
        "models": models,
        "classes": [{"id": c[0], "name": c[1], "category": c[2]} for c in classes],
        "profiles": profiles_entry(len(classes), thresholds, temperatures),
        "calibration": {"method": calibration_method or ("per-class temperature" if temperatures else "identity")},
        "tta": plan_to_json(view_plan(tta)),
        "fusion": fused,
        "deployment": deployment.to_dict() if hasattr(deployment, "to_dict") else deployment,
        "energy": energy or {},
        "accuracy": accuracy or {},
        "software": software or {},
    }
    for key, value in (("gate", gate), ("default_profile", default_profile)):
        if value is not None:
            manifest[key] = value
    return manifest


def copy_model(src, out_dir, name):
    import shutil

    if not os.path.isfile(src):
        raise BundleError("model file %s does not exist" % src)
    file_name = "models/%s%s" % (name, os.path.splitext(src)[1])
    os.makedirs(os.path.join(out_dir, "models"), exist_ok=True)
    shutil.copyfile(src, os.path.join(out_dir, file_name))
    return file_name


def archive_bundle(bundle_dir, archive_path):
    import tarfile

    with tarfile.open(archive_path, "w:gz") as tar:
        tar.add(bundle_dir, arcname=".")
    return archive_path
