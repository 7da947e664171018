"""transpose_after_dq: a per-tensor Q/DQ pair moved in front of the Transpose it follows.

Pattern (what ``quantize_static`` leaves before each attention's scores matmul: the keys' transpose, then its
Q/DQ pair)::

    X -> Transpose(perm) -> QuantizeLinear(s, z) -> DequantizeLinear(s, z) -> consumers

rewritten as::

    X -> QuantizeLinear(s, z) -> DequantizeLinear(s, z) -> Transpose(perm) -> consumers

Only where the scale and zero point of both are scalars (per-tensor): quantizing each element alone commutes with
moving it, so the result is bit-identical. Why: OpenVINO folds a Transpose that feeds a MatMul into the MatMul
(``transpose_b``) and moves dequantization through a Transpose, but a Transpose *behind* a Q/DQ pair runs as an
op of its own, in its reference implementation (CrossFormer-S INT8 at 224, b1, AMX: 1.1 ms of Transposes less
per inference; benchmarks/README.md).

Only where every consumer is a MatMul: in front of a ``Transpose(0, 3, 1, 2)`` that feeds a Conv (a channels-last
patch merging) OpenVINO 2026.4 computed wrong values from the moved pair (CrossFormer-S logits' cosine 0.976 against
0.9993 with the pair behind the Transpose, and 0.9993 on ONNX Runtime either way; benchmarks/README.md).
"""
from __future__ import annotations

import onnx
import onnx_graphsurgeon as gs


def _per_tensor(node: gs.Node) -> bool:
    return all(isinstance(t, gs.Constant) and t.values.size == 1 for t in node.inputs[1:])


def _only_consumer(tensor: gs.Tensor, op: str, graph: gs.Graph) -> gs.Node | None:
    if tensor in graph.outputs or len(tensor.outputs) != 1 or tensor.outputs[0].op != op:
        return None
    return tensor.outputs[0]


def transpose_after_dq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every per-tensor ``Transpose -> Q -> DQ`` chain turned into ``Q -> DQ -> Transpose``."""
    graph = gs.import_onnx(model)
    for t in [n for n in graph.nodes if n.op == "Transpose"]:
        q = _only_consumer(t.outputs[0], "QuantizeLinear", graph)
        dq = q and _only_consumer(q.outputs[0], "DequantizeLinear", graph)
        if dq is None or not (_per_tensor(q) and _per_tensor(dq)) or dq.outputs[0] in graph.outputs:
            continue
        if any(c.op != "MatMul" for c in dq.outputs[0].outputs):  # see the module docstring: only into a MatMul
            continue
        dequantized = dq.outputs[0]
        moved = gs.Variable(dequantized.name + "_transposed", dtype=dequantized.dtype)
        for consumer in list(dequantized.outputs):
            for j, tensor in enumerate(consumer.inputs):
                if tensor is dequantized:
                    consumer.inputs[j] = moved
        q.inputs[0] = t.inputs[0]
        t.inputs[0] = dequantized
        t.outputs[0] = moved
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    out.metadata_props.extend(model.metadata_props)  # onnx-graphsurgeon drops them; our ModelInfo lives there
    return out
