"""PyTorch CrossFormer (classifier, backbone or whole segmenter) -> one ONNX graph with dynamic batch, height
and width.

Exporter choice: the TorchScript-based ``torch.onnx.export(dynamo=False)``. The model is written so
that every size it computes is a graph value (see model/grouping.py), which this exporter records as
Shape/Range/arithmetic ops: one trace gives a graph that is right at every size, in seconds. The
dynamo exporter needed ``torch.export(strict=False)`` with hand-made dynamic shapes, took minutes even
for a tiny config, and left more shape arithmetic to fold (docs/architecture.md, "Export").

A segmenter (``model/seg``) has a second input, ``output_size`` (int64 [2]: the original image's height and
width, which the logits are resized back to), and outputs ``class_map`` (and ``logits``). A whole detector
(``model/det``) has a second input ``image_size`` (int64 [B, 4] rows: resized h, w, original h, w) and outputs
``dets`` [B, 100, 5], ``labels`` [B, 100] (and ``masks`` [B, 100, 28, 28] for Mask R-CNN); it is traced at
``DET_TRACE_SIZE`` whatever its ModelInfo says, the graph being dynamic. Their backbone's nodes are renamed from
``/backbone/layers.i/...`` to the bare backbone's ``/layers.i/...``, so the passes, which find blocks by those
scope names, serve them unchanged.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Callable

import onnx
import torch

from crossformer_deploy import __version__
from crossformer_deploy.base.errors import ModelFileError, UsageError
from crossformer_deploy.base.fileio import atomic_path, check_output_path
from crossformer_deploy.base.model_info import DETECTOR, SEGMENTER, ModelInfo
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.seg.segmentor import Segmentor
from crossformer_deploy.model.tracing import fixed_size_tracing

DEFAULT_OPSET = 17
SEG_INPUTS = ["image", "output_size"]
DET_INPUTS = ["image", "image_size"]
DET_TRACE_SIZE = (256, 320)  # a dynamic detector's trace input: any size gives the same graph, a small one fast
# The segmenter's backbone scopes that are renamed to the bare backbone's (see the module docstring).
BACKBONE_SCOPES = ("/backbone/layers.", "/backbone/patch_embed/")


def output_names(model: CrossFormer | Segmentor) -> list[str]:
    if model.mode in (SEGMENTER, DETECTOR):
        return model.output_names
    return ["logits"] if model.mode == "classifier" else [f"stage{i + 1}" for i in range(model.cfg.num_stages)]


def dynamic_axes(model: CrossFormer | Segmentor, dynamic_size: bool,
                 dynamic_batch: bool) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {"image": {}}
    if dynamic_batch:
        axes["image"][0] = "batch"
        if model.mode == DETECTOR:
            axes["image_size"] = {0: "batch"}
    if dynamic_size:
        axes["image"].update({2: "height", 3: "width"})
    for i, name in enumerate(output_names(model)):
        ax = {0: "batch"} if dynamic_batch else {}
        if dynamic_size and model.mode == "backbone":
            ax.update({2: f"height_s{4 * 2**i}", 3: f"width_s{4 * 2**i}"})
        if model.mode == SEGMENTER:  # the original size is an input value: dynamic even in a static graph
            ax.update({1: "out_height", 2: "out_width"} if name == "class_map" else {2: "out_height", 3: "out_width"})
        axes[name] = ax
    return {k: v for k, v in axes.items() if v}


def to_onnx(model: CrossFormer | Segmentor, info: ModelInfo, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """Trace ``model`` into an ONNX model (in memory) carrying ``info`` as metadata_props."""
    if opset < 17:
        raise UsageError(f"opset {opset} is too old: LayerNormalization needs opset >= 17")
    h, w = info.input_size
    seg, det = model.mode == SEGMENTER, model.mode == DETECTOR
    if det and info.dynamic:
        h, w = DET_TRACE_SIZE
    model.eval()
    dummy = torch.randn(info.batch or 1, model.cfg.in_chans, h, w)
    # a segmenter's dummy original size differs from the input's, so no resize is traced as an identity. A
    # detector's sizes are graph inputs and leave no trace in the graph, but while tracing, its NMS runs eagerly
    # (model/det/nms.py) on every candidate box: for RetinaNet a 2x2 real image clips all but a few boxes to
    # nothing (score 0), which cuts the trace from ~35 s to seconds; Mask R-CNN's RoI stages keep a real size
    if seg:
        args = (dummy, torch.tensor([h - 1, w + 1]))
    elif det:
        row = [2, 2, 5, 3] if getattr(model.det_cfg, "arch", "") == "retinanet" else [h - 8, w - 8, 2 * h, 2 * w - 5]
        args = (dummy, torch.tensor([row] * (info.batch or 1)))
    else:
        args = (dummy,)
    names = SEG_INPUTS if seg else DET_INPUTS if det else ["image"]
    axes = dynamic_axes(model, info.dynamic, info.batch is None)
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about sizes: sizes are graph values by design
        with fixed_size_tracing() if not info.dynamic else contextlib.nullcontext():
            torch.onnx.export(model, args, buf, dynamo=False, opset_version=opset,
                              input_names=names, output_names=output_names(model),
                              dynamic_axes=axes, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    if seg or det:
        unprefix_backbone(proto)
    cfg = model.cfg
    props = {**info.to_props(), "dynamic_axes": json.dumps(axes), "version": __version__,
             "architecture": cfg.to_json(),
             "producer": f"crossformer-deploy {__version__} (torch {torch.__version__})"}
    set_metadata(proto, props)
    return proto


def unprefix_backbone(proto: onnx.ModelProto) -> int:
    """Rename a segmenter's backbone nodes and values ``/backbone/layers.i/...`` -> ``/layers.i/...`` (in place;
    no clash: nothing else in a segmenter has those scopes); returns how many names changed."""
    changed = 0

    def bare(name: str) -> str:
        nonlocal changed
        if name.startswith(BACKBONE_SCOPES):
            changed += 1
            return name[len("/backbone"):]
        return name

    g = proto.graph
    for n in g.node:
        n.name = bare(n.name)
        n.input[:] = [bare(i) for i in n.input]
        n.output[:] = [bare(o) for o in n.output]
    for v in (*g.value_info, *g.input, *g.output, *g.initializer):
        v.name = bare(v.name)
    return changed


def set_metadata(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for k, v in props.items():
        if k in existing:
            existing[k].value = v
        else:
            proto.metadata_props.add(key=k, value=v)


def read_info(proto: onnx.ModelProto) -> ModelInfo:
    return ModelInfo.from_props({p.key: p.value for p in proto.metadata_props})


def save_onnx(proto: onnx.ModelProto, path: str | os.PathLike, check: bool = True) -> None:
    """Check (full shape inference) and write atomically: temp file in the same directory + rename."""
    path = check_output_path(path)
    if check:
        onnx.checker.check_model(proto, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(proto, tmp)


def export(model: CrossFormer, path: str | os.PathLike, info: ModelInfo, opset: int = DEFAULT_OPSET,
           step: Callable[[str], None] | None = None) -> onnx.ModelProto:
    """Trace, check and write ``model``; ``step`` is told each stage's name (for a progress display)."""
    check_output_path(path)
    (step or _quiet)("tracing to ONNX")
    proto = to_onnx(model, info, opset)
    (step or _quiet)("checking and writing")
    save_onnx(proto, path)
    return proto


def _quiet(_: str) -> None:
    pass


def load_exported_onnx(path: str, missing: str = "model file", hint: str = "") -> tuple[onnx.ModelProto, ModelInfo]:
    """(ModelProto without external data, ModelInfo) of an ONNX file crossformer-export wrote; one-line
    errors for a missing, truncated or foreign file (``missing`` names the file, ``hint`` ends the last)."""
    if not os.path.isfile(path):
        raise ModelFileError(f"{missing} not found: {path}")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # DecodeError and friends: truncated or not ONNX at all
        raise ModelFileError(f"{path}: not an ONNX model, or truncated ({type(e).__name__})") from None
    if not proto.graph.node:
        raise ModelFileError(f"{path}: not an ONNX model, or truncated (no graph)")
    props = {p.key: p.value for p in proto.metadata_props}
    if "variant" not in props:
        raise UsageError(f"{path}: not exported by crossformer-export (no CrossFormer metadata){hint}")
    return proto, ModelInfo.from_props(props)
