"""The builder side of a fake ``tensorrt`` (tests/fakes/gpu.py fakes the runtime side only).

``install_builder(trt, api)`` adds Builder, OnnxParser, BuilderFlag, MemoryPoolType, the
network creation flag and the float types to a fake tensorrt module (FakeGpu's, so an engine it
writes also loads through the runtime fake). The parser reads the ONNX file with ``onnx`` and
makes one layer per node, named after it, with a float or int output as the graph says. Calls the
real TensorRT would reject, or silently ignore in a way that loses the intent, raise ProtocolError:
an implicit-batch network, the workspace set the other API version's way, a layer precision
without its output types or without a precision-constraints flag, an int output forced to float.
A plugin op (EfficientNMS_TRT, version 1) parses only after ``init_libnvinfer_plugins``, as with
the real parser, which otherwise reports that it has no importer for the op (parse() is False).
"""
import types

from tests.fakes.gpu import ProtocolError, make_plan


class BuilderFlag(object):
    FP16, INT8, STRICT_TYPES = "FP16", "INT8", "STRICT_TYPES"
    OBEY_PRECISION_CONSTRAINTS, PREFER_PRECISION_CONSTRAINTS = "OBEY_PRECISION_CONSTRAINTS", "PREFER"


class NetworkDefinitionCreationFlag(object):
    EXPLICIT_BATCH = 0


class MemoryPoolType(object):
    WORKSPACE = "WORKSPACE"


class _Tensor(object):
    def __init__(self, name, dtype, shape=None):
        self.name, self.dtype, self.shape = name, dtype, shape


class _Layer(object):
    def __init__(self, name, outputs):
        self.name = name
        self._outputs = outputs
        self._precision = None
        self.output_types = {}

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_output(self, index):
        return self._outputs[index]

    @property
    def precision(self):
        return self._precision

    @precision.setter
    def precision(self, dtype):
        self._precision = dtype

    def set_output_type(self, index, dtype):
        if self._outputs[index].dtype not in ("FLOAT", "HALF"):
            raise ProtocolError("set_output_type(%s) on the %s output of %s" % (dtype, self._outputs[index].dtype,
                                                                                 self.name))
        self.output_types[index] = dtype


class _Network(object):
    def __init__(self, flags):
        self.flags = flags
        self.layers = []
        self.inputs = []

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, index):
        return self.layers[index]

    def get_input(self, index):
        return self.inputs[index]


# Plugins TensorRT 8.2 to 10 register with init_libnvinfer_plugins, by ONNX op: the versions they answer.
PLUGINS = {"EfficientNMS_TRT": ("1",)}


class _Parser(object):
    registry = None    # the module's registered plugins, set by install_builder

    def __init__(self, network, logger):
        self.network = network
        self.errors = []

    def parse(self, data):
        import onnx
        from google.protobuf.message import DecodeError

        if not isinstance(data, (bytes, bytearray)):
            raise ProtocolError("OnnxParser.parse takes the file's bytes")
        try:
            model = onnx.load_from_string(bytes(data))
        except DecodeError as e:
            self.errors.append("not an ONNX model: %s" % e)
            return False
        model = onnx.shape_inference.infer_shapes(model)
        types_ = {v.name: v.type.tensor_type.elem_type for v in list(model.graph.value_info) + list(model.graph.output)}
        float_types = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
        for node in model.graph.node:
            if not onnx.defs.has(node.op_type, node.domain) and not self._plugin(node):
                return False
            outputs = [_Tensor(o, "FLOAT" if types_.get(o, onnx.TensorProto.FLOAT) in float_types else "INT32")
                       for o in node.output]
            self.network.layers.append(_Layer(node.name, outputs))
        graph_input = model.graph.input[0]
        dims = tuple(d.dim_value or -1 for d in graph_input.type.tensor_type.shape.dim)
        self.network.inputs.append(_Tensor(graph_input.name, "FLOAT", dims))
        return True

    def _plugin(self, node):
        """Whether a node TensorRT has no built-in importer for is a registered plugin (else an error is kept)."""
        import onnx

        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        version = attrs.get("plugin_version", b"1").decode()
        if node.op_type not in self.registry or version not in PLUGINS.get(node.op_type, ()):
            self.errors.append("No importer registered for op: %s (plugin version %s); plugins registered: %s"
                               % (node.op_type, version, sorted(self.registry)))
            return False
        return True

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]


class _Profile(object):
    def __init__(self):
        self.shapes = {}

    def set_shape(self, name, min_shape, opt_shape, max_shape):
        if not (len(min_shape) == len(opt_shape) == len(max_shape)):
            raise ProtocolError("profile shapes of %s differ in rank" % name)
        self.shapes[name] = (tuple(min_shape), tuple(opt_shape), tuple(max_shape))


class _Config(object):
    def __init__(self, api):
        self.api = api
        self.flags = set()
        self.profiles = []
        self.workspace_bytes = None

    def __setattr__(self, name, value):
        if name == "max_workspace_size":
            if self.api == "10":
                raise ProtocolError("max_workspace_size is gone in TensorRT 10; use set_memory_pool_limit")
            name = "workspace_bytes"
        object.__setattr__(self, name, value)

    def set_flag(self, flag):
        if flag == BuilderFlag.STRICT_TYPES and self.api == "10":
            raise ProtocolError("STRICT_TYPES is gone in TensorRT 10")
        self.flags.add(flag)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)


def _set_memory_pool_limit(self, pool, size):
    if pool != MemoryPoolType.WORKSPACE:
        raise ProtocolError("unknown memory pool %r" % (pool,))
    self.workspace_bytes = size


class _Builder(object):
    gpu = None
    config_class = _Config

    def __init__(self, logger):
        self.built = []   # (network, config) of every build, for the test to inspect

    def create_network(self, flags=0):
        if not flags & (1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH):
            raise ProtocolError("ONNX networks need the EXPLICIT_BATCH creation flag")
        return _Network(flags)

    def create_builder_config(self):
        return self.config_class(self.gpu.api)

    def create_optimization_profile(self):
        return _Profile()

    def build_serialized_network(self, network, config):
        constrained = [layer for layer in network.layers if layer.precision is not None]
        for layer in constrained:
            floats = [i for i in range(layer.num_outputs) if layer.get_output(i).dtype in ("FLOAT", "HALF")]
            if sorted(layer.output_types) != floats:
                raise ProtocolError("layer %s has a precision but not its output types" % layer.name)
        obeying = {BuilderFlag.OBEY_PRECISION_CONSTRAINTS, BuilderFlag.STRICT_TYPES} & config.flags
        if constrained and not obeying:
            raise ProtocolError("layer precisions without a precision-constraints flag are only hints")
        dynamic = network.inputs[0].shape[0] == -1
        if dynamic and not config.profiles:
            raise ProtocolError("a dynamic input needs an optimization profile")
        self.gpu.log.append(("build", network, config))
        self.built.append((network, config))
        chw = network.inputs[0].shape[1:]
        return make_plan(chw=chw, dtype="float32", batch=-1 if dynamic else network.inputs[0].shape[0])


def _bound(cls, gpu):
    # 8.2 configs have max_workspace_size only, 10 ones set_memory_pool_limit only (8.4-8.6 have both).
    config_class = _Config if gpu.api == "8.2" else type("_Config10", (_Config,),
                                                          {"set_memory_pool_limit": _set_memory_pool_limit})
    return type(cls.__name__, (cls,), {"gpu": gpu, "config_class": config_class})


def install_builder(gpu):
    """Add the builder API to FakeGpu `gpu`'s tensorrt module (api '8.2' or '10'); returns the module."""
    trt = gpu.tensorrt
    trt.Builder = _bound(_Builder, gpu)
    registry = set()
    trt.OnnxParser = type("_Parser", (_Parser,), {"registry": registry})
    trt.init_libnvinfer_plugins = lambda logger, namespace: registry.update(PLUGINS) or True
    trt.BuilderFlag = BuilderFlag if gpu.api == "8.2" else types.SimpleNamespace(
        **{k: v for k, v in vars(BuilderFlag).items() if not k.startswith("_") and k != "STRICT_TYPES"})
    trt.NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    trt.float32, trt.float16, trt.int32 = "FLOAT", "HALF", "INT32"
    trt.Logger.WARNING = "WARNING"
    if gpu.api == "10":
        trt.MemoryPoolType = MemoryPoolType
    return trt
