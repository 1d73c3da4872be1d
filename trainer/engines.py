"""FP16 TensorRT engines of the exported models, or the commands that build them on the device.

Engines are specific to the TensorRT version and GPU, so they are normally built on the Nano
itself: build_engines.sh runs trtexec per model (or `edge bundle engines` builds those of a
bundle). Layers that failed FP16 parity stay FP32 as TensorRT layer precision constraints;
trtexec only takes those from TensorRT 8.4 on (--layerPrecisions/--layerOutputTypes; the Nano's
JetPack 4.6 has 8.2.1), so for such a model on 8.2 the script runs edge's Python builder
(edge.engine_build, the one builder of edge and trainer) with the device's python3 TensorRT
bindings instead; the script embeds that module's source, so the export folder needs no reefwatch
on the device. Where `tensorrt` imports here (a Jetson or a GPU host), the same builder builds
them now. A model exported with an EfficientNMS_TRT tail (`export.efficient_nms`,
trainer.efficient_nms) is built from its `<variant>.nms.onnx`; the builder registers TensorRT's
plugins before parsing, as trtexec does itself.
"""
import inspect
import logging
import os
import shlex

from edge import engine_build
from edge.engine_build import DYNAMIC_MAX_BATCH, build_engine, tensorrt_module
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)


def engine_onnx(model):
    """The ONNX file a model dict's engine is built from: its EfficientNMS_TRT twin (nms_onnx) where it has one."""
    return model.get("nms_onnx") or model["onnx"]


def build_engines(models, out_dir, workspace_mb, trt=None):
    """Engines for [model dicts: name, onnx, nms_onnx (optional), fp32_layers, dynamic, shape (C, H, W)] when
    TensorRT is importable; None (the device builds them with build_engines.sh) when it is not."""
    trt = trt or tensorrt_module()
    if trt is None:
        return None
    engines = []
    for model in models:
        engine = os.path.join(out_dir, model["name"] + ".engine")
        try:
            summary = build_engine(trt, engine_onnx(model), engine, workspace_mb, model["fp32_layers"],
                                   shape=model["shape"] if model["dynamic"] else None, max_batch=DYNAMIC_MAX_BATCH)
        except RuntimeError as e:
            raise TrainerError("engine build of %s failed: %s" % (model["name"], e)) from e
        engines.append(dict(summary, name=model["name"], engine=os.path.basename(engine),
                            onnx=os.path.basename(engine_onnx(model))))
    return engines


# trtexec and build_engines.sh ----------------------------------------------------------

def trtexec_args(model, workspace_mb, layers_option=None, new_syntax=False):
    """trtexec arguments for one model dict (see build_engines); paths are relative to the script's folder.

    TensorRT 8.2 syntax by default (--workspace in MiB); new_syntax: 8.4+ (--memPoolSize, MiB as well).
    layers_option: the comma list of '<layer>:fp32' specs (8.4+ only).
    """
    name = model["name"]
    args = ["--onnx=%s" % os.path.basename(engine_onnx(model)), "--saveEngine=%s.engine" % name, "--fp16"]
    args.append("--memPoolSize=workspace:%d" % workspace_mb if new_syntax else "--workspace=%d" % workspace_mb)
    if model["dynamic"]:
        chw = "x".join(str(int(v)) for v in model["shape"])
        args += ["--minShapes=%s:1x%s" % (model["input"], chw),
                 "--optShapes=%s:%dx%s" % (model["input"], DYNAMIC_MAX_BATCH, chw),
                 "--maxShapes=%s:%dx%s" % (model["input"], DYNAMIC_MAX_BATCH, chw)]
    if layers_option:
        args += ["--precisionConstraints=obey", "--layerPrecisions=%s" % layers_option,
                 "--layerOutputTypes=%s" % layers_option]
    return args


def trtexec_command(model, workspace_mb):
    """The TensorRT 8.2 (JetPack 4.6) trtexec command line that builds one model without FP32 layers."""
    return " ".join(["trtexec"] + [shlex.quote(a) for a in trtexec_args(model, workspace_mb)])


def layers_file(model):
    return "%s.fp32_layers.txt" % model["name"]


def write_layer_files(models, out_dir):
    """One file per model with FP32 layers: their names, one a line (the script and its builder read it)."""
    for model in models:
        if model["fp32_layers"]:
            with open(os.path.join(out_dir, layers_file(model)), "w") as fh:
                fh.write("".join(name + "\n" for name in model["fp32_layers"]))


_SCRIPT_HEAD = r'''#!/usr/bin/env bash
# Builds the FP16 TensorRT engines of this export on the device (engines are specific to the
# TensorRT version and GPU). Written by `trainer export`; run it from anywhere: ./build_engines.sh
# Workspace %(workspace)d MiB (a 4 GB Nano runs out of memory without a limit).
# FP32 layers (kept after the FP16 parity check) need --layerPrecisions, which trtexec has from
# TensorRT 8.4 on; on 8.2 (JetPack 4.6) such a model is built by the python3 TensorRT builder below.
set -euo pipefail
cd "$(dirname "$0")"
TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"
if [ ! -x "$TRTEXEC" ]; then
    echo "build_engines.sh: trtexec not found (JetPack puts it in /usr/src/tensorrt/bin); set TRTEXEC=/path/to/trtexec" >&2
    exit 1
fi
if "$TRTEXEC" --help 2>&1 | grep -q -- '--layerPrecisions'; then NEW_TRTEXEC=1; else NEW_TRTEXEC=0; fi
'''

_BUILDER_HEAD = '''
build_with_python() {  # onnx engine workspace_mb layers_file [C H W]
    python3 - "$@" <<'PYTHON'
import sys

import tensorrt as trt

'''

_BUILDER_TAIL = '''

args = sys.argv[1:]
with open(args[3]) as fh:
    layers = [line.strip() for line in fh if line.strip()]
shape = tuple(int(v) for v in args[4:7]) or None
print(build_engine(trt, args[0], args[1], int(args[2]), layers, shape=shape))
PYTHON
}
'''


def _model_block(model, workspace_mb):
    """The script lines that build one model: inputs and outputs named, trtexec by version."""
    name = model["name"]
    lines = ["", "# %s: input %s %s, outputs %s" % (name, model["input"],
                                                     "x".join(str(v) for v in model["input_shape"]),
                                                     ", ".join(model["outputs"])),
             'echo "building %s.engine" >&2' % name]
    if not model["fp32_layers"]:
        lines.append('if [ "$NEW_TRTEXEC" = 1 ]; then')
        lines.append('    "$TRTEXEC" ' + " ".join(shlex.quote(a) for a in trtexec_args(model, workspace_mb,
                                                                                      new_syntax=True)))
        lines.append("else")
        lines.append('    "$TRTEXEC" ' + " ".join(shlex.quote(a) for a in trtexec_args(model, workspace_mb)))
        lines.append("fi")
        return lines
    layers = layers_file(model)
    option = "$(sed 's/$/:fp32/' %s | paste -sd, -)" % shlex.quote(layers)
    new = trtexec_args(model, workspace_mb, layers_option="@LAYERS@", new_syntax=True)
    lines.append("# %d layers stay FP32 (listed in %s)" % (len(model["fp32_layers"]), layers))
    lines.append('if [ "$NEW_TRTEXEC" = 1 ]; then')
    lines.append('    "$TRTEXEC" ' + " ".join('"%s"' % a.replace("@LAYERS@", option) if "@LAYERS@" in a
                                              else shlex.quote(a) for a in new))
    lines.append("else")
    shape = " ".join(str(int(v)) for v in model["shape"]) if model["dynamic"] else ""
    lines.append("    build_with_python %s %s %d %s %s" % (shlex.quote(os.path.basename(engine_onnx(model))),
                                                          shlex.quote(name + ".engine"),
                                                          workspace_mb, shlex.quote(layers), shape))
    lines.append("fi")
    return [line.rstrip() for line in lines]


def build_script(models, workspace_mb):
    """build_engines.sh for [model dicts: name, input, input_shape, outputs, dynamic, shape, fp32_layers,
    nms_onnx (optional)]."""
    text = _SCRIPT_HEAD % {"workspace": workspace_mb}
    if any(model["fp32_layers"] for model in models):
        text += _BUILDER_HEAD + inspect.getsource(engine_build) + _BUILDER_TAIL
    for model in models:
        text += "\n".join(_model_block(model, workspace_mb)) + "\n"
    return text + 'echo "built %d engine(s)" >&2\n' % len(models)


def write_script(models, out_dir, workspace_mb):
    """out_dir/build_engines.sh (executable) and the FP32 layer lists it reads; returns the script path."""
    write_layer_files(models, out_dir)
    path = os.path.join(out_dir, "build_engines.sh")
    with open(path, "w") as fh:
        fh.write(build_script(models, workspace_mb))
    os.chmod(path, 0o755)
    return path
