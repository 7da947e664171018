"""The ONNX op types a whole detector's graph emits (opset 17, ``torch.onnx.export`` with constant folding), kept in
one place so that a new op type shows up in review: tests/model/det pins the exported tiny graphs to these sets.

Every one is a standard ONNX op. What TensorRT's ONNX parser says about each (onnx-tensorrt docs/operators.md) and
the restrictions that bite these graphs are in docs/detection.md ("ONNX ops emitted and TensorRT's parser").
``Constant`` and ``Identity`` are left out: the export passes fold them away.
"""
from __future__ import annotations

_BACKBONE_AND_FPN = frozenset({
    "Add", "Cast", "Clip", "Concat", "ConstantOfShape", "Conv", "Div", "Equal", "Erf", "Expand", "Flatten", "Gather",
    "Gemm", "LayerNormalization", "MatMul", "Mod", "Mul", "Range", "Relu", "Reshape", "Resize", "Shape", "Slice",
    "Softmax", "Sub", "Transpose", "Unsqueeze", "Where",
})

DET_ONNX_OPS: dict[str, frozenset[str]] = {
    # anchors, delta decoding, per-level TopK, class-aware NonMaxSuppression, top 100
    "retinanet": _BACKBONE_AND_FPN | {
        "And", "Exp", "GatherElements", "Greater", "Less", "LessOrEqual", "Min", "NonMaxSuppression", "Not",
        "ScatterND", "Sigmoid", "Tile", "TopK", "Xor",
    },
    # + RPN (NMS per level), RoI levels (NonZero / RoiAlign / ScatterND), box and mask heads (ConvTranspose)
    "mask_rcnn": _BACKBONE_AND_FPN | {
        "And", "ConvTranspose", "Exp", "GatherElements", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
        "MaxPool", "Min", "NonMaxSuppression", "NonZero", "Not", "Or", "RoiAlign", "ScatterND", "Sigmoid", "Sqrt",
        "Tile", "TopK", "Xor",
    },
}
FOLDED_OPS = frozenset({"Constant", "Identity"})


def op_types(proto) -> set[str]:
    """The op types of an ONNX model's main graph, less ``FOLDED_OPS``."""
    return {n.op_type for n in proto.graph.node} - FOLDED_OPS
