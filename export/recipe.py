"""One recipe from a traced model to the graph a runtime gets: the target's passes and the precision, in the
one order that works. The export command, the benchmark and crossformer-infer all build graphs through it.

The order: the fp32 passes that fold shapes run first (the converters then see a smaller graph), then the
precision (FP16 casts or INT8 Q/DQ), then, for TensorRT, the fusion into ``GroupedAttention`` nodes, so that
the fused op sees the fp16 or Q/DQ tensors it will run on.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import onnx

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import SEGMENTER, ModelInfo
from crossformer_deploy.export.onnx_export import DEFAULT_OPSET, read_info, to_onnx
from crossformer_deploy.export.passes.split_concat_conv import split_concat_conv
from crossformer_deploy.export.passes.transpose_after_dq import transpose_after_dq
from crossformer_deploy.export.pipeline import TARGETS, run_pipeline
from crossformer_deploy.export.precision.fp16 import to_fp16
from crossformer_deploy.export.precision.int8 import quantize_int8
from crossformer_deploy.export.precision.placement import default_placement, placement
from crossformer_deploy.export.precision.schemes import check_scheme, scheme_for_target
from crossformer_deploy.model.attention import spatial_qkv
from crossformer_deploy.model.crossformer import CrossFormer

PRECISIONS = ("fp32", "fp16", "int8")
Step = Callable[[str], None]


@dataclass(frozen=True)
class Int8Options:
    """Calibration and quantization choices of an INT8 graph (export/precision/int8.py)."""

    calib_dir: str
    count: int = 512
    method: str = "entropy"
    size: tuple[int, int] | None = None  # calibration input size; default the export size
    cache_path: str | None = None
    quantize_head: bool = False
    scheme: str | None = None  # None: the target's (symmetric for TensorRT, reduced-range for CPUs)
    progress: bool = True
    placement: str | None = None  # which layers are int8 (placement.py); None: the model kind's default
    float_stages: tuple[int, ...] = ()  # backbone stages kept float on top of the placement's
    split_concat_convs: bool = False  # segmenters: Conv(Concat) -> one Conv per input (passes/split_concat_conv.py)
    float_scopes: tuple[str, ...] = ()  # node-name prefixes kept float (e.g. a detector's "/neck/")


@dataclass(frozen=True)
class Recipe:
    """Which passes and which precision: everything between ``to_onnx`` and the file that is written."""

    target: str = "plain"
    precision: str = "fp32"
    fp16_io: bool = False
    max_size: tuple[int, int] | None = None  # largest input of a dynamic graph (lets fold_dpb run)
    int8: Int8Options | None = None

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise UsageError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown precision {self.precision!r}; choose one of {', '.join(PRECISIONS)}")
        if (self.precision == "int8") != (self.int8 is not None):
            raise UsageError("an INT8 recipe needs its calibration options (and only an INT8 recipe has them)")
        if self.fp16_io and self.precision != "fp16":
            raise UsageError("fp16 inputs/outputs need the fp16 precision")
        if self.int8 is not None and self.int8.scheme is not None:
            check_scheme(self.int8.scheme)
        if self.int8 is not None:
            if self.int8.placement is not None:
                placement(self.int8.placement)
            if not set(self.int8.float_stages) <= {0, 1, 2, 3}:
                raise UsageError(f"float stages are 0-3 (the backbone's four stages), not {self.int8.float_stages}")

    @property
    def int8_scheme(self) -> str:
        return (self.int8.scheme if self.int8 and self.int8.scheme else None) or scheme_for_target(self.target)

    def steps(self) -> int:
        """How many progress steps ``apply`` reports."""
        return 1 + (self.precision != "fp32")


def apply(proto: onnx.ModelProto, recipe: Recipe, explain: Step | None = None,
          step: Step | None = None) -> onnx.ModelProto:
    """The recipe on an fp32 export (``to_onnx``'s graph)."""
    step = step or (lambda _: None)
    step(f"passes for {recipe.target}")
    if recipe.precision == "fp32":
        return run_pipeline(proto, recipe.target, recipe.max_size, explain)
    before = "plain" if recipe.target == "tensorrt" else recipe.target
    proto = run_pipeline(proto, before, recipe.max_size, explain)
    if recipe.precision == "fp16":
        step("converting to FP16")
        proto = to_fp16(proto, fp16_io=recipe.fp16_io)
    else:
        step("calibrating and quantizing to INT8")
        o = recipe.int8
        mode = read_info(proto).mode
        where = placement(o.placement or default_placement(mode))
        if o.split_concat_convs and mode == SEGMENTER:  # opt-in: lost on UPerNet-S (segmentation.md)
            proto = split_concat_conv(proto)
        proto = quantize_int8(proto, None, o.calib_dir, count=o.count, method=o.method, size=o.size,
                              cache_path=o.cache_path, quantize_head=o.quantize_head, scheme=recipe.int8_scheme,
                              progress=o.progress, quantize_attention=where.quantize_attention,
                              float_stages=tuple(sorted(set(where.float_stages) | set(o.float_stages))),
                              float_scopes=o.float_scopes, int8_only=where.int8_only)
        if recipe.target == "openvino":  # measured there (benchmarks/README.md); bit-identical anywhere
            proto = transpose_after_dq(proto)
    if recipe.target == "tensorrt":
        proto = run_pipeline(proto, "tensorrt", recipe.max_size, explain)
    return proto


def build(model: CrossFormer, info: ModelInfo, recipe: Recipe = Recipe(), opset: int = DEFAULT_OPSET,
          explain: Step | None = None, step: Step | None = None) -> onnx.ModelProto:
    """Trace ``model`` (``info`` says at which size and batch) and apply ``recipe``. For TensorRT the qkv
    projection stays on the map, where the fused GroupedAttention op reads it."""
    (step or (lambda _: None))("tracing to ONNX")
    with spatial_qkv() if recipe.target == "tensorrt" else contextlib.nullcontext():
        proto = to_onnx(model, info, opset)
    return apply(proto, recipe, explain, step)
