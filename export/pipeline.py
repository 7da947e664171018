"""The ordered graph passes for each deployment target.

    plain        the exporter's graph, untouched
    onnxruntime  fold_dpb -> cleanup  (static or --max-size: no DPB MLP at run time; static: every shape folded)
    openvino     the same, then (static graphs) fold_layernorm_affine: LayerNorm scale / shift into the next Linear
    tensorrt     fold_dpb -> fuse_grouped_attention -> cleanup   (one plugin node per block)

fold_dpb runs where a largest size is known (a static graph's size, --max-size, an engine profile's
max); an unbounded dynamic graph keeps the shape-aware DPB subgraph.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import onnx
import onnx_graphsurgeon as gs

from crossformer_deploy.export.onnx_export import read_info, set_metadata
from crossformer_deploy.export.passes.blocks import architecture
from crossformer_deploy.export.passes.cleanup import cleanup
from crossformer_deploy.export.passes.fold_dpb import fold_dpb
from crossformer_deploy.export.passes.fold_layernorm_affine import fold_layernorm_affine
from crossformer_deploy.export.passes.fuse_grouped_attention import fuse_grouped_attention
from crossformer_deploy.model.config import CrossFormerConfig
from crossformer_deploy.plugins import op
from crossformer_deploy.plugins.onnx_function import attach_functions

TARGETS = ("plain", "onnxruntime", "openvino", "tensorrt")
Pass = Callable[[gs.Graph], gs.Graph]


def passes(target: str, cfg: CrossFormerConfig, max_size: tuple[int, int] | None,
           static: bool = False) -> list[tuple[str, Pass]]:
    fold = [("fold_dpb", lambda g: fold_dpb(g, cfg, max_size))] if max_size else []
    if target == "plain":
        return []
    if target == "onnxruntime":
        return [*fold, ("cleanup", cleanup)]
    if target == "openvino":  # measured on static classifiers on OpenVINO only (passes/fold_layernorm_affine.py)
        return [*fold, ("cleanup", cleanup), *([("fold_layernorm_affine", fold_layernorm_affine)] if static else [])]
    if target == "tensorrt":
        return [*fold, ("fuse_grouped_attention", lambda g: fuse_grouped_attention(g, cfg)), ("cleanup", cleanup)]
    raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")


def op_counts(graph: gs.Graph) -> Counter:
    return Counter(n.op for n in graph.nodes)


def explain_line(name: str, before: Counter, after: Counter) -> str:
    delta = {op: after[op] - before[op] for op in set(before) | set(after) if after[op] != before[op]}
    top = sorted(delta.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:8]
    changes = ", ".join(f"{op} {d:+d}" for op, d in top) or "no change"
    return f"{name:>24}: {sum(before.values()):5d} -> {sum(after.values()):5d} nodes ({changes})"


def run_pipeline(proto: onnx.ModelProto, target: str, max_size: tuple[int, int] | None = None,
                 explain: Callable[[str], None] | None = None, functions: bool | None = None) -> onnx.ModelProto:
    """Apply ``target``'s passes. ``functions`` attaches the fused op's ONNX function (default: for every
    target but tensorrt, whose engine gets the op from the plugin)."""
    info = read_info(proto)
    props = {p.key: p.value for p in proto.metadata_props}
    if max_size is None and not info.dynamic:
        max_size = tuple(info.input_size)
    cfg = architecture(props)
    graph = gs.import_onnx(proto)
    if explain:
        explain(f"{'exported':>24}: {len(graph.nodes):5d} nodes")
    for name, fn in passes(target, cfg, max_size, static=not info.dynamic):
        before = op_counts(graph)
        graph = fn(graph)
        if explain:
            explain(explain_line(name, before, op_counts(graph)))
    out = gs.export_onnx(graph)
    if any(n.domain == op.DOMAIN for n in out.graph.node):
        out.opset_import.append(onnx.helper.make_opsetid(op.DOMAIN, int(op.VERSION)))
        if functions if functions is not None else target != "tensorrt":
            attach_functions(out)
    set_metadata(out, {**props, "target": target,
                       "max_size": "null" if max_size is None else f"[{max_size[0]}, {max_size[1]}]"})
    if explain:
        top = ", ".join(f"{op} {c}" for op, c in op_counts(graph).most_common())
        explain(f"{'result':>24}: {len(out.graph.node):5d} nodes ({top})")
    return out
