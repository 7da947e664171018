"""fp32 ONNX -> explicit INT8 Q/DQ ONNX (post-training, calibrated), in the form TensorRT takes.

Quantized: the inputs of MatMul (Linear layers and both attention matmuls), Conv (patch embeddings,
patch merging) and, optionally, the classifier Gemm. Weights int8 per output channel, activations int8
per tensor, all symmetric (zero point 0). Everything else stays float: LayerNorm, Softmax, GELU,
residual Adds, the DPB MLP and the mask (nothing computed from the image passes through them), and two
things that would quantize badly (``excluded_nodes``): the probabilities x V matmul of blocks with wide
groups (CrossFormer++'s 14 x 14) and CrossFormer++'s amplitude cooling conv. Biases stay float:
TensorRT's quantized types are int8/int4/fp8/fp4 (no int32 bias DequantizeLinear, as ORT writes by
default); a float bias is fused into the int8 GEMM/conv.
Weights are 7-bit ([-64, 64]) in the ``reduced-range`` scheme (the default: accurate on CPUs without VNNI
too, see schemes.py) and full 8-bit in the ``symmetric`` one (TensorRT). The scheme is recorded in the
graph's metadata (``extra.int8.scheme``).
Only the inputs of the quantized ops carry Q/DQ (TensorRT decides output precision itself, and a Q/DQ
on a Conv output would sit in front of the LayerNorm that follows it).

Quantization is ONNX Runtime's (``onnxruntime.quantization``): standard Q/DQ that ONNX Runtime fuses into int8
kernels and TensorRT takes (docs/int8.md says why not NVIDIA ModelOpt).

Dynamic graphs: calibration runs at one size (``size``, default the export size) through the dynamic
graph; per-tensor activation scales and per-channel weight scales do not depend on the input size, so
the quantized graph stays dynamic. The ranges come from that one size.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Sequence

import numpy as np
import onnx
from onnxruntime.quantization import QuantType
from onnxruntime.quantization.calibrate import TensorData, TensorsData
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer
from onnxruntime.quantization.quant_utils import save_and_reload_model_with_shape_infer

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.export.onnx_export import read_info, save_onnx, set_metadata
from crossformer_deploy.export.passes.blocks import architecture, block_of
from crossformer_deploy.export.precision import calibration
from crossformer_deploy.export.precision.calibration import (
    CalibrationSet,
    cache_key,
    default_cache_path,
    load_ranges,
    save_ranges,
)
from crossformer_deploy.export.precision.det_region import lowerable
from crossformer_deploy.export.precision.fp16 import activation_tensors
from crossformer_deploy.export.precision.schemes import PORTABLE, SYMMETRIC, check_scheme
from crossformer_deploy.model.grouping import group_layout

QUANTIZED_OPS = ("MatMul", "Conv", "Gemm")
DPB_SCOPE = "/attn/pos/"
HEAD_SCOPE = "/head/"
SEG_HEAD_SCOPE = "/conv_seg/"  # a segmenter's classifier (a 1x1 conv per pixel): float like the classifier's head
# CrossFormer++'s amplitude cooling conv stays float: its input is the raw residual stream, whose per-tensor range
# its largest (outlier) channel sets, and it holds < 1 % of a block's MACs (docs/int8.md).
ACL_SCOPE = "/ex_conv/"
# The P x V matmul of groups that can hold more tokens than this stays float: probabilities step by 1/127, and in
# a group of N tokens the average one is 1/N (docs/int8.md; CrossFormer++'s 14 x 14 groups).
PROBS_MAX_TOKENS = 64


def quantize_int8(model: onnx.ModelProto | str | os.PathLike, out_path: str | os.PathLike | None,
                  calib_dir: str | os.PathLike, count: int = 512, method: str = "entropy",
                  size: tuple[int, int] | None = None, cache_path: str | os.PathLike | None = None,
                  quantize_head: bool = False, progress: bool = True, quantize_attention: bool = True,
                  seed: int = 0, scheme: str = PORTABLE, float_stages: Sequence[int] = (),
                  float_scopes: Sequence[str] = (), int8_only: Sequence[str] = ()) -> onnx.ModelProto:
    """Calibrate on ``count`` images of ``calib_dir`` and write the Q/DQ model to ``out_path`` (atomically).

    model: an fp32 export (ModelProto or path). size: calibration input size (default the export size;
    a static graph only takes its own). cache_path: the range cache file (default: one file per key in
    the crossformer-deploy cache dir); a file holding another key is recalibrated and overwritten.
    quantize_attention: also quantize the two activation x activation matmuls of every attention.
    scheme: "reduced-range" (7-bit weights, accurate on every x86 CPU) or "symmetric" (TensorRT).
    float_stages: stages (0-based) whose quantizable layers all stay float (placement.py).
    float_scopes: node-name prefixes whose quantizable layers stay float (e.g. a detector's ``/neck/``).
    int8_only: when given, only quantizable layers whose name contains one of these stay int8 (placement.py).
    out_path None: return the model without writing it.
    A whole detector calibrates on its images through its own test pipeline (calibration.py), at the scale its
    metadata records; ``size`` then only says at which input the wide groups are judged (default 800x1216).
    """
    proto = onnx.load(os.fspath(model)) if not isinstance(model, onnx.ModelProto) else model
    info = read_info(proto)
    if info.precision != "fp32":
        raise UsageError(f"INT8 quantization needs an fp32 model, this one is {info.precision}")
    calibration.calibration_method(method)  # validate early, before any image is read
    check_scheme(scheme)
    size = tuple(size or info.input_size)
    if not info.dynamic and size != tuple(info.input_size):
        raise UsageError(f"this graph is static at {info.input_size[0]}x{info.input_size[1]}: "
                         f"calibrate at that size, not {size[0]}x{size[1]}")
    images = CalibrationSet.from_folder(calib_dir, info, count, size, seed)
    exclude = excluded_nodes(proto, quantize_head, quantize_attention, size, float_stages, float_scopes, int8_only)
    tensors = quantized_inputs(proto, exclude)
    key = cache_key(proto, method, images, tensors)
    cache_path = os.fspath(cache_path) if cache_path is not None else default_cache_path(key)
    ranges = load_ranges(cache_path, key)
    if ranges is None:
        ranges = calibration.calibrate(proto, images, method, tensors, progress=progress)
        save_ranges(cache_path, key, method, images, ranges)
    q = quantize_with_ranges(proto, ranges, method, exclude, scheme)
    extra = {**info.extra, "int8": {"scheme": scheme, "calibration": method, "images": len(images), "size": list(size),
                                    **({"resize": images.resize, "scale": list(images.size)} if images.detector
                                       else {}),
                                    "cache_key": key, "quantize_head": quantize_head,
                                    "quantize_attention": quantize_attention, "float_stages": list(float_stages),
                                    **({"float_scopes": list(float_scopes)} if float_scopes else {}),
                                    **({"int8_only": list(int8_only)} if int8_only else {}),
                                    "float_probability_matmuls": len(wide_group_pv(proto, size))}}
    set_metadata(q, {"precision": "int8", "extra": json.dumps(extra)})
    if out_path is not None:
        save_onnx(q, out_path)
    return q


def excluded_nodes(proto: onnx.ModelProto, quantize_head: bool = False, quantize_attention: bool = True,
                   size: tuple[int, int] | None = None, float_stages: Sequence[int] = (),
                   float_scopes: Sequence[str] = (), int8_only: Sequence[str] = ()) -> list[str]:
    """Quantizable nodes to leave in float: the DPB MLP, anything not computed from the image, matmuls with a
    matrix computed from sizes (a segmenter's pooling), the head (a segmenter's ``conv_seg``), CrossFormer++'s
    cooling convs (``ACL_SCOPE``), the P x V matmuls of wide groups (``wide_group_pv``,
    judged at ``size``, default the export size), everything of ``float_stages`` (``/layers.{i}/``) and of
    ``float_scopes`` (name prefixes), everything outside ``int8_only`` (name parts) when it is given, and a
    detector's post-processing (det_region.py)."""
    g = proto.graph
    act = activation_tensors(g)
    may_lower = lowerable(proto)
    weights = {t.name for t in g.initializer}
    wide = wide_group_pv(proto, size)
    float_scopes = tuple(f"/layers.{i}/" for i in float_stages) + tuple(float_scopes)
    out = []
    for n in g.node:
        if n.op_type not in QUANTIZED_OPS:
            continue
        attention_matmul = n.op_type == "MatMul" and not any(i in weights for i in n.input)
        # a matrix computed from sizes alone (a segmenter's adaptive pooling: 1 / bin length weights) stays float
        size_matrix = n.op_type == "MatMul" and any(i not in act and i not in weights for i in n.input)
        if (DPB_SCOPE in n.name or not any(i in act for i in n.input) or size_matrix
                or (not quantize_head and (HEAD_SCOPE in n.name or SEG_HEAD_SCOPE in n.name))
                or (not quantize_attention and attention_matmul)
                or ACL_SCOPE in n.name or n.name in wide or n.name.startswith(float_scopes)
                or (int8_only and not any(part in n.name for part in int8_only))
                or not may_lower(n.name)):
            out.append(n.name)
    return out


def wide_group_pv(proto: onnx.ModelProto, size: tuple[int, int] | None = None) -> set[str]:
    """The probabilities x V MatMuls (first input a Softmax's output) of blocks whose groups can hold more
    than ``PROBS_MAX_TOKENS`` tokens: at ``size`` (default the export size), or G x G, which every map
    larger than G is cut into (a dynamic graph runs at other sizes than it was calibrated at).

    CrossFormer's LDA groups, ceil(map / I) a side, grow with the input instead: calibrated at 224 they
    hold 49 tokens and stay quantized, also in a graph later run at 448 (196-token groups)."""
    props = {p.key: p.value for p in proto.metadata_props}
    cfg = architecture(props)
    h, w = size or read_info(proto).input_size
    producer = {o: n for n in proto.graph.node for o in n.output}
    out = set()
    for n in proto.graph.node:
        blk = block_of(n.name)
        src = producer.get(n.input[0]) if n.op_type == "MatMul" else None
        if blk is None or src is None or src.op_type != "Softmax":
            continue
        g, stride = cfg.group_sizes[blk.stage], cfg.stage_stride(blk.stage)
        lay = group_layout(h // stride, w // stride, g, cfg.intervals[blk.stage], blk.lda, cfg.family)
        if max(lay.gh * lay.gw, g * g) > PROBS_MAX_TOKENS:
            out.add(n.name)
    return out


def quantized_inputs(proto: onnx.ModelProto, exclude: Sequence[str]) -> list[str]:
    """The activation tensors that get a Q/DQ pair: the non-constant inputs of the quantized nodes."""
    weights = {t.name for t in proto.graph.initializer}
    skip = set(exclude)
    out: set[str] = set()
    for n in proto.graph.node:
        if n.op_type in QUANTIZED_OPS and n.name not in skip:
            data = n.input if n.op_type == "MatMul" else n.input[:1]  # Conv/Gemm: X (W, B are weights)
            out.update(i for i in data if i and i not in weights)
    return sorted(out)


def bounded_ranges(proto: onnx.ModelProto, ranges: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Softmax outputs get their true bound [0, 1] (scale 1/127), not the calibrated maximum.

    A dynamic graph is calibrated at one size but run at others, and the group sizes (so the attention's
    sharpness) change with the size: a calibrated maximum below 1 would clip the probabilities there
    (docs/int8.md).
    """
    out = dict(ranges)
    for n in proto.graph.node:
        if n.op_type == "Softmax" and n.output[0] in out:
            out[n.output[0]] = (-1.0, 1.0)  # symmetric int8: [-1, 1] -> scale 1/127
    return out


def quantize_with_ranges(proto: onnx.ModelProto, ranges: dict[str, tuple[float, float]], method: str,
                         exclude: Sequence[str], scheme: str = PORTABLE) -> onnx.ModelProto:
    """Insert Q/DQ with the given activation ranges (no inference runs here); ``scheme`` decides the
    weights' range (activations are full-range s8 in both)."""

    ranges = bounded_ranges(proto, ranges)
    data = {k: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for k, (lo, hi) in ranges.items()}
    tensors = TensorsData(calibration.calibration_method(method), data)
    model = save_and_reload_model_with_shape_infer(proto)
    extra = {
        "ActivationSymmetric": True,  # zero point 0 (TensorRT only takes symmetric int8)
        "WeightSymmetric": True,
        "QuantizeBias": False,  # float bias, see module docstring
        "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS),  # Q/DQ on inputs only
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # [K, N] weights: one scale per output column
    }
    reduce_range = check_scheme(scheme) != SYMMETRIC  # weights only: ORT keeps activations full range
    quantizer = QDQQuantizer(model, True, reduce_range, QuantType.QInt8, QuantType.QInt8, tensors, [], list(exclude),
                             list(QUANTIZED_OPS), extra)
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # ORT warns about pre-processing we skip on purpose (it would fuse ORT ops)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantizer.quantize_model()
    finally:
        logger.setLevel(level)
    quantizer.model.topological_sort()  # ORT appends the Q/DQ nodes at the end
    q = quantizer.model.model
    _unshare_dequantized(q, set(exclude))
    del q.metadata_props[:]
    q.metadata_props.extend(proto.metadata_props)
    return q


def _unshare_dequantized(model: onnx.ModelProto, excluded: set[str]) -> None:
    """ORT rewires *every* consumer of a quantized activation to its DequantizeLinear output; give the
    consumers that are not quantized (Shape, residual Add, LayerNorm...) the float tensor back."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    source: dict[str, str] = {}
    for n in g.node:
        if n.op_type == "DequantizeLinear":
            q = producer.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                source[n.output[0]] = q.input[0]
    for n in g.node:
        if (n.op_type in QUANTIZED_OPS and n.name not in excluded) or n.op_type in ("QuantizeLinear",
                                                                                  "DequantizeLinear"):
            continue
        n.input[:] = [source.get(i, i) for i in n.input]
