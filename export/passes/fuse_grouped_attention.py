"""fuse_grouped_attention: one ``crossformer::GroupedAttention`` node per block.

Pattern (per block; everything in ``{block}attn/`` between the two projections, plus the block's
layout arithmetic):

    qkv = attn/qkv(x) [B, H, W, 3C] -> index build -> Concat(zero token) -> Gather(group) -> Reshape
        -> Transpose -> MatMul(QK^T) -> Mul(scale) -> Add(DPB bias gathered [heads, N, N] + key mask)
        -> Softmax -> MatMul(V) -> Transpose -> Reshape -> Gather(ungroup, crop) -> attn/proj

becomes

    qkv -> GroupedAttention(qkv, table[heads, TH, TW]; num_heads, mode, group_size, interval, scale, family)
        -> attn/proj

Padding, masking, grouping and the bias gather happen inside the op (plugins/README.md). The table
is the centred table ``fold_dpb`` precomputed when it ran, else it is rebuilt at run time from the
DPB MLP's output [T, heads] (its last offset row is (gh-1, gw-1)).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from crossformer_deploy.export.passes.blocks import PassError, blocks, expect, scope_boundary, scope_nodes
from crossformer_deploy.export.passes.fold_dpb import dpb_ports, folded_table
from crossformer_deploy.model.config import CrossFormerConfig
from crossformer_deploy.plugins import op


def _centred_from_flat(graph: gs.Graph, prefix: str, heads: int) -> gs.Variable:
    """[T, heads] table of the runtime group -> [heads, 2gh-1, 2gw-1], reading gh from the offsets."""
    offsets, flat = dpb_ports(graph, prefix)
    p = prefix + "attn/dpb_centre/"
    last = graph.layer(op="Gather", name=p + "Last", inputs=[offsets, gs.Constant(p + "i", np.array(-1))],
                       outputs=[p + "last"], attrs={"axis": 0})[0]  # (gh-1, gw-1)
    dh = graph.layer(op="Gather", name=p + "Dh", inputs=[last, gs.Constant(p + "j", np.array([0]))],
                     outputs=[p + "dh"], attrs={"axis": 0})[0]
    rows = graph.layer(op="Add", name=p + "Rows", inputs=[
        graph.layer(op="Mul", name=p + "Twice", inputs=[dh, gs.Constant(p + "two", np.array([2.0], np.float32))],
                    outputs=[p + "dh2"])[0], gs.Constant(p + "one", np.array([1.0], np.float32))],
        outputs=[p + "rows_f"])[0]
    rows = graph.layer(op="Cast", name=p + "Cast", inputs=[rows], outputs=[p + "rows"], attrs={"to": np.int64})[0]
    shape = graph.layer(op="Concat", name=p + "Shape", inputs=[
        gs.Constant(p + "heads", np.array([heads])), rows, gs.Constant(p + "rest", np.array([-1]))],
        outputs=[p + "shape"], attrs={"axis": 0})[0]
    t = graph.layer(op="Transpose", name=p + "Transpose", inputs=[flat], outputs=[p + "t"], attrs={"perm": [1, 0]})[0]
    return graph.layer(op="Reshape", name=p + "Reshape", inputs=[t, shape], outputs=[p + "table"])[0]


def fuse_grouped_attention(graph: gs.Graph, cfg: CrossFormerConfig) -> gs.Graph:
    """Replace each block's grouped attention between the qkv and output projections by one node."""
    fused = 0
    for blk in blocks(graph):
        _, qkv_out = scope_boundary(graph, blk.prefix + "attn/qkv/")
        proj = [n for n in scope_nodes(graph, blk.prefix + "attn/proj/") if n.op == "MatMul"]
        if len(qkv_out) != 1 or len(proj) != 1:
            continue
        heads = cfg.num_heads[blk.stage]
        attrs = op.OpAttrs(heads, "lda" if blk.lda else "sda", cfg.group_sizes[blk.stage], cfg.intervals[blk.stage],
                           (cfg.stage_dim(blk.stage) // heads) ** -0.5, cfg.family)
        table = folded_table(graph, blk.prefix) or _centred_from_flat(graph, blk.prefix, heads)
        # the op's output has qkv's dtype (fp16 in an FP16 graph): the plugin says so, and the graph must too
        out = gs.Variable(blk.prefix + "attn/grouped_attention", dtype=qkv_out[0].dtype or np.float32)
        graph.nodes.append(gs.Node(op.NAME, name=blk.prefix + "attn/" + op.NAME, domain=op.DOMAIN,
                                   inputs=[qkv_out[0], table], outputs=[out], attrs=attrs.node_attrs()))
        proj[0].inputs[0] = out
        fused += 1
    expect(fused, sum(cfg.depths), "fuse_grouped_attention: qkv -> attention -> proj")
    graph.import_domains = [d for d in (graph.import_domains or []) if d.domain != op.DOMAIN]
    graph.cleanup().toposort()
    left = [n.op for n in graph.nodes if n.op in ("Softmax",)]
    if left:
        raise PassError(f"fuse_grouped_attention: {len(left)} Softmax nodes left after fusing")
    return graph
