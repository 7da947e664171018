"""split_concat_conv: a Conv over a channel Concat, written as one Conv per concatenated input, summed.

Pattern (UPerHead's ``bottleneck``: the stage-4 map and the four PPM branches; its ``fpn_bottleneck``: the four
FPN levels)::

    x_1 [B, c_1, H, W] --.
    ...                  +-- Concat(axis=1) --> Conv(W [O, c_1 + ... + c_n, kh, kw], B) --> y
    x_n [B, c_n, H, W] --'

rewritten as::

    x_1 --> Conv(W[:, 0:c_1], B) ------------.
    x_2 --> Conv(W[:, c_1:c_1 + c_2]) -------+-- Add --> ... --> Add --> y
    ...
    x_n --> Conv(W[:, c_1 + ... + c_{n-1}:]) -'

The Conv's attributes (pads, strides, dilations) are copied to every part, the bias goes to the first one: the
same sum, only grouped differently (equal within float rounding). Why: INT8 quantizes a Conv's input with one
per-tensor scale, and a Concat of branches of very different ranges would leave the small ones a few steps; after
the rewrite every branch is a Conv input of its own, with its own scale. Measured on UPerNet-S (docs/segmentation.md,
"INT8 and UPerHead's concats") its branches span at most 2.2x and per-branch scales clip an unseen photo more
(80.8 % of pixels against 89.5 %), so the INT8 recipe runs it only when asked (``Int8Options.split_concat_convs``).

Matched conservatively: Concat on axis 1 whose only consumer is the Conv and which is no graph output; the Conv
with group 1 and a constant weight whose input channels are the inputs' channel counts summed (a bias, if any,
goes to the first part as it is). Each input's channel count comes from its shape where shape inference left
one, else from the Conv that made it (through channel-preserving ops); one unknown count is the remainder.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_graphsurgeon as gs

log = logging.getLogger(__name__)

# ops whose output has the channels of their first input (what sits between a ConvModule and the Concat)
_SAME_CHANNELS = ("Relu", "BatchNormalization", "Resize", "Identity", "Cast", "Clip", "Sigmoid", "Mul", "Add")


def _channels(t: gs.Tensor, depth: int = 0) -> int | None:
    """Channels (axis 1) of ``t``: its shape, or the output channels of the Conv that made it."""
    if t.shape is not None and len(t.shape) >= 2 and isinstance(t.shape[1], (int, np.integer)):
        return int(t.shape[1])
    if depth > 8 or len(t.inputs) != 1:
        return None
    node = t.inputs[0]
    if node.op == "Conv" and isinstance(node.inputs[1], gs.Constant):
        return int(node.inputs[1].values.shape[0])
    if node.op in _SAME_CHANNELS and node.inputs:
        return _channels(node.inputs[0], depth + 1)
    return None


def _input_channels(concat: gs.Node, total: int) -> list[int] | None:
    known = [_channels(t) for t in concat.inputs]
    missing = [i for i, c in enumerate(known) if c is None]
    if len(missing) == 1:
        known[missing[0]] = total - sum(c for c in known if c is not None)
    if any(c is None or c <= 0 for c in known) or sum(known) != total:
        return None
    return known


def _match(conv: gs.Node, graph: gs.Graph) -> tuple[gs.Node, list[int]] | None:
    """(the Concat, its inputs' channels) where ``conv`` is the pattern's Conv, else None."""
    if conv.op != "Conv" or len(conv.inputs) < 2 or conv.attrs.get("group", 1) != 1:
        return None
    x, w = conv.inputs[0], conv.inputs[1]
    if len(x.inputs) != 1 or not isinstance(w, gs.Constant) or w.values.ndim != 4:
        return None
    concat = x.inputs[0]
    if concat.op != "Concat" or concat.attrs.get("axis") != 1 or len(concat.inputs) < 2:
        return None
    if len(x.outputs) != 1 or x in graph.outputs:
        return None
    channels = _input_channels(concat, int(w.values.shape[1]))
    return None if channels is None else (concat, channels)


def _rewrite(conv: gs.Node, concat: gs.Node, channels: list[int], graph: gs.Graph) -> None:
    w = conv.inputs[1].values
    bias = conv.inputs[2] if len(conv.inputs) > 2 else None
    y = conv.outputs[0]
    offsets = np.cumsum([0, *channels])
    parts = []
    for i, x in enumerate(concat.inputs):
        wi = gs.Constant(f"{conv.name}/split{i}/W", np.ascontiguousarray(w[:, offsets[i]:offsets[i + 1]]))
        out = gs.Variable(f"{conv.name}/split{i}/Y", dtype=y.dtype)
        inputs = [x, wi] + ([bias] if bias is not None and i == 0 else [])
        graph.nodes.append(gs.Node("Conv", f"{conv.name}/split{i}", dict(conv.attrs), inputs, [out]))
        parts.append(out)
    total = parts[0]
    for i, part in enumerate(parts[1:], start=1):
        out = y if i == len(parts) - 1 else gs.Variable(f"{conv.name}/split_sum{i}", dtype=y.dtype)
        graph.nodes.append(gs.Node("Add", f"{conv.name}/split_add{i}", {}, [total, part], [out]))
        total = out
    conv.outputs.clear()  # y is the last Add's now; cleanup drops the Conv and the Concat
    conv.inputs.clear()


def split_concat_conv(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every ``Conv(Concat(x_1..x_n))`` rewritten as ``Conv(x_1, W_1) + ... + Conv(x_n, W_n)``;
    the number of rewritten Convs is logged (and counted by ``count_concat_convs`` before and after)."""
    graph = gs.import_onnx(model)
    found = [(conv, m) for conv in list(graph.nodes) if (m := _match(conv, graph)) is not None]
    for conv, (concat, channels) in found:
        _rewrite(conv, concat, channels, graph)
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    onnx.checker.check_model(out)
    del out.metadata_props[:]
    out.metadata_props.extend(model.metadata_props)  # onnx-graphsurgeon drops them; our ModelInfo lives there
    log.info("split_concat_conv: %d Conv(Concat) split per input", len(found))
    return out


def count_concat_convs(model: onnx.ModelProto) -> int:
    """How many Convs read a Concat's output directly (the pattern, matched or not)."""
    producer = {o: n for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node
               if n.op_type == "Conv" and n.input[0] in producer and producer[n.input[0]].op_type == "Concat")
