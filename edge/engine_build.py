"""FP16 TensorRT engines from ONNX files through TensorRT's Python API (8.2 to 10): the one builder.

Used by `edge bundle engines` on the device and by `trainer export` where TensorRT imports. The
Python API exists because the Nano's trtexec (TensorRT 8.2, JetPack 4.6) has no --layerPrecisions:
layers that failed the trainer's FP16 parity check are kept FP32 here as layer precision
constraints, with the builder flag that makes TensorRT obey them rather than treat them as hints.

This module is standard-library only and Python 3.6 code on purpose: trainer's build_engines.sh
embeds its source as is, so an export folder copied to a Nano without reefwatch installed can
still build its engines with the device's python3. Build failures are RuntimeError; the callers
wrap them into their package's errors (edge.errors.BundleError, trainer.errors.TrainerError).
"""
import os
import tempfile

# A 4 GB Nano runs out of memory building without a workspace limit; about 1 GB is the usual setting.
DEFAULT_WORKSPACE_MB = 1024
# A dynamic-batch engine's optimization profile covers the full TTA plan's 7 views (edge's ONNX
# Runtime backend feeds at most 8 per call as well).
DYNAMIC_MAX_BATCH = 8


def tensorrt_module():
    """The tensorrt module where it imports (a Jetson, a GPU host), else None."""
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt


def build_engine(trt, onnx_path, engine_path, workspace_mb=DEFAULT_WORKSPACE_MB, fp32_layers=(), shape=None,
                 max_batch=DYNAMIC_MAX_BATCH):
    """Build an FP16 engine from an ONNX file with the TensorRT module `trt`; returns a summary dict.

    fp32_layers: layer (= ONNX node) names kept in FP32 by precision constraints; a name the parsed
    network lacks is refused. shape: (C, H, W) for an input with a dynamic batch (a profile from 1 to
    max_batch); None for a static one. The engine file is replaced atomically: a failed build leaves
    whatever was at engine_path before.
    """
    log = trt.Logger(trt.Logger.WARNING)
    # The ONNX parser finds plugin ops (EfficientNMS_TRT) only in a registry filled by this call.
    trt.init_libnvinfer_plugins(log, "")
    builder = trt.Builder(log)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, log)
    with open(onnx_path, "rb") as fh:
        if not parser.parse(fh.read()):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RuntimeError("TensorRT cannot parse %s: %s" % (onnx_path, "; ".join(errors)))
    config = builder.create_builder_config()
    set_workspace(trt, config, workspace_mb)
    config.set_flag(trt.BuilderFlag.FP16)
    constrained = keep_fp32(trt, network, config, fp32_layers, onnx_path)
    if shape is not None:
        profile = builder.create_optimization_profile()
        name = network.get_input(0).name
        profile.set_shape(name, (1,) + tuple(shape), (max_batch,) + tuple(shape), (max_batch,) + tuple(shape))
        config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT could not build an engine from %s (see its log above)" % onnx_path)
    write_atomically(engine_path, plan)
    return {"engine": engine_path, "tensorrt": trt.__version__, "fp16": True, "workspace_mb": int(workspace_mb),
            "fp32_layers": len(set(fp32_layers)), "constrained_layers": constrained}


def set_workspace(trt, config, workspace_mb):
    if hasattr(config, "set_memory_pool_limit"):      # 8.4+; max_workspace_size is gone in 10
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    else:                                              # 8.2 (JetPack 4.6)
        config.max_workspace_size = int(workspace_mb) << 20


def keep_fp32(trt, network, config, fp32_layers, onnx_path):
    """Constrain the named layers' float outputs to FP32; returns how many layers were constrained."""
    kept = set(fp32_layers)
    found, constrained = set(), 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.name not in kept:
            continue
        found.add(layer.name)
        floats = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in (trt.float32, trt.float16)]
        if floats:
            layer.precision = trt.float32
            for j in floats:
                layer.set_output_type(j, trt.float32)
            constrained += 1
    missing = sorted(kept - found)
    if missing:
        # An engine without them would be the FP16 model that failed the trainer's parity check.
        raise RuntimeError("the FP32 layers %s are not layers of the network TensorRT parsed from %s; the "
                           "layer list belongs to another export of the model: re-export it (trainer export) "
                           "or correct its fp32_layers" % (missing, onnx_path))
    if constrained:
        # Without this flag the builder treats precisions as hints and may still pick FP16 kernels.
        flag = getattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS", None) or trt.BuilderFlag.STRICT_TYPES
        config.set_flag(flag)
    return constrained


def write_atomically(path, data):
    """Write bytes to path through a temporary file in the same folder, so no reader sees half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
