"""ONNX export of ultralytics detectors, shaped for the edge runtime and TensorRT 8.2."""
import os
import shutil

from trainer.errors import TrainerError
from trainer.yolo import yolo

# TensorRT 8.2 (JetPack 4.6) parses ONNX opset <= 13; 12 is what ultralytics documents for it.
DEFAULT_OPSET = 12


def export_onnx(model, out_path, imgsz, batch=1, dynamic=False, opset=DEFAULT_OPSET, half=False):
    """Export a YOLO object or checkpoint path to ``out_path``; returns the path.

    dynamic=True gives a dynamic batch (and size) axis; a fixed batch > 1 lets
    TTA views go through one call on engines built without profiles.
    """
    model = yolo(model) if isinstance(model, str) else model
    try:
        exported = model.export(format="onnx", imgsz=imgsz, batch=batch, dynamic=dynamic, opset=opset,
                                simplify=False, half=half, device="cpu", verbose=False)
    except Exception as e:  # ultralytics raises bare Exceptions of many kinds; keep the cause
        raise TrainerError("ONNX export of %s failed: %s" % (getattr(model, "ckpt_path", model), e)) from e
    if not exported or not os.path.isfile(exported):
        raise TrainerError("ultralytics reported no ONNX file for %s" % (model,))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    shutil.move(exported, out_path)
    return out_path


def onnx_io(path):
    """(input name, input shape, output names) of an ONNX file; a dynamic axis is its name (e.g. 'batch')."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (OSError, DecodeError) as e:
        raise TrainerError("cannot read ONNX file %s: %s" % (path, e)) from e
    graph = model.graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    return graph.input[0].name, dims, [o.name for o in graph.output]
