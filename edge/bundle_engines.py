"""`edge bundle engines`: the TensorRT engines of a bundle, built on the device and recorded in its manifest.

Engines are specific to the TensorRT version and GPU that built them, so a trainer-made bundle
ships ONNX models only and the Jetson builds their engines here (FP16, each model's
`fp32_layers` kept FP32, through edge.engine_build). Each model without an engine (every model
with force) gets models/<name>.engine, and its manifest entry an `engine` {file, sha256,
tensorrt}. All engines are built into a staging folder first: a failed build changes nothing
(the old manifest and engines stay, no half-written file remains); only when every build has
succeeded are the engines moved into models/ and the manifest replaced (edge.bundle.write_bundle,
which loads the result back).
"""
import collections
import logging
import os
import re
import shutil
import tempfile
import time

from edge.atomic_file import write_atomically
from edge.bundle import MANIFEST, load_bundle, read_manifest, sha256_of, write_bundle
from edge.engine_build import DEFAULT_WORKSPACE_MB, DYNAMIC_MAX_BATCH, build_engine, tensorrt_module
from edge.errors import BundleError

logger = logging.getLogger(__name__)
# YOLO inputs are the letterboxed BGR frame's three channels (edge.tta).
INPUT_CHANNELS = 3


# constrained_layers: how many layers the build kept FP32; build_s and size_bytes as measured here.
BuiltEngine = collections.namedtuple("BuiltEngine", "name file build_s size_bytes tensorrt constrained_layers")
# A model's name becomes its engine's file name.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")


def require_tensorrt(trt=None):
    """The tensorrt module (`trt` when given), else a BundleError saying where it comes from."""
    trt = trt or tensorrt_module()
    if trt is None:
        raise BundleError("building TensorRT engines needs the tensorrt Python module, which does not import here: "
                          "run this on the Jetson; JetPack provides the tensorrt Python module (python3-libnvinfer "
                          "for the system python3 on JetPack 4.6)")
    return trt


def _bundle_folder(path):
    if os.path.isfile(path):
        raise BundleError("%s is a file; engines are written into a bundle folder: extract it first (mkdir bundle "
                          "&& tar -xzf %s -C bundle) and run this on the folder" % (path, path))
    if not os.path.isdir(path):
        raise BundleError("bundle folder %s does not exist" % path)
    return os.path.abspath(path)


def models_to_build(bundle, force=False):
    """The ModelSpecs that get an engine: those without one (all with force); every one must be ONNX."""
    not_onnx = ["%s (%s)" % (m.name, os.path.basename(m.path)) for m in bundle.models if m.format != "onnx"]
    if not_onnx:
        raise BundleError("bundle %s: models %s are not ONNX; engines are built from ONNX models: rebuild the "
                          "bundle from the ONNX exports (`trainer bundle`, or `edge bundle build --model "
                          "VARIANT=model.onnx`)" % (bundle.root, ", ".join(not_onnx)))
    todo = [m for m in bundle.models if force or m.engine_path is None]
    unsafe = [m.name for m in todo if not _FILE_NAME.match(m.name)]
    if unsafe:
        raise BundleError("bundle %s: model names %s cannot name engine files (letters, digits, '_', '-' and '.'); "
                          "rename them in manifest.json" % (bundle.root, unsafe))
    return todo


def engine_entry(file_name, root, tensorrt_version):
    """A model's manifest `engine`: file (relative to the bundle), sha256, and the TensorRT version that built it
    (an engine loads only under that version, on that GPU)."""
    return {"file": file_name, "sha256": sha256_of(os.path.join(root, file_name)), "tensorrt": tensorrt_version}


def engine_file(spec):
    return "models/%s.engine" % spec.name


def build_bundle_engines(bundle_dir, workspace_mb=DEFAULT_WORKSPACE_MB, force=False, trt=None, on_built=None):
    """Build the engines of a bundle folder and record them in its manifest; returns [BuiltEngine].

    on_built(BuiltEngine) is called after each build (builds take minutes on a Nano). An empty list
    means every model had an engine already (pass force to rebuild them).
    """
    root = _bundle_folder(bundle_dir)
    trt = require_tensorrt(trt)
    bundle = load_bundle(root)
    todo = models_to_build(bundle, force)
    if not todo:
        return []
    manifest = read_manifest(root)
    staging = tempfile.mkdtemp(prefix=".engines-", dir=root)
    try:
        built = [_build(trt, spec, staging, workspace_mb, on_built) for spec in todo]
        entries = {m["name"]: m for m in manifest["models"]}
        _commit(root, staging, built, manifest, entries)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return built


def _build(trt, spec, staging, workspace_mb, on_built):
    dynamic = spec.batch is None
    logger.info("building %s from %s (FP16, %d layers FP32, %s batch, workspace %d MiB)", engine_file(spec),
                os.path.basename(spec.path), len(spec.fp32_layers), "dynamic" if dynamic else "fixed", workspace_mb)
    staged = os.path.join(staging, spec.name + ".engine")
    start = time.monotonic()
    try:
        summary = build_engine(trt, spec.path, staged, workspace_mb, spec.fp32_layers,
                               shape=(INPUT_CHANNELS,) + tuple(spec.input_size) if dynamic else None,
                               max_batch=DYNAMIC_MAX_BATCH)
    except (RuntimeError, OSError) as e:
        raise BundleError("engine of model %r not built, nothing in the bundle was changed: %s"
                          % (spec.name, e)) from e
    done = BuiltEngine(spec.name, engine_file(spec), time.monotonic() - start, os.path.getsize(staged),
                       str(summary["tensorrt"]), summary["constrained_layers"])
    if on_built is not None:
        on_built(done)
    return done


def _commit(root, staging, built, manifest, entries):
    """Move the staged engines into models/ and replace the manifest; on a failure put back what was there."""
    manifest_path = os.path.join(root, MANIFEST)
    with open(manifest_path, "rb") as fh:
        old_manifest = fh.read()
    moved = []  # (final path, the previous file set aside or None)
    try:
        os.makedirs(os.path.join(root, "models"), exist_ok=True)
        for engine in built:
            final = os.path.join(root, engine.file)
            previous = None
            if os.path.exists(final):
                previous = os.path.join(staging, engine.name + ".engine.previous")
                os.replace(final, previous)
            moved.append((final, previous))
            os.replace(os.path.join(staging, engine.name + ".engine"), final)
            entries[engine.name]["engine"] = engine_entry(engine.file, root, engine.tensorrt)
        write_bundle(root, manifest)
    except BaseException as e:
        for final, previous in reversed(moved):
            if previous is not None:
                os.replace(previous, final)
            elif os.path.exists(final):
                os.remove(final)
        write_atomically(manifest_path, old_manifest)  # write_bundle may have replaced it before its check failed
        if isinstance(e, OSError):
            raise BundleError("cannot record the engines in %s: %s; the bundle was left as it was"
                              % (manifest_path, e)) from e
        raise
