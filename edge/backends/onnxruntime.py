"""ONNX Runtime backend: .onnx models on the CPU, or CUDA / TensorRT providers where installed."""
import os

import numpy as np

from edge.backends.base import Backend, check_input_dtype, dims_to_shape
from edge.errors import BackendError

# Preferred first; only those onnxruntime reports as available are used.
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
# ONNX has no optimization profile: a dynamic-batch model is fed at most this many images per call.
DEFAULT_DYNAMIC_MAX_BATCH = 8
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise BackendError("onnxruntime is not installed; pip install reefwatch[onnx]") from e
    return onnxruntime


class OnnxRuntimeBackend(Backend):
    """An .onnx model in an ``onnxruntime.InferenceSession``.

    ``providers`` None picks TensorRT, CUDA, CPU in that order among the
    available ones. ``max_batch`` applies to a dynamic batch dimension only
    (default 8); for a fixed batch it must be None or equal to it.
    ``spin_wait`` lets the session's threads spin between calls (ONNX Runtime's
    default). Off by default here: between frames a spinning thread burns a core
    of an energy-budgeted device for nothing, and it competes with the frame's
    letterboxing, decoding and fusion for the cores (edge.host_threads).
    """

    name = "onnxruntime"

    def __init__(self, path, providers=None, intra_op_threads=None, max_batch=None, spin_wait=False):
        super(OnnxRuntimeBackend, self).__init__()
        ort = _import_onnxruntime()
        self.model_path = str(path)
        if not os.path.isfile(self.model_path):
            raise BackendError("ONNX model %s does not exist" % self.model_path)
        available = list(ort.get_available_providers())
        if providers is None:
            providers = [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise BackendError("onnxruntime providers %s are not available here; available: %s"
                                   % (missing, available))
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
        try:
            self._session = ort.InferenceSession(self.model_path, sess_options=options, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own pybind classes (InvalidProtobuf, Fail, ...)
            raise BackendError("onnxruntime cannot load %s: %s" % (self.model_path, e)) from e
        self.providers = tuple(self._session.get_providers())
        self._read_io(max_batch)

    def _read_io(self, max_batch):
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise BackendError("%s has inputs %s; a detector must have exactly one image input"
                               % (self.model_path, [i.name for i in inputs]))
        spec = inputs[0]
        self.input_name = spec.name
        self.input_shape = dims_to_shape(spec.shape)
        if len(self.input_shape) != 4:
            raise BackendError("%s: input %r has shape %s; expected NCHW" % (self.model_path, spec.name, spec.shape))
        if spec.type not in _ORT_TYPES:
            raise BackendError("%s: input %r has type %s; expected one of %s"
                               % (self.model_path, spec.name, spec.type, sorted(_ORT_TYPES)))
        self.input_dtype = check_input_dtype(_ORT_TYPES[spec.type], self.model_path, spec.name)
        self.output_names = tuple(o.name for o in self._session.get_outputs())
        self.fixed_batch = self.input_shape[0]
        if self.fixed_batch is None:
            self.max_batch = int(max_batch) if max_batch is not None else DEFAULT_DYNAMIC_MAX_BATCH
            if self.max_batch < 1:
                raise BackendError("max_batch must be at least 1; got %d" % self.max_batch)
        elif max_batch is not None and int(max_batch) != self.fixed_batch:
            raise BackendError("%s has a fixed batch of %d; max_batch=%s does not fit it"
                               % (self.model_path, self.fixed_batch, max_batch))
        else:
            self.max_batch = self.fixed_batch

    def _run(self, batch):
        try:
            values = self._session.run(list(self.output_names), {self.input_name: batch})
        except Exception as e:  # onnxruntime's pybind error classes share no useful base
            raise BackendError("onnxruntime failed to run %s on a %s batch: %s"
                               % (self.model_path, batch.shape, e)) from e
        return dict(zip(self.output_names, values))

    def _close(self):
        self._session = None
