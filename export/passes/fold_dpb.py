"""fold_dpb: the dynamic position bias MLP, evaluated ahead of time.

Pattern (per block), with T = (2gh-1)(2gw-1) offsets of the runtime group shape:

    offsets [T, 2] --(attn/pos/: Gemm, LN, ReLU, Gemm, LN, ReLU, Gemm, LN, ReLU, Gemm)--> table [T, heads]

becomes, for a largest group shape (GH, GW) known ahead (a static size, or an engine profile's max):

    offsets --MatMul([[2GW-1], [1]]) + const --Cast(int64)--> row ---------------------------.
    centred [heads, 2GH-1, 2GW-1] --Reshape([heads, -1])--Transpose--> T_max [(2GH-1)(2GW-1), heads] --Gather--> table

The MLP runs once, here, on the (2GH-1)(2GW-1) largest offsets; at run time only a gather remains.
With a static size the offsets are constant too, and constant folding then leaves one bias
[heads, N, N] per block. The table is stored centred, as the fused op takes it, so that
fuse_grouped_attention hands the op that constant directly (``folded_table``); cleanup folds the
Reshape and Transpose of a constant for the targets that keep the gather.
Unbounded dynamic shapes keep the shape-aware MLP (do not run this pass).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs
import onnxruntime as ort

from crossformer_deploy.export.passes.blocks import PassError, blocks, expect, max_group, scope_boundary
from crossformer_deploy.model.config import CrossFormerConfig


def _as_input(t: gs.Tensor, rows: str) -> gs.Variable:
    if isinstance(t, gs.Constant):
        t.to_variable(dtype=np.float32, shape=[rows, 2])
        t.inputs.clear()
        return t
    t.inputs.clear()  # cut it from whatever computed the offsets
    t.dtype, t.shape = np.float32, [rows, 2]
    return t


def _max_tables(graph: gs.Graph, ports: list[tuple[gs.Variable, gs.Variable, tuple[int, int]]]) -> list[np.ndarray]:
    """Run every block's DPB MLP (cut out of the graph) on its largest offset grid, in one session."""
    sub = graph.copy()
    tensors = sub.tensors()
    # one row count per offsets tensor: ONNX Runtime takes equal dim names for equal sizes (and reuses buffers)
    rows = {name: f"T{i}" for i, name in enumerate(dict.fromkeys(off.name for off, _, _ in ports))}
    sub.inputs = [_as_input(tensors[name], dim) for name, dim in rows.items()]
    sub.outputs = [tensors[tab.name].to_variable(dtype=np.float32, shape=[rows[off.name], "heads"])
                   for off, tab, _ in ports]
    sub.cleanup()
    model = gs.export_onnx(sub)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for off, _, (gh, gw) in ports:
        dh, dw = np.meshgrid(np.arange(1 - gh, gh), np.arange(1 - gw, gw), indexing="ij")
        feeds[off.name] = np.stack([dh.ravel(), dw.ravel()], axis=1).astype(np.float32)
    return sess.run([tab.name for _, tab, _ in ports], feeds)


def dpb_ports(graph: gs.Graph, prefix: str) -> tuple[gs.Tensor, gs.Variable]:
    """(offsets [T, 2], table [T, heads]) of a block's DPB MLP: the input of its first layer (a
    constant in a fixed-size graph) and the one tensor leaving ``attn/pos/``."""
    first = [n for n in graph.nodes
             if (n.name or "").startswith(prefix + "attn/pos/pos_proj/") and n.op in ("Gemm", "MatMul")]
    _, leaving = scope_boundary(graph, prefix + "attn/pos/")
    if len(first) != 1 or len(leaving) != 1:
        raise PassError(f"{prefix}attn/pos/: expected one pos_proj layer and one output, found {len(first)} and "
                        f"{len(leaving)}")
    return first[0].inputs[0], leaving[0]


def fold_dpb(graph: gs.Graph, cfg: CrossFormerConfig, max_size: tuple[int, int]) -> gs.Graph:
    """Replace each block's DPB MLP by a gather from a table precomputed for inputs up to ``max_size``."""
    ports = []
    for blk in blocks(graph):
        offsets, table = dpb_ports(graph, blk.prefix)
        ports.append((offsets, table, max_group(cfg, blk.stage, blk.lda, tuple(max_size)), blk))
    expect(len(ports), sum(cfg.depths), "fold_dpb: DPB subgraphs")
    # Blocks whose offsets are one tensor (the exporter computes equal layout arithmetic once) are fed one grid:
    # the largest any of them needs (a table larger than a block needs is read only in its window).
    largest: dict[str, tuple[int, int]] = {}
    for offsets, _, (gh, gw), _ in ports:
        h, w = largest.get(offsets.name, (1, 1))
        largest[offsets.name] = (max(h, gh), max(w, gw))
    ports = [(offsets, table, largest[offsets.name], blk) for offsets, table, _, blk in ports]
    tables = _max_tables(graph, [p[:3] for p in ports])
    for (offsets, table, (gh, gw), blk), flat in zip(ports, tables):
        p = blk.prefix + "attn/dpb_folded/"
        coef = gs.Constant(p + "coef", np.array([[2 * gw - 1], [1]], np.float32))
        shift = gs.Constant(p + "shift", np.array((gh - 1) * (2 * gw - 1) + (gw - 1), np.float32))
        row = graph.layer(op="MatMul", name=p + "MatMul", inputs=[offsets, coef], outputs=[p + "lin"])[0]
        row = graph.layer(op="Add", name=p + "Add", inputs=[row, shift], outputs=[p + "row_f"])[0]
        row = graph.layer(op="Cast", name=p + "Cast", inputs=[row], outputs=[p + "row_i"],
                          attrs={"to": np.int64})[0]
        row = graph.layer(op="Reshape", name=p + "Reshape", inputs=[row, gs.Constant(p + "flat", np.array([-1]))],
                          outputs=[p + "row"])[0]
        table.inputs.clear()  # the MLP loses its consumer; cleanup removes it
        heads = flat.shape[1]
        centred = gs.Constant(blk.prefix + "attn/dpb_table", np.ascontiguousarray(
            flat.T.reshape(heads, 2 * gh - 1, 2 * gw - 1)))
        by_head = gs.Constant(p + "by_head_shape", np.array([heads, -1]))
        rows = graph.layer(op="Reshape", name=p + "Flatten", inputs=[centred, by_head], outputs=[p + "by_head"])[0]
        rows = graph.layer(op="Transpose", name=p + "Transpose", inputs=[rows], outputs=[p + "flat_table"],
                           attrs={"perm": [1, 0]})[0]
        graph.layer(op="Gather", name=p + "Gather", inputs=[rows, row], outputs=[table], attrs={"axis": 0})
    return graph.cleanup().toposort()


def folded_table(graph: gs.Graph, prefix: str) -> gs.Constant | None:
    """The centred table [heads, 2GH-1, 2GW-1] that ``fold_dpb`` left for a block (the constant its Gather reads
    through Reshape and Transpose), or None where it did not run."""
    gather = next((n for n in graph.nodes if n.name == prefix + "attn/dpb_folded/Gather"), None)
    if gather is None:
        return None
    transpose = gather.inputs[0].inputs[0] if gather.inputs[0].inputs else None
    reshape = transpose.inputs[0].inputs[0] if transpose is not None and transpose.inputs[0].inputs else None
    if transpose is None or reshape is None or transpose.op != "Transpose" or reshape.op != "Reshape" or \
            not isinstance(reshape.inputs[0], gs.Constant):
        raise PassError(f"{prefix}attn/dpb_folded/: expected Gather(Transpose(Reshape(table))) as fold_dpb writes it")
    return reshape.inputs[0]
