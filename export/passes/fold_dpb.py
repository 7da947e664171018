"""fold_dpb: the dynamic position bias MLP, evaluated ahead of time.

Pattern (per block), with T = (2gh-1)(2gw-1) offsets of the runtime group shape:

    offsets [T, 2] --(attn/pos/: Gemm, LN, ReLU, Gemm, LN, ReLU, Gemm, LN, ReLU, Gemm)--> table [T, heads]

becomes, for a largest group shape (GH, GW) known ahead (a static size, or an engine profile's max):

    offsets --MatMul([[2GW-1], [1]]) + const --Cast(int64)--> row --Gather(T_max [(2GH-1)(2GW-1), heads])--> table

The MLP runs once, here, on the (2GH-1)(2GW-1) largest offsets; at run time only a gather remains.
With a static size the offsets are constant too, and constant folding then leaves one bias
[heads, N, N] per block. The table constant is named ``{block}attn/dpb_table_{2GH-1}x{2GW-1}`` so
that fuse_grouped_attention can hand the op the centred table [heads, 2GH-1, 2GW-1] directly.
Unbounded dynamic shapes keep the shape-aware MLP (do not run this pass).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from .blocks import Architecture, PassError, blocks, expect, scope_boundary


def _as_input(t: gs.Tensor) -> gs.Variable:
    if isinstance(t, gs.Constant):
        t.to_variable(dtype=np.float32, shape=["T", 2])
        t.inputs.clear()
        return t
    t.inputs.clear()  # cut it from whatever computed the offsets
    t.dtype, t.shape = np.float32, ["T", 2]
    return t


def _max_tables(graph: gs.Graph, ports: list[tuple[gs.Variable, gs.Variable, tuple[int, int]]]) -> list[np.ndarray]:
    """Run every block's DPB MLP (cut out of the graph) on its largest offset grid, in one session."""
    import onnxruntime as ort

    sub = graph.copy()
    tensors = sub.tensors()
    sub.inputs = [_as_input(tensors[off.name]) for off, _, _ in ports]
    sub.outputs = [tensors[tab.name].to_variable(dtype=np.float32, shape=["T", "heads"]) for _, tab, _ in ports]
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


def fold_dpb(graph: gs.Graph, arch: Architecture, max_size: tuple[int, int]) -> gs.Graph:
    """Replace each block's DPB MLP by a gather from a table precomputed for inputs up to ``max_size``."""
    ports = []
    for blk in blocks(graph):
        offsets, table = dpb_ports(graph, blk.prefix)
        ports.append((offsets, table, arch.max_group(blk.stage, blk.lda, max_size), blk))
    expect(len(ports), arch.num_blocks, "fold_dpb: DPB subgraphs")
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
        name = f"{blk.prefix}attn/dpb_table_{2 * gh - 1}x{2 * gw - 1}"
        graph.layer(op="Gather", name=p + "Gather", inputs=[gs.Constant(name, flat), row],
                    outputs=[table], attrs={"axis": 0})
    return graph.cleanup().toposort()



def folded_table(graph: gs.Graph, prefix: str) -> gs.Constant | None:
    """The centred table [heads, 2GH-1, 2GW-1] that ``fold_dpb`` left for a block, if it ran."""
    gather = next((n for n in graph.nodes if n.name == prefix + "attn/dpb_folded/Gather"), None)
    if gather is None:
        return None
    flat = gather.inputs[0]
    th, tw = (int(v) for v in flat.name.rsplit("_", 1)[1].split("x"))
    centred = flat.values.T.reshape(flat.values.shape[1], th, tw)
    return gs.Constant(prefix + "attn/dpb_table", np.ascontiguousarray(centred))
