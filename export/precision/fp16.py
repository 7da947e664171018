"""fp32 ONNX -> strongly typed FP16 ONNX (every tensor's type explicit, every precision change a Cast).

TensorRT 11 has no FP16 builder flag: the precision has to be in the graph, so it is decided here and
checked on CPU.

What runs in FP16 and what stays fp32, and why:
- The "activation region" (everything computed from the image) runs in FP16: Conv, MatMul, Gemm, GELU,
  residual Adds, reshapes/gathers. Its weights are stored as FP16 (the DPB MLP's and the LayerNorms'
  stay fp32: they feed fp32 nodes).
- LayerNormalization and Softmax stay fp32 (inputs cast up, outputs cast down): mean/variance over
  96-768 channels and exp/sum over a group lose digits in fp16, and fp32 is the safe default.
- Everything *not* computed from the image stays fp32: the shape/index arithmetic of the dynamic graph
  (sizes, Range, group and offset indices; float sizes above 2048 are not even exact in fp16), the DPB
  MLP (nodes under ``/attn/pos/``) and the padding mask. That region is found by data flow
  (``activation_tensors``), not by node names, so a static graph (where the offset grid is a
  constant) and a dynamic one are handled alike.
  The bias table + mask enters the FP16 attention through one Cast per block.
- The additive key-padding mask fill (-1e6, model/grouping.py MASK_FILL) is outside fp16's range
  (max 65504): it is replaced by ``FP16_MASK_FILL`` before conversion (exp(-30000) is 0 in fp32 softmax
  as well, and bias + fill + scores stays finite in fp16).

Why not ``onnxruntime.transformers.float16.convert_float_to_float16`` as is: it types every float
value_info as fp16, so a chain of block-listed nodes round-trips through fp16 between each pair
(Cast fp32->fp16->fp32), which would put the DPB MLP and the float size arithmetic through fp16 anyway;
and a constant it converts is clamped to +-65504 (-65504 + anything negative is -inf). The partition
below is small and explicit instead.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from crossformer_deploy.export.onnx_export import read_info, set_metadata
from crossformer_deploy.export.precision.det_region import lowerable

FP16_MASK_FILL = -30000.0  # finite in fp16 with headroom: |fill + bias + scores| stays < 65504
MASK_FILL_FP32 = -1e6  # model/grouping.py MASK_FILL, as it appears in the fp32 export
FP32_OP_TYPES = frozenset({"LayerNormalization", "Softmax"})
SHAPE_OPS = frozenset({"Shape", "Size"})  # their outputs describe a tensor, they do not carry its data
# Float inputs typed apart from the data, which stay fp32 in an fp16 node: Resize's roi and scales (ONNX allows
# only float32 scales; a segmenter's x2 upsampling carries them as a constant).
FP32_INPUTS = {"Resize": frozenset({1, 2})}
FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)


class Fp16ConversionError(ValueError):
    """The graph is not what the conversion expects (mask constants missing, values out of range)."""


def to_fp16(proto: onnx.ModelProto, fp16_io: bool = False, mask_fill: float = FP16_MASK_FILL) -> onnx.ModelProto:
    """A strongly typed FP16 copy of an fp32 CrossFormer export (``proto`` is not modified).

    fp16_io: False keeps the model's inputs/outputs fp32 (a Cast at each end); True makes them fp16.
    """
    if not -FP16_MAX < mask_fill < 0:
        raise ValueError(f"mask_fill must be negative and finite in fp16, not {mask_fill}")
    if read_info(proto).precision != "fp32":
        raise Fp16ConversionError(f"FP16 conversion needs an fp32 model, this one is {read_info(proto).precision}")
    model = copy.deepcopy(proto)
    replaced = replace_mask_fill(model, mask_fill)
    # the attention blocks' softmaxes (a Mask R-CNN's box head has one more, which holds no mask)
    n_attn = sum(n.op_type == "Softmax" and "/attn/" in n.name for n in model.graph.node)
    if _dynamic_size(model):
        # one Where(valid, 0, -1e6) per attention block, whatever the input size
        if replaced != n_attn:
            raise Fp16ConversionError(f"found {replaced} padding-mask fill constants ({MASK_FILL_FP32:g}) for "
                                      f"{n_attn} attention blocks; the export changed, update fp16.py")
    elif replaced > n_attn:  # static: only blocks that pad at the export size keep a (folded) mask
        raise Fp16ConversionError(f"{replaced} mask constants for {n_attn} attention blocks")
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # types of every tensor
    _convert(model, fp16_io)
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    _check_fp16_constants(model)
    onnx.checker.check_model(model)
    info = read_info(model)
    extra = {**info.extra, "fp16_io": fp16_io, "mask_fill": mask_fill}
    props = {"precision": "fp16", "extra": json.dumps(extra)}
    if fp16_io:
        props["input_layout"] = info.input_layout.replace("float32", "float16")
    set_metadata(model, props)
    return model


def replace_mask_fill(model: onnx.ModelProto, fill: float) -> int:
    """Replace the -1e6 padding fill in float constants/initializers (in place); returns how many tensors.

    Dynamic exports hold it as a scalar Constant feeding a Where; static ones fold the mask into a
    [nG, 1, 1, N] constant of 0 / -1e6 (possibly with the bias folded in, hence the tolerance).
    """
    count = 0
    for t in _float_constants(model):
        a = numpy_helper.to_array(t)
        hit = np.isclose(a, MASK_FILL_FP32, rtol=1e-3, atol=0.0)
        if hit.any():
            a = np.where(hit, np.float32(fill), a).astype(np.float32)
            t.CopyFrom(numpy_helper.from_array(a, t.name))
            count += 1
    return count


def activation_tensors(graph: onnx.GraphProto) -> set[str]:
    """Tensors computed from the float graph inputs' data (not merely from their shapes). Integer inputs are
    sizes (a segmenter's ``output_size``): what is computed from them is shape arithmetic, kept in fp32."""
    floats = (FLOAT, HALF)
    act = {i.name for i in graph.input if i.type.tensor_type.elem_type in floats}
    act -= {t.name for t in graph.initializer}  # (old IRs list weights as inputs)
    for n in graph.node:  # exported graphs are topologically sorted
        if n.op_type not in SHAPE_OPS and any(i in act for i in n.input):
            act.update(o for o in n.output if o)
    return act


def _convert(model: onnx.ModelProto, fp16_io: bool) -> None:
    g = model.graph
    types = _elem_types(model)
    act = activation_tensors(g)
    nodes = list(g.node)  # one Python object per node (protobuf wrappers are not stable across iterations)
    may_lower = lowerable(model)  # a detector's post-processing stays fp32 (det_region.py)
    fp16_nodes = {k for k, n in enumerate(nodes) if n.op_type not in FP32_OP_TYPES and any(i in act for i in n.input)
                  and may_lower(n.name)}
    consts = {t.name: t for t in g.initializer}
    const_nodes = {n.output[0]: n for n in nodes if n.op_type == "Constant"}

    # 1. decide each float tensor's type: fp16 where an fp16 node produces it
    half: set[str] = set()
    for k, n in enumerate(nodes):
        if k in fp16_nodes:
            if n.op_type == "Cast" and _attr(n, "to") == FLOAT:
                _set_attr(n, "to", HALF)
            half.update(o for o in n.output if types.get(o) in (FLOAT, HALF))
    if fp16_io:
        for i in g.input:
            if i.type.tensor_type.elem_type == FLOAT:
                i.type.tensor_type.elem_type = HALF
                half.add(i.name)

    # 2. make every node's float inputs match its compute type: fp16 copies of constants, Casts otherwise
    new_nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}
    fp16_consts: dict[str, str] = {}

    def as_type(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            out = f"{name}_cast_{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [out], to=to, name=out + "_node"))
            casts[key] = out
        return casts[key]

    def fp16_const(name: str) -> str:
        if name not in fp16_consts:
            src = consts[name] if name in consts else const_nodes[name].attribute[0].t
            a = numpy_helper.to_array(src)
            if np.abs(a).max(initial=0.0) > FP16_MAX:
                raise Fp16ConversionError(f"constant {name} has values beyond fp16 range ({np.abs(a).max():g})")
            out = f"{name}_fp16"
            g.initializer.append(numpy_helper.from_array(a.astype(np.float16), out))
            fp16_consts[name] = out
        return fp16_consts[name]

    for j, n in enumerate(nodes):
        if n.op_type in SHAPE_OPS:
            new_nodes.append(n)  # reads only the shape: any float type will do, no Cast
            continue
        node_type = HALF if j in fp16_nodes else FLOAT
        for k, name in enumerate(n.input):
            if not name or types.get(name) not in (FLOAT, HALF):
                continue
            want = FLOAT if k in FP32_INPUTS.get(n.op_type, ()) else node_type
            have = HALF if name in half else FLOAT
            if have == want:
                continue
            if want == HALF and (name in consts or name in const_nodes):
                n.input[k] = fp16_const(name)
            else:
                n.input[k] = as_type(name, want)
        new_nodes.append(n)

    # 3. graph outputs: fp32 unless fp16_io (the producer's tensor is renamed, a Cast writes the output)
    for o in g.output:
        if o.type.tensor_type.elem_type != FLOAT:
            continue
        have = HALF if o.name in half else FLOAT
        want = HALF if fp16_io else FLOAT
        o.type.tensor_type.elem_type = want
        if have != want:
            inner = f"{o.name}_{'fp16' if have == HALF else 'fp32'}"
            for n in new_nodes:
                n.output[:] = [inner if x == o.name else x for x in n.output]
                n.input[:] = [inner if x == o.name else x for x in n.input]
            new_nodes.append(helper.make_node("Cast", [inner], [o.name], to=want, name=f"{o.name}_cast_out"))

    # 4. the order stays topological (each Cast sits right before its first consumer); drop constants
    # that only fp16 nodes used (they now read the fp16 copies)
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    dead = [n for n in g.node if n.op_type == "Constant" and n.output[0] not in used]
    for n in dead:
        g.node.remove(n)


def _check_fp16_constants(model: onnx.ModelProto) -> None:
    """No fp16 constant may hold inf/nan, no fp32 one may exceed fp16 range (it would be cast into fp16)."""
    named = [(t.name, t) for t in model.graph.initializer]
    named += [(n.name or n.output[0], a.t) for n in model.graph.node for a in n.attribute if a.type == a.TENSOR]
    for name, t in named:
        if t.data_type in (FLOAT, HALF):
            a = numpy_helper.to_array(t).astype(np.float32)
            if not np.isfinite(a).all() or np.abs(a).max(initial=0.0) > FP16_MAX:
                raise Fp16ConversionError(f"constant {name} is not finite in fp16 (max |x| {np.abs(a).max():g})")


def _float_constants(model: onnx.ModelProto) -> Iterable[TensorProto]:
    for t in model.graph.initializer:
        if t.data_type == FLOAT:
            yield t
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == FLOAT:
                    yield a.t


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({t.name: t.data_type for t in g.initializer})
    for n in g.node:
        if n.op_type == "Constant" and n.attribute[0].name == "value":
            types[n.output[0]] = n.attribute[0].t.data_type
    return types


def _dynamic_size(model: onnx.ModelProto) -> bool:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return any(not d.HasField("dim_value") for d in list(dims)[2:])


def _attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def _set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for a in node.attribute:
        if a.name == name:
            a.CopyFrom(helper.make_attribute(name, value))
