"""Inference backends behind one small interface (see base.Backend).

Importing this package imports only numpy: onnxruntime, tensorrt and pycuda
are imported when a model is opened.
"""
import os

from edge.backends.base import Backend, run_batched
from edge.backends.fake import FakeBackend
from edge.backends.onnxruntime import OnnxRuntimeBackend
from edge.backends.tensorrt import TensorRTBackend
from edge.errors import BackendError

BACKENDS = {
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": TensorRTBackend,
    "fake": lambda path, **options: FakeBackend(model_path=path, **options),
}
# kind="auto" goes by the file's extension.
KIND_BY_SUFFIX = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}

__all__ = ["BACKENDS", "Backend", "BackendError", "FakeBackend", "OnnxRuntimeBackend", "TensorRTBackend",
           "open_backend", "run_batched"]


def open_backend(path, kind="auto", **options):
    """Open ``path`` with the backend ``kind`` (a key of BACKENDS, or "auto"); options go to its constructor."""
    path = str(path)
    if kind == "auto":
        suffix = os.path.splitext(path)[1].lower()
        if suffix not in KIND_BY_SUFFIX:
            raise BackendError("cannot tell the backend for %s from its extension %r; known extensions %s, "
                               "or pass kind= one of %s" % (path, suffix, sorted(KIND_BY_SUFFIX), sorted(BACKENDS)))
        kind = KIND_BY_SUFFIX[suffix]
    if kind not in BACKENDS:
        raise BackendError("unknown backend kind %r; choose one of %s" % (kind, ["auto"] + sorted(BACKENDS)))
    return BACKENDS[kind](path, **options)
