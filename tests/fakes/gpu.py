"""Fake ``tensorrt`` and ``pycuda.driver`` modules that check the call protocol.

``FakeGpu(api="8.2" | "10")`` builds both modules around one shared state:
device memory, the CUDA context stack, streams whose async operations only
happen at ``synchronize()`` (as on a real GPU, where a host buffer read
before synchronizing holds stale data), and an event log. Any protocol
violation raises ``ProtocolError`` at the offending call.

The fake engine is described by JSON in its plan bytes (see ``make_plan``)
and computes ``engine_output``: for every image, 2 * the sum of its pixels
plus the row index plus a tenth of the anchor index, in a (B, 4+nc, A) head.
"""
import functools
import json
import struct
import types
import weakref

import numpy as np

PLAN_MAGIC = b"FAKEPLAN"


class ProtocolError(AssertionError):
    """The backend called the fake GPU in an order or way the real one would not accept."""


def make_plan(chw=(3, 4, 4), nc=2, anchors=6, dtype="float32", batch=1, profile=(1, 2, 4),
              input_name="images", output_name="output0"):
    """Plan bytes for a fake engine; ``batch`` -1 makes the batch dynamic over ``profile`` (min, opt, max)."""
    spec = dict(chw=list(chw), nc=nc, anchors=anchors, dtype=dtype, batch=batch, profile=list(profile),
                input_name=input_name, output_name=output_name)
    return PLAN_MAGIC + json.dumps(spec).encode("utf-8")


def ultralytics_header(metadata):
    """The header ultralytics writes before the plan: 4-byte little-endian length, then JSON."""
    meta = json.dumps(metadata).encode("utf-8")
    return struct.pack("<i", len(meta)) + meta


def engine_output(images, nc, anchors):
    """What the fake engine computes, in float64: (B, 4+nc, A)."""
    images = np.asarray(images, dtype=np.float64)
    total = images.reshape(images.shape[0], -1).sum(axis=1)
    rows = np.arange(4 + nc, dtype=np.float64)[None, :, None]
    cols = np.arange(anchors, dtype=np.float64)[None, None, :] * 0.1
    return 2.0 * total[:, None, None] + rows + cols


class FakeGpu(object):
    def __init__(self, api="10"):
        if api not in ("8.2", "10"):
            raise ValueError("api is '8.2' or '10'")
        self.api = api
        self.log = []
        self.memory = {}           # device address -> uint8 array
        self.freed = set()
        self.context_stack = []
        self.retained = 0
        self.streams = {}          # handle -> stream
        self.execution_contexts = []  # weakrefs, to check they are released
        self._next_address = 0x10000
        self.driver = _make_driver(self)
        self.pycuda = types.ModuleType("pycuda")
        self.pycuda.driver = self.driver
        self.tensorrt = _make_tensorrt(self)

    def install(self, monkeypatch):
        import sys
        monkeypatch.setitem(sys.modules, "tensorrt", self.tensorrt)
        monkeypatch.setitem(sys.modules, "pycuda", self.pycuda)
        monkeypatch.setitem(sys.modules, "pycuda.driver", self.driver)
        return self

    def events(self, names=None):
        return [e[0] for e in self.log if names is None or e[0] in names]

    def require_context(self, what):
        if not self.context_stack:
            raise ProtocolError("%s called with no CUDA context current" % what)

    def allocate(self, nbytes):
        address = self._next_address
        self._next_address += max(int(nbytes), 1) + 0x100
        self.memory[address] = np.zeros(int(nbytes), np.uint8)
        return address

    def device_bytes(self, address, nbytes, what):
        if address in self.freed or address not in self.memory:
            raise ProtocolError("%s uses device address %#x that is not allocated" % (what, address))
        mem = self.memory[address]
        if nbytes > mem.size:
            raise ProtocolError("%s needs %d bytes at %#x; only %d allocated" % (what, nbytes, address, mem.size))
        return mem

    def last_htod(self, address):
        for event in reversed(self.log):
            if event[0] == "htod" and event[1] == address:
                return event
            if event[0] == "execute":
                return None  # no fresh input since the last execute
        return None


# pycuda.driver ------------------------------------------------------------

class CudaError(Exception):
    """pycuda.driver.Error."""


def _bound(cls, gpu):
    """A subclass of ``cls`` tied to one FakeGpu, so the backend can call ``cuda.Device(0)`` as usual."""
    return type(cls.__name__, (cls,), {"gpu": gpu})


class _Context(object):
    gpu = None

    def push(self):
        self.gpu.context_stack.append(self)
        self.gpu.log.append(("push",))

    def pop(self):
        if not self.gpu.context_stack or self.gpu.context_stack[-1] is not self:
            raise ProtocolError("pop of a context that is not current")
        self.gpu.context_stack.pop()
        self.gpu.log.append(("pop",))

    def detach(self):
        if self.gpu.retained <= 0:
            raise ProtocolError("detach without a retained context")
        self.gpu.retained -= 1
        self.gpu.log.append(("detach",))


class _Device(object):
    gpu = None

    def __init__(self, index):
        if index != 0:
            raise CudaError("cuDeviceGet failed: invalid device ordinal")

    def retain_primary_context(self):
        self.gpu.retained += 1
        self.gpu.log.append(("retain",))
        return _bound(_Context, self.gpu)()


class _DeviceAllocation(object):
    gpu = None

    def __init__(self, nbytes):
        self.gpu.require_context("mem_alloc")
        self.address = self.gpu.allocate(nbytes)

    def __int__(self):
        return self.address

    def free(self):
        self.gpu.require_context("DeviceAllocation.free")
        self.gpu.freed.add(self.address)
        self.gpu.log.append(("free", self.address))


class _Stream(object):
    """Async operations queue up and happen at synchronize(), in order."""
    gpu = None

    def __init__(self):
        self.gpu.require_context("Stream()")
        self.handle = 0x7000 + len(self.gpu.streams)
        self.pending = []
        self.gpu.streams[self.handle] = self

    def synchronize(self):
        self.gpu.require_context("synchronize")
        for op in self.pending:
            op()
        self.pending = []
        self.gpu.log.append(("synchronize",))


def _host_array(array, what):
    if not (isinstance(array, np.ndarray) and array.flags.c_contiguous):
        raise ProtocolError("%s needs a contiguous host array" % what)
    return array.reshape(-1).view(np.uint8)


def _memcpy_htod_async(gpu, dest, src, stream=None):
    gpu.require_context("memcpy_htod_async")
    host = _host_array(src, "memcpy_htod_async")
    address, nbytes = int(dest), host.size
    mem = gpu.device_bytes(address, nbytes, "memcpy_htod_async")

    def copy():
        mem[:nbytes] = host
    _enqueue(stream, copy, "memcpy_htod_async")
    gpu.log.append(("htod", address, nbytes, stream.handle))


def _memcpy_dtoh_async(gpu, dest, src, stream=None):
    gpu.require_context("memcpy_dtoh_async")
    host = _host_array(dest, "memcpy_dtoh_async")
    address, nbytes = int(src), host.size
    mem = gpu.device_bytes(address, nbytes, "memcpy_dtoh_async")

    def copy():
        host[:] = mem[:nbytes]
    _enqueue(stream, copy, "memcpy_dtoh_async")
    gpu.log.append(("dtoh", address, nbytes, stream.handle))


def _enqueue(stream, op, what):
    if not isinstance(stream, _Stream):
        raise ProtocolError("%s needs a pycuda Stream; got %r" % (what, stream))
    stream.pending.append(op)


def _pagelocked_empty(gpu, shape, dtype, order="C", mem_flags=0):
    gpu.require_context("pagelocked_empty")
    return np.empty(shape, dtype, order=order)


def _make_driver(gpu):
    driver = types.ModuleType("pycuda.driver")
    driver.Error = CudaError
    driver.Device = _bound(_Device, gpu)
    driver.Stream = _bound(_Stream, gpu)
    driver.mem_alloc = _bound(_DeviceAllocation, gpu)
    driver.memcpy_htod_async = functools.partial(_memcpy_htod_async, gpu)
    driver.memcpy_dtoh_async = functools.partial(_memcpy_dtoh_async, gpu)
    driver.pagelocked_empty = functools.partial(_pagelocked_empty, gpu)
    driver.init = lambda flags=0: gpu.log.append(("init",))
    return driver


# tensorrt -----------------------------------------------------------------

class DataType(object):
    FLOAT, HALF, INT32 = "FLOAT", "HALF", "INT32"


class TensorIOMode(object):
    INPUT, OUTPUT = "INPUT", "OUTPUT"


class Logger(object):
    WARNING = "WARNING"

    def __init__(self, severity="WARNING"):
        self.severity = severity


def nptype(dtype):
    return {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}[dtype]


class _Runtime(object):
    gpu = None

    def __init__(self, logger):
        if not isinstance(logger, Logger):
            raise TypeError("Runtime needs a tensorrt.Logger")

    def deserialize_cuda_engine(self, plan):
        self.gpu.require_context("deserialize_cuda_engine")
        if not isinstance(plan, (bytes, bytearray, memoryview)) or not bytes(plan).startswith(PLAN_MAGIC):
            self.gpu.log.append(("deserialize_failed",))
            return None  # as TensorRT does, after logging an error
        spec = json.loads(bytes(plan)[len(PLAN_MAGIC):].decode("utf-8"))
        return (EngineV8 if self.gpu.api == "8.2" else EngineV10)(self.gpu, spec)


def _make_tensorrt(gpu):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "8.2.1.8" if gpu.api == "8.2" else "10.3.0.26"
    trt.DataType, trt.TensorIOMode, trt.Logger, trt.nptype = DataType, TensorIOMode, Logger, nptype
    trt.Runtime = _bound(_Runtime, gpu)
    return trt


class _Engine(object):
    """Input 0 (B, C, H, W) -> output 1 (B, 4+nc, A); B is -1 for a dynamic batch."""

    def __init__(self, gpu, spec):
        self.gpu, self.spec = gpu, spec
        dt = "HALF" if spec["dtype"] == "float16" else "FLOAT"
        self._names = [spec["input_name"], spec["output_name"]]
        self._dtypes = [dt, dt]
        b = spec["batch"]
        self._shapes = [(b,) + tuple(spec["chw"]), (b, 4 + spec["nc"], spec["anchors"])]

    def _profile(self, index):
        if self._shapes[index][0] != -1:
            raise ProtocolError("profile shape asked of a fixed-shape tensor")
        chw = tuple(self.spec["chw"])
        return [(b,) + chw for b in self.spec["profile"]]

    def create_execution_context(self):
        self.gpu.require_context("create_execution_context")
        context = (ContextV8 if self.gpu.api == "8.2" else ContextV10)(self)
        self.gpu.execution_contexts.append(weakref.ref(context))
        return context


class EngineV8(_Engine):
    @property
    def num_bindings(self):
        return 2

    def binding_is_input(self, index):
        return index == 0

    def get_binding_name(self, index):
        return self._names[index]

    def get_binding_shape(self, index):
        return self._shapes[index]

    def get_binding_dtype(self, index):
        return self._dtypes[index]

    def get_profile_shape(self, profile_index, binding):
        index = self._names.index(binding) if isinstance(binding, str) else binding
        if profile_index != 0 or index != 0:
            raise ProtocolError("get_profile_shape(%r, %r): only profile 0 of the input exists"
                                % (profile_index, binding))
        return self._profile(0)


class EngineV10(_Engine):
    @property
    def num_io_tensors(self):
        return 2

    def get_tensor_name(self, index):
        return self._names[index]

    def get_tensor_mode(self, name):
        return TensorIOMode.INPUT if name == self._names[0] else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name):
        return self._shapes[self._names.index(name)]

    def get_tensor_dtype(self, name):
        return self._dtypes[self._names.index(name)]

    def get_tensor_profile_shape(self, name, profile_index):
        if profile_index != 0 or name != self._names[0]:
            raise ProtocolError("get_tensor_profile_shape(%r, %r): only profile 0 of the input exists"
                                % (name, profile_index))
        return self._profile(0)


class _ExecutionContext(object):
    def __init__(self, engine):
        self.engine, self.gpu = engine, engine.gpu
        self.input_shape = engine._shapes[0]

    def _set_shape(self, shape):
        shape = tuple(int(d) for d in shape)
        self.gpu.log.append(("set_shape", shape))
        declared = self.engine._shapes[0]
        if declared[0] != -1:
            if shape != declared:
                raise ProtocolError("shape %s set on a fixed-shape input %s" % (shape, declared))
            return True
        lo, _, hi = self.engine.spec["profile"]
        if shape[1:] != declared[1:] or not lo <= shape[0] <= hi:
            return False
        self.input_shape = shape
        return True

    def _shape(self, index):
        spec = self.engine.spec
        return self.input_shape if index == 0 else (self.input_shape[0], 4 + spec["nc"], spec["anchors"])

    def _enqueue(self, addresses, stream_handle):
        """Check what a real enqueue needs, then queue the computation on the stream."""
        gpu = self.gpu
        gpu.require_context("execute")
        if stream_handle not in gpu.streams:
            raise ProtocolError("execute on unknown stream handle %r" % (stream_handle,))
        if self.input_shape[0] < 0:
            raise ProtocolError("execute with the dynamic input shape not set")
        dtypes = [np.dtype(nptype(d)) for d in self.engine._dtypes]
        nbytes = [int(np.prod(self._shape(i))) * dtypes[i].itemsize for i in (0, 1)]
        mems = [gpu.device_bytes(addresses[i], nbytes[i], "execute binding %d" % i) for i in (0, 1)]
        fresh = gpu.last_htod(addresses[0])
        if fresh is None:
            raise ProtocolError("execute without copying the input to the device first")
        if fresh[2] != nbytes[0]:
            raise ProtocolError("input copy was %d bytes; the bound shape %s needs %d"
                                % (fresh[2], self.input_shape, nbytes[0]))
        if fresh[3] != stream_handle:
            raise ProtocolError("input copied on another stream than the one executed on")
        in_shape, spec = self._shape(0), self.engine.spec

        def compute():
            images = mems[0][:nbytes[0]].view(dtypes[0]).reshape(in_shape)
            out = engine_output(images, spec["nc"], spec["anchors"]).astype(dtypes[1])
            mems[1][:nbytes[1]] = out.reshape(-1).view(np.uint8)
        gpu.streams[stream_handle].pending.append(compute)
        gpu.log.append(("execute", in_shape))
        return True

    def __del__(self):
        self.gpu.log.append(("context_freed", bool(self.gpu.context_stack)))


class ContextV8(_ExecutionContext):
    def set_binding_shape(self, index, shape):
        if index != 0:
            raise ProtocolError("set_binding_shape on binding %d, which is not the input" % index)
        return self._set_shape(shape)

    def get_binding_shape(self, index):
        return self._shape(index)

    def execute_async_v2(self, bindings, stream_handle):
        if not isinstance(bindings, list) or len(bindings) != 2 or not all(isinstance(b, int) for b in bindings):
            raise ProtocolError("bindings must be a list of 2 int device pointers in binding order; got %r"
                                % (bindings,))
        return self._enqueue(bindings, stream_handle)


class ContextV10(_ExecutionContext):
    def __init__(self, engine):
        super(ContextV10, self).__init__(engine)
        self.addresses = {}

    def set_input_shape(self, name, shape):
        if name != self.engine._names[0]:
            raise ProtocolError("set_input_shape on %r, which is not the input" % name)
        return self._set_shape(shape)

    def get_tensor_shape(self, name):
        return self._shape(self.engine._names.index(name))

    def set_tensor_address(self, name, address):
        if name not in self.engine._names or not isinstance(address, int):
            raise ProtocolError("set_tensor_address(%r, %r)" % (name, address))
        self.addresses[name] = address
        self.gpu.log.append(("set_tensor_address", name))
        return True

    def execute_async_v3(self, stream_handle):
        missing = [n for n in self.engine._names if n not in self.addresses]
        if missing:
            raise ProtocolError("execute_async_v3 with no address for %s" % missing)
        return self._enqueue([self.addresses[n] for n in self.engine._names], stream_handle)
