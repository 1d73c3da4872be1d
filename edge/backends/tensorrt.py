"""TensorRT backend for serialized .engine/.plan files, with pycuda buffers.

Two TensorRT Python APIs are served, chosen by ``hasattr(engine, "num_bindings")``:
the binding API of TensorRT 8.x (the Nano's JetPack 4.6 ships 8.2.1) and the
named-tensor API of TensorRT 8.5+/10 (the binding API is gone in 10).

CUDA context: each backend retains the device's *primary* context and pushes
it only for the duration of a call (load, run, close), then pops it. A
daemon that reloads bundles and runs inference from worker threads needs
exactly that: ``pycuda.autoinit`` would create a context at import time,
bind it to whichever thread imported first and keep it until exit, and
``make_context()`` per backend would put a second context (tens of MB of
the Nano's shared 4 GB) next to the primary one that TensorRT's runtime-API
calls use anyway. Releasing on close lets a reload hand everything back.
"""
import json
import os
import struct

import numpy as np

from edge.backends.base import Backend, check_input_dtype, dims_to_shape
from edge.errors import BackendError

_TRT_HINT = "TensorRT comes with JetPack 4.6 (python3-libnvinfer); pycuda: pip install reefwatch[trt]"


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendError("the tensorrt Python module is not importable. " + _TRT_HINT) from e
    try:
        import pycuda.driver as cuda
    except ImportError as e:
        raise BackendError("pycuda is not importable. " + _TRT_HINT) from e
    return trt, cuda


def tensorrt_available():
    """True when TensorRT and pycuda both import (a Jetson or a GPU host with them installed)."""
    try:
        _import_tensorrt()
    except BackendError:
        return False
    return True


def split_engine_header(data):
    """(plan bytes, metadata dict or None) of an engine file's bytes.

    ultralytics writes a 4-byte little-endian length and that many bytes of
    JSON metadata before the plan; plain TensorRT plans have no such header.
    """
    if len(data) >= 4:
        (length,) = struct.unpack("<i", data[:4])
        if 0 < length <= len(data) - 4:
            try:
                metadata = json.loads(data[4:4 + length].decode("utf-8"))
            except ValueError:  # UnicodeDecodeError and JSONDecodeError alike: plan bytes, not a header
                metadata = None
            if isinstance(metadata, dict):
                return data[4 + length:], metadata
    return data, None


class _Tensor(object):
    """One engine input or output with its host (page-locked) and device buffers."""

    __slots__ = ("name", "index", "is_input", "dtype", "engine_shape", "shape", "host", "device")

    def __init__(self, name, index, is_input, dtype, engine_shape):
        self.name, self.index, self.is_input = name, index, is_input
        self.dtype = np.dtype(dtype)
        self.engine_shape = tuple(int(d) for d in engine_shape)
        self.shape = None  # the shape bound for the current call
        self.host = None
        self.device = None

    @property
    def dynamic(self):
        return any(d < 0 for d in self.engine_shape)


class _BindingApi(object):
    """TensorRT 8.x: bindings by index, ``execute_async_v2(bindings, stream)``."""

    def __init__(self, trt, engine, context):
        self.engine, self.context = engine, context
        self.tensors = [
            _Tensor(engine.get_binding_name(i), i, bool(engine.binding_is_input(i)),
                    trt.nptype(engine.get_binding_dtype(i)), engine.get_binding_shape(i))
            for i in range(engine.num_bindings)]

    def profile_max(self, tensor):
        return tuple(self.engine.get_profile_shape(0, tensor.name)[2])

    def set_input_shape(self, tensor, shape):
        return self.context.set_binding_shape(tensor.index, tuple(shape))

    def bound_shape(self, tensor):
        return tuple(self.context.get_binding_shape(tensor.index))

    def bind_addresses(self):
        self._bindings = [int(t.device) for t in sorted(self.tensors, key=lambda t: t.index)]

    def execute(self, stream):
        return self.context.execute_async_v2(self._bindings, stream.handle)


class _TensorApi(object):
    """TensorRT 8.5+/10: named IO tensors, ``set_tensor_address`` and ``execute_async_v3(stream)``."""

    def __init__(self, trt, engine, context):
        self.engine, self.context = engine, context
        self.tensors = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            self.tensors.append(_Tensor(name, i, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                                        trt.nptype(engine.get_tensor_dtype(name)), engine.get_tensor_shape(name)))

    def profile_max(self, tensor):
        return tuple(self.engine.get_tensor_profile_shape(tensor.name, 0)[2])

    def set_input_shape(self, tensor, shape):
        return self.context.set_input_shape(tensor.name, tuple(shape))

    def bound_shape(self, tensor):
        return tuple(self.context.get_tensor_shape(tensor.name))

    def bind_addresses(self):
        # Buffers never move, so the addresses are set once for all calls.
        for t in self.tensors:
            if not self.context.set_tensor_address(t.name, int(t.device)):
                raise BackendError("TensorRT refused the device address of tensor %r" % t.name)

    def execute(self, stream):
        return self.context.execute_async_v3(stream.handle)


class TensorRTBackend(Backend):
    """A serialized TensorRT engine (ours or an ultralytics export) on CUDA device ``device``.

    Buffers are allocated once for the largest batch the engine accepts (the
    optimization profile's max for a dynamic engine); a smaller batch binds
    its own shape and copies only the bytes it uses. Only single-input engines
    and optimization profile 0 are supported.
    """

    name = "tensorrt"

    def __init__(self, path, device=0):
        super(TensorRTBackend, self).__init__()
        trt, cuda = _import_tensorrt()
        self._cuda = cuda
        self.model_path = str(path)
        self.trt_version = getattr(trt, "__version__", "unknown")
        plan, self.metadata = _read_engine_file(self.model_path)
        self._runtime = self._engine = self._context = self._api = self._stream = None
        self._tensors = []
        try:
            cuda.init()
            self._cuda_context = cuda.Device(int(device)).retain_primary_context()
        except cuda.Error as e:
            raise BackendError("cannot open CUDA device %s for %s: %s" % (device, self.model_path, e)) from e
        self._cuda_context.push()
        try:
            self._load(trt, plan)
        except BaseException:
            self._release()
            self._cuda_context.pop()
            self._cuda_context.detach()
            raise
        self._cuda_context.pop()

    def _load(self, trt, plan):
        cuda = self._cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise BackendError("TensorRT %s cannot deserialize %s: was it built by another TensorRT version or on "
                               "another GPU? Engines must be built on the device that runs them"
                               % (self.trt_version, self.model_path))
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError("TensorRT cannot create an execution context for %s" % self.model_path)
        api_class = _BindingApi if hasattr(self._engine, "num_bindings") else _TensorApi
        self._api = api_class(trt, self._engine, self._context)
        self._tensors = self._api.tensors
        self._read_input()
        self._stream = cuda.Stream()
        for t in self._tensors:
            t.shape = self._input_max_shape if t.is_input else self._api.bound_shape(t)
            if any(d < 0 for d in t.shape):
                raise BackendError("%s: output %r has a data-dependent shape %s; not supported"
                                   % (self.model_path, t.name, t.shape))
            t.host = cuda.pagelocked_empty(int(np.prod(t.shape)), t.dtype)
            t.device = cuda.mem_alloc(t.host.nbytes)
        self._api.bind_addresses()

    def _read_input(self):
        inputs = [t for t in self._tensors if t.is_input]
        if len(inputs) != 1:
            raise BackendError("%s has inputs %s; a detector must have exactly one image input"
                               % (self.model_path, [t.name for t in inputs]))
        (tensor,) = inputs
        if len(tensor.engine_shape) != 4:
            raise BackendError("%s: input %r has shape %s; expected NCHW"
                               % (self.model_path, tensor.name, tensor.engine_shape))
        self._input = tensor
        self.input_name = tensor.name
        self.input_shape = dims_to_shape(tensor.engine_shape)
        self.input_dtype = check_input_dtype(tensor.dtype, self.model_path, tensor.name)
        self.output_names = tuple(t.name for t in self._tensors if not t.is_input)
        self._input_max_shape = tensor.engine_shape
        if tensor.dynamic:
            self._input_max_shape = self._api.profile_max(tensor)
            # Bind the largest shape so the outputs report their largest sizes for allocation.
            self._set_input_shape(self._input_max_shape)
        self.fixed_batch = self.input_shape[0]
        self.max_batch = int(self._input_max_shape[0])

    def _set_input_shape(self, shape):
        if not self._api.set_input_shape(self._input, shape):
            raise BackendError("%s: input shape %s is outside the engine's optimization profile (max %s)"
                               % (self.model_path, tuple(shape), self._input_max_shape))

    def _run(self, batch):
        cuda = self._cuda
        self._cuda_context.push()
        try:
            source = self._input
            if source.dynamic:
                self._set_input_shape(batch.shape)
            used = source.host[:batch.size]
            used[:] = batch.reshape(-1)
            cuda.memcpy_htod_async(source.device, used, self._stream)
            if not self._api.execute(self._stream):
                raise BackendError("TensorRT failed to enqueue %s on a %s batch" % (self.model_path, batch.shape))
            results = []
            for t in self._tensors:
                if t.is_input:
                    continue
                shape = self._api.bound_shape(t) if source.dynamic else t.shape
                view = t.host[:int(np.prod(shape))]
                cuda.memcpy_dtoh_async(view, t.device, self._stream)
                results.append((t.name, view, shape))
            self._stream.synchronize()
        except cuda.Error as e:
            raise BackendError("CUDA error running %s: %s" % (self.model_path, e)) from e
        finally:
            self._cuda_context.pop()
        # Copies: the page-locked buffers are reused by the next call.
        return {name: view.reshape(shape).copy() for name, view, shape in results}

    def _close(self):
        self._cuda_context.push()
        try:
            if self._stream is not None:
                self._stream.synchronize()
            self._release()
        finally:
            self._cuda_context.pop()
            self._cuda_context.detach()

    def _release(self):
        """Free buffers, then context, engine and runtime, in that order, while the CUDA context is current."""
        for t in self._tensors:
            if t.device is not None:
                t.device.free()
            host_allocation = getattr(t.host, "base", None)
            if host_allocation is not None and hasattr(host_allocation, "free"):
                host_allocation.free()
            t.host = t.device = None
        self._tensors = []
        self._input = None
        self._api = None
        self._context = None
        self._engine = None
        self._runtime = None
        self._stream = None


def _read_engine_file(path):
    if not os.path.isfile(path):
        raise BackendError("TensorRT engine %s does not exist" % path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (IOError, OSError) as e:
        raise BackendError("cannot read TensorRT engine %s: %s" % (path, e)) from e
    if not data:
        raise BackendError("TensorRT engine %s is empty" % path)
    return split_engine_header(data)
