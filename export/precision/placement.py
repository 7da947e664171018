"""INT8 placements: which of the quantizable layers an INT8 graph carries in int8, by name.

``all`` (the default for classifiers): every Linear, both attention matmuls and every Conv (int8.py says what stays
float and why).

``attn-qkv`` (the default for detectors): only every block's qkv Linear int8 (12 of CrossFormer-S's ~110-134
quantizable detector layers), the rest float. Trained-like RetinaNet-S and Mask R-CNN-S, calibrated on the three
sample photos and judged on 12 crops / flips / colour changes of them that the choice never saw: ``all`` matched
64-73 % of fp32's detections, fc1 alone 94-95 %, qkv alone 95.8-97.9 % (bar 95 %) on ONNX Runtime and OpenVINO
(docs/detection.md). Like ``mlp-fc1`` it buys accuracy, not speed.

``mlp-fc1`` (the default for segmenters): only the first Linear of every block's MLP int8 (12 of CrossFormer-S's
~90 quantizable layers), the rest float. On trained-like UPerNet-S with each photo held out, ``all`` agreed with
fp32 on 78-97 % of pixels and both MLP Linears on 97.7-98.1 %, fc1 alone on 98.4-99.96 % (bar 98 %); but it runs
no faster than fp32 (0.81-1.06x on Zen 4 and an AMX Xeon): docs/segmentation.md.

``bf16-hybrid``: stage 1 (its blocks and its patch merging) and every block's two attention matmuls stay
float, everything else int8. On a CPU that runs OpenVINO's float layers in bf16 (AMX, AVX512-BF16) this is
faster: stage 1's Linears have 96 input channels on 3136 tokens a image, so their int8 GEMMs are bound by the
bytes around them (the int8 epilogue, the quantize steps before them), not by MACs, and AMX's bf16 GEMMs are as
fast there; the attention matmuls are 49 x 49 x 32 per head, where the four quantize steps (q, k, v,
probabilities) cost more than int8 saves. CrossFormer-S, 224, AMX Xeon, 2 threads, against OpenVINO bf16 on the
authors' static export (the fastest faithful peer): ``all`` 1.17-1.19x at batch 1 and 1.03-1.04x at batch 8,
``bf16-hybrid`` 1.26-1.27x and 1.09-1.12x in one script; in five bench runs after fold_layernorm_affine
``bf16-hybrid`` 1.17-1.29x and 1.11-1.14x, ``all`` 1.12-1.23x and 1.04-1.09x (benchmarks/README.md). On CPUs
without bf16 the float layers run in fp32 and ``all`` is the faster; ``crossformer-bench --recommend`` measures
both on the machine it runs on.
"""
from __future__ import annotations

from dataclasses import dataclass

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import DETECTOR, SEGMENTER


@dataclass(frozen=True)
class Placement:
    quantize_attention: bool = True  # the QK^T and probabilities x V matmuls
    float_stages: tuple[int, ...] = ()  # stages (0-based) whose quantizable layers all stay float
    # when set, only quantizable layers whose node name contains one of these stay int8, every other one float
    int8_only: tuple[str, ...] = ()


ALL = "all"
BF16_HYBRID = "bf16-hybrid"
MLP_FC1 = "mlp-fc1"
ATTN_QKV = "attn-qkv"
PLACEMENTS = {ALL: Placement(), BF16_HYBRID: Placement(quantize_attention=False, float_stages=(0,)),
              MLP_FC1: Placement(quantize_attention=False, int8_only=("/mlp/fc1/",)),
              ATTN_QKV: Placement(quantize_attention=False, int8_only=("/attn/qkv/",))}


def default_placement(mode: str) -> str:
    """The placement an INT8 recipe gets when none is named: for segmenters and detectors the one that held their
    accuracy bar on images it was not chosen on, for classifiers the fastest (``all`` holds their bar)."""
    return {SEGMENTER: MLP_FC1, DETECTOR: ATTN_QKV}.get(mode, ALL)


def placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise UsageError(f"unknown INT8 placement {name!r}; choose {', '.join(PLACEMENTS)}")
    return PLACEMENTS[name]
