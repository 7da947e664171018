"""tokens_around_convs: a patch merging's layout changes written the way OpenVINO folds into its convolutions.

A CrossFormer patch merging (a cross-scale embedding between stages) takes tokens ``[B, L, C]`` to an image, runs
convolutions of several kernel sizes, concatenates them on channels and goes back to tokens. Our exporter writes::

    X [B, L, C] -> Transpose(0, 2, 1) -> Reshape([b, C, H, W]) -> Conv_1 .. Conv_k
    Conv_i [B, C_i, H', W'] -> Concat(axis=1) -> Reshape([b, C', L']) -> Transpose(0, 2, 1) -> Y [B, L', C']

rewritten as (what a plain export of the authors' model gives)::

    X [B, L, C] -> Reshape([b, H, W, C]) -> Transpose(0, 3, 1, 2) -> Conv_1 .. Conv_k
    Conv_i -> Reshape([b, C_i, L']) -> Transpose(0, 2, 1) -> Concat(axis=2) -> Y [B, L', C']

Only where the Reshapes' shapes are constants or the free-batch form ``Concat(batch of Shape(x), constants)`` and every
intermediate tensor has the one consumer of the pattern. Same values, moved by pure data movement: bit-identical.
Why: OpenVINO keeps convolution activations channels-last, so a channels-last view in front of a Conv and a
per-conv flatten behind it cost nothing, while our form needs a Transpose and two layout Reorders per merging
(CrossFormer-S b1 INT8 on Zen 4: ~0.6 ms of ~20; benchmarks/README.md).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs


def _const(t: gs.Tensor) -> np.ndarray | None:
    return t.values if isinstance(t, gs.Constant) else None


def _single(tensor: gs.Tensor, op: str, graph: gs.Graph) -> gs.Node | None:
    """The only consumer of ``tensor`` when it is an ``op`` (and ``tensor`` is no graph output)."""
    if tensor in graph.outputs or len(tensor.outputs) != 1 or tensor.outputs[0].op != op:
        return None
    return tensor.outputs[0]


BATCH, CHANNELS = "B", "C"  # symbolic entries of a run-time shape: the source's dims 0 and 1


def _shape_entries(shape: gs.Tensor, source: gs.Tensor) -> list | None:
    """The Reshape target ``shape`` as entries: ints, BATCH / CHANNELS for dims 0 / 1 of ``source`` read at run
    time (what a graph with a free batch computes: ``Concat(Unsqueeze(Gather(Shape(source), 0)), ...)`` or
    ``Concat(Slice(Shape(source), 0, 2), ...)``); None for anything else."""
    if isinstance(shape, gs.Constant):
        return [int(v) for v in shape.values.reshape(-1)]
    producer = shape.inputs[0] if len(shape.inputs) == 1 else None
    if producer is None or producer.op != "Concat" or producer.attrs.get("axis") != 0:
        return None
    out: list = []
    for part in producer.inputs:
        if isinstance(part, gs.Constant):
            out += [int(v) for v in part.values.reshape(-1)]
            continue
        node = part.inputs[0] if len(part.inputs) == 1 else None
        if node is not None and node.op == "Unsqueeze":  # [dim 0 of Shape(source)]
            gather = node.inputs[0].inputs[0] if len(node.inputs[0].inputs) == 1 else None
            if (gather is None or gather.op != "Gather" or _const(gather.inputs[1]) is None
                    or int(_const(gather.inputs[1]).reshape(-1)[0]) != 0 or not _shape_of(gather.inputs[0], source)):
                return None
            out.append(BATCH)
        elif node is not None and node.op == "Slice":  # dims [0, 2) of Shape(source)
            bounds = [_const(t) for t in node.inputs[1:]]
            if (any(b is None for b in bounds) or [int(b.reshape(-1)[0]) for b in bounds[:2]] != [0, 2]
                    or not _shape_of(node.inputs[0], source)):
                return None
            out += [BATCH, CHANNELS]
        else:
            return None
    return out


def _shape_of(tensor: gs.Tensor, source: gs.Tensor) -> bool:
    return len(tensor.inputs) == 1 and tensor.inputs[0].op == "Shape" and tensor.inputs[0].inputs[0] is source


def _batch_entry(e) -> int | None:
    """The new shape's batch entry: 0 (copy the input's batch, which is the same tensor's) or the constant."""
    return 0 if e == BATCH else (e if isinstance(e, int) and e >= -1 else None)


def _rewire(ends: list, tensors: list) -> None:
    """Replace a node's inputs or outputs in place (onnx-graphsurgeon keeps the tensors' back-references in sync
    only through the list's own methods)."""
    ends.clear()
    ends.extend(tensors)


def _perm(node: gs.Node) -> list[int]:
    return list(node.attrs.get("perm", []))


def _into_convs(graph: gs.Graph) -> int:
    count = 0
    for t in [n for n in graph.nodes if n.op == "Transpose" and _perm(n) == [0, 2, 1]]:
        r = _single(t.outputs[0], "Reshape", graph)
        entries = _shape_entries(r.inputs[1], t.inputs[0]) if r is not None and not r.attrs.get("allowzero") else None
        if entries is None or len(entries) != 4 or _batch_entry(entries[0]) is None:
            continue
        b, c, h, w = _batch_entry(entries[0]), *entries[1:]
        if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0 and isinstance(c, int) and c >= -1
                and [b, c].count(-1) <= 1):
            continue
        image = r.outputs[0]
        if image in graph.outputs or not image.outputs or any(c.op != "Conv" for c in image.outputs):
            continue
        nhwc = gs.Variable(image.name + "_nhwc", dtype=image.dtype)
        x = t.inputs[0]
        _rewire(r.inputs, [x, gs.Constant(r.name + "_nhwc_shape", np.array([b, h, w, c], np.int64))])
        _rewire(r.outputs, [nhwc])
        _rewire(t.inputs, [nhwc])
        _rewire(t.outputs, [image])
        t.attrs["perm"] = [0, 3, 1, 2]
        count += 1
    return count


def _out_of_convs(graph: gs.Graph) -> int:
    count = 0
    for cat in [n for n in graph.nodes if n.op == "Concat" and n.attrs.get("axis") == 1]:
        users = cat.outputs[0].outputs
        if cat.outputs[0] in graph.outputs or [u.op for u in users].count("Reshape") != 1 or any(
                u.op not in ("Reshape", "Shape") for u in users):  # a Shape: the free batch's shape computation
            continue
        r = next(u for u in users if u.op == "Reshape")
        t = _single(r.outputs[0], "Transpose", graph)
        ok = t is not None and not r.attrs.get("allowzero")
        entries = _shape_entries(r.inputs[1], cat.outputs[0]) if ok else None
        if entries is None or len(entries) != 3 or _perm(t) != [0, 2, 1] or _batch_entry(entries[0]) is None:
            continue
        convs = [x.inputs[0] if len(x.inputs) == 1 else None for x in cat.inputs]
        if any(c is None or c.op != "Conv" or len(c.outputs[0].outputs) != 1 or _const(c.inputs[1]) is None
               for c in convs):
            continue
        b, channels_all, length = _batch_entry(entries[0]), entries[1], entries[2]
        total = sum(int(_const(c.inputs[1]).shape[0]) for c in convs)
        if channels_all not in (CHANNELS, total, -1) or not isinstance(length, int) or length < -1 or (
                -1 in (b, length) and channels_all == -1) or [b, length].count(-1) > 1:
            continue
        tokens = []
        for c in convs:
            y = c.outputs[0]
            flat = gs.Variable(y.name + "_flat", dtype=y.dtype)
            tok = gs.Variable(y.name + "_tokens", dtype=y.dtype)
            channels = int(_const(c.inputs[1]).shape[0])
            graph.nodes.append(gs.Node("Reshape", c.name + "_flatten", inputs=[
                y, gs.Constant(c.name + "_flat_shape", np.array([b, channels, length], np.int64))], outputs=[flat]))
            graph.nodes.append(gs.Node("Transpose", c.name + "_to_tokens", {"perm": [0, 2, 1]}, [flat], [tok]))
            tokens.append(tok)
        out = t.outputs[0]
        t.outputs.clear()  # the old Concat / Reshape / Transpose (and a shape computation): dead, left to cleanup
        graph.nodes.append(gs.Node("Concat", cat.name + "_tokens", {"axis": 2}, tokens, [out]))
        count += 1
    return count


def tokens_around_convs(graph: gs.Graph) -> gs.Graph:
    """The graph with every patch merging's layout changes in the channels-last form (module docstring)."""
    graph.tokens_around_convs_count = _into_convs(graph) + _out_of_convs(graph)
    graph.cleanup().toposort()
    return graph
