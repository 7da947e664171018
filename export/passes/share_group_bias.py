"""share_group_bias: store a folded attention bias once when every group has the same one.

Pattern (static graphs, after fold_dpb + cleanup): the attention scores get

    Add(scores [B, nG, heads, N, N], bias [nG, heads, N, N])     bias = DPB bias + key-padding mask

At sizes where a block pads nothing, the mask is zero everywhere and the nG slices of the bias are
identical; the pass then keeps one slice,

    Add(scores, bias[:1])                                          [1, heads, N, N], broadcast

which ONNX broadcasting makes the same sum while the Add reads nG times less constant memory (and the
file shrinks). Blocks that pad keep their per-group bias.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from crossformer_deploy.export.passes.blocks import PassError


def folded_biases(graph: gs.Graph) -> list[gs.Constant]:
    """The per-group bias constants that constant folding left in the attention Adds."""
    found = []
    for n in graph.nodes:
        if n.op == "Add" and "/attn/" in (n.name or ""):
            for t in n.inputs:
                if isinstance(t, gs.Constant) and t.values.ndim == 4 and t.shape[-1] == t.shape[-2] > 1:
                    found.append(t)
    return found


def share_group_bias(graph: gs.Graph) -> gs.Graph:
    biases = folded_biases(graph)
    if not biases:
        raise PassError("share_group_bias: no folded attention bias found (run it on a static graph after "
                        "fold_dpb and cleanup)")
    for c in biases:
        v = c.values
        if v.shape[0] > 1 and (v == v[:1]).all():
            c.values = np.ascontiguousarray(v[:1])
    return graph
