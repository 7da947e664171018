"""A small fake of TensorRT's compiled core (``tensorrt.so``), enough to run NVIDIA's pure-Python
``tensorrt.plugin`` package (from the real ``tensorrt-cu12-bindings`` wheel) without libnvinfer.

It behaves as the bindings do where our plugin's correctness depends on it:
- ``PluginField.data`` is a 1-D array of ``length`` elements of the field's type (a CHAR field's bytes,
  its C terminator included when the producer counted it, as TensorRT's ONNX parser does);
- the plugin registry keys creators by (name, version, namespace);
- ``IExprBuilder`` builds dimension expressions that fold constants (as TensorRT does) and stay symbolic
  otherwise; ``evaluate`` gives their value once the profile's B, H, W are known;
- tensor descriptors carry dims, type, format and scale.

Nothing here is NVIDIA's code; the names and enum values follow TensorRT's public Python API.
"""
from __future__ import annotations

import enum
import importlib.util
import operator
import types
from collections.abc import Iterable

import numpy as np


class DataType(enum.IntEnum):
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


class TensorFormat(enum.IntEnum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    DHWC8 = 6
    CDHW32 = 7
    HWC = 8


class PluginFieldType(enum.IntEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10
    FP8 = 11
    INT4 = 12


FIELD_DTYPES = {
    PluginFieldType.FLOAT16: np.float16, PluginFieldType.FLOAT32: np.float32, PluginFieldType.FLOAT64: np.float64,
    PluginFieldType.INT8: np.int8, PluginFieldType.INT16: np.int16, PluginFieldType.INT32: np.int32,
    PluginFieldType.INT64: np.int64, PluginFieldType.CHAR: np.int8, PluginFieldType.UNKNOWN: np.uint8,
}


class DimensionOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    EQUAL = 5
    LESS = 6
    FLOOR_DIV = 7
    CEIL_DIV = 8


_OPS = {
    DimensionOperation.SUM: operator.add, DimensionOperation.PROD: operator.mul, DimensionOperation.MAX: max,
    DimensionOperation.MIN: min, DimensionOperation.SUB: operator.sub,
    DimensionOperation.EQUAL: lambda a, b: int(a == b), DimensionOperation.LESS: lambda a, b: int(a < b),
    DimensionOperation.FLOOR_DIV: operator.floordiv, DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b),
}


class QuickPluginCreationRequest(enum.IntEnum):
    UNKNOWN = 0
    PREFER_JIT = 1
    PREFER_AOT = 2
    STRICT_JIT = 3
    STRICT_AOT = 4


class TensorRTPhase(enum.IntEnum):
    BUILD = 0
    RUNTIME = 1


class PluginArgType(enum.IntEnum):
    INT = 0


class PluginArgDataType(enum.IntEnum):
    INT8 = 0
    INT16 = 1
    INT32 = 2


class PluginField:
    """(name, data, type): ``data`` is kept as raw bytes and read back as ``length`` elements of ``type``."""

    def __init__(self, name: str = "", data=b"", type: PluginFieldType = PluginFieldType.UNKNOWN):
        self.name, self.type = name, PluginFieldType(type)
        self._raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        itemsize = np.dtype(FIELD_DTYPES.get(self.type, np.uint8)).itemsize
        if len(self._raw) % itemsize:
            raise ValueError(f"field {name}: {len(self._raw)} bytes is not a whole number of {self.type.name}")
        self.size = len(self._raw) // itemsize

    @property
    def data(self) -> np.ndarray:
        return np.frombuffer(self._raw, dtype=FIELD_DTYPES.get(self.type, np.uint8)).copy()


class PluginFieldCollection(list):
    pass


class IDimensionExpr:
    """A constant, a named profile dimension, or an operation on two expressions."""

    def __init__(self, value: int | None = None, symbol: str | None = None, op=None, args=()):
        self.value, self.symbol, self.op, self.args = value, symbol, op, tuple(args)

    def is_constant(self) -> bool:
        return self.value is not None

    def get_constant_value(self) -> int:
        if self.value is None:
            raise RuntimeError("not a constant expression")
        return self.value

    def is_size_tensor(self) -> bool:
        return False

    def evaluate(self, env: dict[str, int]) -> int:
        if self.value is not None:
            return self.value
        if self.symbol is not None:
            return env[self.symbol]
        a, b = (x.evaluate(env) for x in self.args)
        if self.op in (DimensionOperation.FLOOR_DIV, DimensionOperation.CEIL_DIV) and b == 0:
            raise ZeroDivisionError("dimension expression divides by zero")
        return _OPS[self.op](a, b)

    def __repr__(self) -> str:
        if self.value is not None:
            return str(self.value)
        if self.symbol is not None:
            return self.symbol
        return f"{self.op.name}({self.args[0]!r}, {self.args[1]!r})"


def symbol(name: str) -> IDimensionExpr:
    return IDimensionExpr(symbol=name)


class IExprBuilder:
    def constant(self, value: int) -> IDimensionExpr:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"IExprBuilder.constant takes an int, got {type(value).__name__}")
        return IDimensionExpr(value=int(value))

    def operation(self, op: DimensionOperation, first: IDimensionExpr, second: IDimensionExpr) -> IDimensionExpr:
        if not (isinstance(first, IDimensionExpr) and isinstance(second, IDimensionExpr)):
            raise TypeError("IExprBuilder.operation takes two IDimensionExpr")
        if first.is_constant() and second.is_constant():  # TensorRT folds constants
            return self.constant(IDimensionExpr(op=op, args=(first, second)).evaluate({}))
        return IDimensionExpr(op=op, args=(first, second))

    def declare_size_tensor(self, *args):
        raise NotImplementedError("size tensors are not used by our plugin")


class DimsExprs(list):
    def __init__(self, n: int | Iterable = 0):
        super().__init__([None] * n if isinstance(n, int) else list(n))


class Dims(list):
    MAX_DIMS = 8

    def __init__(self, shape: int | Iterable = 0):
        super().__init__([0] * shape if isinstance(shape, int) else [int(d) for d in shape])


class PluginTensorDesc:
    def __init__(self, dims=(), type: DataType = DataType.FLOAT, format: TensorFormat = TensorFormat.LINEAR,
                 scale: float = 1.0):
        self.dims, self.type, self.format, self.scale = Dims(dims), type, format, scale


class DynamicPluginTensorDesc:
    def __init__(self, desc: PluginTensorDesc, min=(), opt=(), max=()):
        self.desc, self.min, self.opt, self.max = desc, Dims(min), Dims(opt), Dims(max)


class Logger:
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    def __init__(self, severity: int = 2):
        self.severity, self.messages = severity, []

    def log(self, severity: int, msg: str) -> None:
        self.messages.append((severity, msg))


class _PluginRegistry:
    def __init__(self):
        self.creators: dict[tuple[str, str, str], object] = {}

    def register_creator(self, creator, namespace: str = "") -> bool:
        self.creators[(creator.name, creator.plugin_version, namespace)] = creator
        return True

    def get_creator(self, name: str, version: str, namespace: str = ""):
        return self.creators.get((name, version, namespace))


class _Interface:
    """Base of the binding's trampoline classes: Python subclasses call ``Base.__init__(self)``."""

    def __init__(self, *args, **kwargs):
        pass


def make_core(plugin_parent: str, version: str = "fake") -> types.ModuleType:
    """A fresh ``tensorrt`` module whose ``tensorrt.plugin`` is the package in ``plugin_parent/plugin``."""
    trt = types.ModuleType("tensorrt")
    spec = importlib.util.spec_from_loader("tensorrt", loader=None, is_package=True)
    spec.submodule_search_locations = [plugin_parent]
    trt.__spec__, trt.__path__, trt.__version__ = spec, [plugin_parent], version
    for cls in (DataType, TensorFormat, PluginFieldType, DimensionOperation, QuickPluginCreationRequest,
                TensorRTPhase, PluginArgType, PluginArgDataType, PluginField, PluginFieldCollection, IDimensionExpr,
                IExprBuilder, DimsExprs, Dims, PluginTensorDesc, DynamicPluginTensorDesc, Logger):
        setattr(trt, cls.__name__, cls)
    trt.ILogger = Logger
    for name in ("IPluginCreatorV3Quick", "IPluginV3", "IPluginV3QuickCore", "IPluginV3QuickBuild",
                 "IPluginV3QuickRuntime", "IPluginV3QuickAOTBuild", "ISymExpr", "ITensor"):
        setattr(trt, name, type(name, (_Interface,), {}))
    trt.float32, trt.float16, trt.int8, trt.int32 = DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32
    trt.bfloat16, trt.int64, trt.bool = DataType.BF16, DataType.INT64, DataType.BOOL
    registry = _PluginRegistry()
    trt.get_plugin_registry = lambda: registry
    trt.nptype = lambda t: {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT32: np.int32,
                            DataType.INT8: np.int8, DataType.INT64: np.int64, DataType.BOOL: np.bool_}[t]
    return trt
