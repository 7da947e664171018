"""``crossformer::GroupedAttention`` as an ONNX function of standard ops: the ONNX Runtime path.

ONNX Runtime inlines model-local functions, so a graph whose attention was fused into one node per
block still runs (and is checked numerically) on any ONNX Runtime build; the tensorrt target keeps
the bare nodes for the plugin. The function body is the PyTorch reference (the model's own math)
traced once per attribute set: one function *overload* per (mode, group size, interval, heads,
scale, family), which ONNX (IR >= 10) and ONNX Runtime resolve per node.
"""
from __future__ import annotations

import io
import warnings

import onnx
import torch
from onnx import helper

from crossformer_deploy.model.attention import grouped_attention
from crossformer_deploy.model.config import Family
from crossformer_deploy.model.grouping import group_layout
from crossformer_deploy.plugins import op
from crossformer_deploy.plugins.op import OpAttrs
from crossformer_deploy.plugins.reference import crop_table


class _Reference(torch.nn.Module):
    """qkv [B, H, W, 3C] + centred table [heads, TH, TW] -> [B, H, W, C], traceable at any size."""

    def __init__(self, attrs: OpAttrs):
        super().__init__()
        self.attrs = attrs

    def forward(self, qkv: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        a = self.attrs
        shape = torch._shape_as_tensor(qkv)
        lay = group_layout(shape[1], shape[2], a.group_size, a.interval, a.lda, a.family)
        return grouped_attention(qkv, crop_table(table, lay.gh, lay.gw), lay, a.num_heads, a.scale)


def overload_name(attrs: OpAttrs) -> str:
    pp = "_pp" if attrs.family is Family.CROSSFORMER_PP else ""
    return (f"{attrs.mode}{pp}_g{attrs.group_size}_i{attrs.interval}_h{attrs.num_heads}"
            f"_s{attrs.scale:.8g}").replace(".", "p").replace("-", "m")


def make_function(attrs: OpAttrs, opset: int = 17) -> onnx.FunctionProto:
    """Trace the reference for one attribute set into a FunctionProto (overload ``overload_name``)."""
    heads = attrs.num_heads
    c = 32 * heads
    qkv, table = torch.randn(1, 15, 15, 3 * c), torch.randn(heads, 31, 31)  # table fits any group of 15x15
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Reference(attrs), (qkv, table), buf, dynamo=False, opset_version=opset,
                          input_names=["qkv", "table"], output_names=["out"],
                          dynamic_axes={"qkv": {0: "B", 1: "H", 2: "W", 3: "C3"}, "table": {1: "TH", 2: "TW"},
                                        "out": {0: "B", 1: "H", 2: "W"}})
    g = onnx.load_from_string(buf.getvalue()).graph
    # Functions have no initializers: turn them into Constant nodes.
    consts = [helper.make_node("Constant", [], [t.name], value=t) for t in g.initializer]
    return helper.make_function(op.DOMAIN, op.NAME, ["qkv", "table"], ["out"], consts + list(g.node),
                                [helper.make_opsetid("", opset)], attributes=list(op.NODE_ATTRS),
                                overload=overload_name(attrs))


def node_attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) if a.type != onnx.AttributeProto.STRING else a.s.decode()
            for a in node.attribute}


def attach_functions(model: onnx.ModelProto) -> int:
    """Give every GroupedAttention node its function overload, so ONNX Runtime can run the model.
    Returns the number of nodes bound."""
    made: dict[str, onnx.FunctionProto] = {f.overload: f for f in model.functions if f.domain == op.DOMAIN}
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    bound = 0
    for node in model.graph.node:
        if op.is_op_node(node.domain, node.op_type):
            attrs = OpAttrs.from_node(node_attrs(node))
            name = overload_name(attrs)
            if name not in made:
                made[name] = make_function(attrs, opset)
                model.functions.append(made[name])
            node.overload = name
            bound += 1
    model.ir_version = max(model.ir_version, 10)  # overloads need IR 10
    return bound
