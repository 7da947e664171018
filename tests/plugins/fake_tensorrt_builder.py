"""What TensorRT's ONNX parser and builder do with a Python (quick) plugin, replayed on ``fake_tensorrt``.

- ``parser_fields``: onnx-tensorrt's ``loadFields``: for each field the creator declares, in the creator's
  order, the node's attribute of that name encoded as the parser encodes it (INT -> int32[1], FLOAT ->
  float32[1], STRING -> its bytes plus a counted C terminator); attributes the creator does not declare
  (``plugin_namespace``) are not passed, a declared one the node lacks is skipped (the parser warns).
- ``build_layer``: the IPluginV3 calls a build makes, in order: create_plugin, get_output_data_types,
  get_output_shapes, get_supported_format_combinations, then per combination matching the network's types
  configure_plugin, get_valid_tactics, and per tactic set_tactic, get_launch_params, get_kernel.
  Launch parameters and extra arguments stay dimension expressions; ``evaluate`` turns them into the
  numbers TensorRT would compute at enqueue for a concrete B, H, W.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from tests.plugins import fake_tensorrt as ft


def find_creator(trt, node: onnx.NodeProto):
    """The creator the parser picks: (op type, version "1", ``plugin_namespace`` attribute or the domain)."""
    ns = next((a.s.decode() for a in node.attribute if a.name == "plugin_namespace"), node.domain)
    return trt.get_plugin_registry().get_creator(node.op_type, "1", ns)


def parser_fields(creator, node: onnx.NodeProto) -> list[ft.PluginField]:
    attrs = {a.name: a for a in node.attribute}
    out = []
    for declared in creator.field_names:
        a = attrs.get(declared.name)
        if a is None:
            continue
        if a.type == onnx.AttributeProto.INT:
            out.append(ft.PluginField(a.name, np.array([a.i], np.int32), ft.PluginFieldType.INT32))
        elif a.type == onnx.AttributeProto.FLOAT:
            out.append(ft.PluginField(a.name, np.array([a.f], np.float32), ft.PluginFieldType.FLOAT32))
        elif a.type == onnx.AttributeProto.STRING:
            out.append(ft.PluginField(a.name, a.s + b"\0", ft.PluginFieldType.CHAR))
        elif a.type == onnx.AttributeProto.INTS:
            out.append(ft.PluginField(a.name, np.array(a.ints, np.int32), ft.PluginFieldType.INT32))
        elif a.type == onnx.AttributeProto.FLOATS:
            out.append(ft.PluginField(a.name, np.array(a.floats, np.float32), ft.PluginFieldType.FLOAT32))
        else:
            raise AssertionError(f"attribute {a.name}: type {a.type} is not a plugin field type the parser handles")
    return out


class _Setter:
    """TensorRT's launch-parameter / extra-argument sinks: attributes or items set to ISymExprs."""

    def __init__(self):
        self.items: dict[int, object] = {}
        self.nbSymExprs = 0

    def __setitem__(self, i: int, v) -> None:
        self.items[i] = v


@dataclass
class Kernel:
    name: str
    ptx: str
    launch: dict[str, object]  # grid_x ... shared_mem -> dimension expression
    extra: list[object]  # extra arguments, in order -> (dimension expression, PluginArgDataType)

    def evaluate(self, env: dict[str, int]) -> tuple[dict[str, int], list[int]]:
        launch = {k: _expr(v).evaluate(env) for k, v in self.launch.items()}
        return launch, [_expr(e).evaluate(env) for e in self.extra]


def _expr(v):
    return v.expr if hasattr(v, "expr") else v


@dataclass
class Layer:
    plugin: object
    output_types: list
    output_shapes: list  # DimsExprs per output
    combinations: list[tuple]  # (types, formats) offered
    chosen: list[tuple]  # the offered combinations that match the network's types
    kernels: dict[tuple, Kernel] = field(default_factory=dict)  # (types, tactic) -> kernel


def build_layer(creator, fields: list, inputs: list[tuple[tuple, object]],
                request=ft.QuickPluginCreationRequest.UNKNOWN) -> Layer:
    """Replay a build of one plugin layer. ``inputs``: (shape, dtype) per input, a shape's entries ints
    (static) or names ("B", "H", "W": dynamic, values given later to ``Kernel.evaluate``)."""
    plugin = creator.create_plugin(creator.name, creator.plugin_namespace, ft.PluginFieldCollection(fields),
                                   ft.TensorRTPhase.BUILD, request)
    plugin = plugin.get_capability_interface(0)
    types_in = [dt for _, dt in inputs]
    out_types = list(plugin.get_output_data_types(types_in, [len(s) for s, _ in inputs]))
    builder = ft.IExprBuilder()
    dims_in = [ft.DimsExprs([builder.constant(d) if isinstance(d, int) else ft.symbol(d) for d in s])
               for s, _ in inputs]
    out_shapes = plugin.get_output_shapes(dims_in, [], builder)
    n_in, n_io = len(inputs), len(inputs) + len(out_types)

    def descs(types):
        shapes = [[d if isinstance(d, int) else -1 for d in s] for s, _ in inputs]
        shapes += [[e.get_constant_value() if e.is_constant() else -1 for e in o] for o in out_shapes]
        return [ft.DynamicPluginTensorDesc(ft.PluginTensorDesc(s, t)) for s, t in zip(shapes, types)]

    flat = plugin.get_supported_format_combinations(descs(types_in + out_types), n_in)
    assert len(flat) % n_io == 0, "format combinations must come in groups of inputs + outputs"
    offered = [(tuple(d.type for d in flat[i:i + n_io]), tuple(d.format for d in flat[i:i + n_io]))
               for i in range(0, len(flat), n_io)]
    wanted = tuple(types_in + out_types)
    chosen = [c for c in offered if c[0] == wanted and all(f == ft.TensorFormat.LINEAR for f in c[1])]
    layer = Layer(plugin, out_types, out_shapes, offered, chosen)
    for types, _formats in chosen:
        io = descs(list(types))
        plugin.configure_plugin(io[:n_in], io[n_in:])
        for tactic in plugin.get_valid_tactics():
            plugin.set_tactic(tactic)
            sym = _Setter()
            launch_params = type("LaunchParams", (), {})()
            plugin.get_launch_params(dims_in, io, n_in, launch_params, sym, builder)
            assert sym.nbSymExprs == len(sym.items)
            name, ptx = plugin.get_kernel([d.desc for d in io[:n_in]], [d.desc for d in io[n_in:]])
            layer.kernels[(types, tactic)] = Kernel(
                name.decode() if isinstance(name, bytes) else name, ptx.decode() if isinstance(ptx, bytes) else ptx,
                dict(vars(launch_params)), [sym.items[i] for i in range(sym.nbSymExprs)])
    return layer
