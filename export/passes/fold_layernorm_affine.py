"""fold_layernorm_affine: a LayerNorm's scale and shift moved into the Linear it feeds.

Pattern (every block's ``norm1 -> qkv`` and ``norm2 -> fc1`` of a static graph)::

    X -> LayerNormalization(gamma, beta, axis=-1) -> [Reshape | Transpose]* -> MatMul(W [C, N]) -> Add(b [N])

rewritten as::

    X -> LayerNormalization(1, 0, axis=-1) -> [Reshape | Transpose]* -> MatMul(diag(gamma) W) -> Add(b + beta W)

Exact in real arithmetic (``(n * gamma + beta) W + b = n (diag(gamma) W) + (beta W + b)``); in fp32 it moves the
last bits (CrossFormer-S logits within 1e-5 of the input graph's). The ops in between may only regroup tokens:
a Transpose that keeps the last axis last, a Reshape whose target's last dimension is C (row-major, so each row of
C channels stays one row): both keep channel c at position c, which is what lets gamma and beta cross them.
``Shape`` nodes may read the tensors on the way (a free batch's reshapes do): they see shapes only.

Why: OpenVINO turns a LayerNormalization into MVN and then an eltwise subgraph for the scale and shift (and, in an
INT8 graph, the activation's quantize step after it), one more pass over the tokens per LayerNorm. With a unit
scale and zero shift the eltwise ops are dropped and the quantize step fuses into the MVN (CrossFormer-S, AMX,
OpenVINO bf16 INT8 hybrid graph: 1.3-1.4 % faster at b1 and b8; benchmarks/README.md). OpenVINO target only.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

log = logging.getLogger(__name__)


def _const(tensor: gs.Tensor) -> np.ndarray | None:
    return tensor.values if isinstance(tensor, gs.Constant) else None


def _keeps_channels(node: gs.Node, channels: int) -> bool:
    """Whether ``node`` (one step between the LayerNorm and the MatMul) leaves channel c at position c."""
    if node.op == "Transpose":
        perm = list(node.attrs.get("perm", []))
        return bool(perm) and perm[-1] == len(perm) - 1
    if node.op == "Reshape":
        return _last_dim(node.inputs[1]) == channels
    return False


def _last_dim(shape: gs.Tensor) -> int | None:
    """The last entry of a Reshape's target shape: a constant, or a Concat (a free batch's shape) ending in one."""
    values = _const(shape)
    if values is None and len(shape.inputs) == 1 and shape.inputs[0].op == "Concat":
        values = _const(shape.inputs[0].inputs[-1])
    return int(values.reshape(-1)[-1]) if values is not None and values.size > 0 else None


def _only_consumer(tensor: gs.Tensor, graph: gs.Graph) -> gs.Node | None:
    """The one node that reads ``tensor``'s values (``Shape`` nodes read only its shape, which the fold keeps)."""
    readers = [n for n in tensor.outputs if n.op != "Shape"]
    if tensor in graph.outputs or len(readers) != 1:
        return None
    return readers[0]


def _linear_after(norm: gs.Node, channels: int, graph: gs.Graph) -> tuple[gs.Node, gs.Node, int] | None:
    """(MatMul, bias Add, the Add's input index of the bias) fed by ``norm`` through channel-keeping ops only, each
    tensor with one consumer."""
    tensor = norm.outputs[0]
    node = _only_consumer(tensor, graph)
    while node is not None and node.op in ("Reshape", "Transpose") and node.inputs[0] is tensor:
        if not _keeps_channels(node, channels):
            return None
        tensor = node.outputs[0]
        node = _only_consumer(tensor, graph)
    if node is None or node.op != "MatMul" or node.inputs[0] is not tensor:
        return None
    weight = _const(node.inputs[1])
    if weight is None or weight.ndim != 2 or weight.shape[0] != channels or len(node.inputs[1].outputs) != 1:
        return None
    add = _only_consumer(node.outputs[0], graph)
    if add is None or add.op != "Add":
        return None
    bias_at = 1 if add.inputs[0] is node.outputs[0] else 0
    bias = _const(add.inputs[bias_at])
    if bias is None or bias.shape != (weight.shape[1],) or len(add.inputs[bias_at].outputs) != 1:
        return None
    return node, add, bias_at


def fold_layernorm_affine(graph: gs.Graph) -> gs.Graph:
    """The graph with the scale and shift of every LayerNorm that feeds one Linear (see the module docstring)
    folded into that Linear's weight and bias; the LayerNorm keeps a unit scale and a zero shift. The number of
    folded LayerNorms is logged (the op counts do not change)."""
    folded = 0
    for norm in [n for n in graph.nodes if n.op == "LayerNormalization"]:
        if norm.attrs.get("axis", -1) != -1 or len(norm.inputs) < 2:
            continue
        gamma = _const(norm.inputs[1])
        beta = _const(norm.inputs[2]) if len(norm.inputs) > 2 else None
        if gamma is None or gamma.ndim != 1 or (len(norm.inputs) > 2 and beta is None):
            continue
        found = _linear_after(norm, gamma.shape[0], graph)
        if found is None:
            continue
        matmul, add, bias_at = found
        weight = matmul.inputs[1].values.astype(np.float64)
        bias = add.inputs[bias_at].values.astype(np.float64)
        if beta is not None:
            bias = bias + beta.astype(np.float64) @ weight
        dtype = matmul.inputs[1].values.dtype
        matmul.inputs[1] = gs.Constant(matmul.inputs[1].name + "_ln_folded", (gamma.astype(np.float64)[:, None]
                                                                               * weight).astype(dtype))
        add.inputs[bias_at] = gs.Constant(add.inputs[bias_at].name + "_ln_folded", bias.astype(dtype))
        norm.inputs[1] = gs.Constant(norm.name + "_unit_scale", np.ones_like(gamma))
        if beta is not None:
            norm.inputs[2] = gs.Constant(norm.name + "_zero_shift", np.zeros_like(beta))
        folded += 1
    log.info("fold_layernorm_affine: %d LayerNorms folded into the Linear they feed", folded)
    return graph.cleanup()
