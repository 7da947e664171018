"""INT8 placements: which of the quantizable layers an INT8 graph carries in int8, by name.

``all`` (the default for classifiers and detectors): every Linear, both attention matmuls and every Conv (int8.py
says what stays float and why).

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
``bf16-hybrid`` 1.26-1.27x and 1.09-1.12x (benchmarks/README.md). On CPUs without bf16 the float layers run in
fp32 and ``all`` is the faster; ``crossformer-bench --recommend`` measures both on the machine it runs on.
"""
from __future__ import annotations

from dataclasses import dataclass

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import SEGMENTER


@dataclass(frozen=True)
class Placement:
    quantize_attention: bool = True  # the QK^T and probabilities x V matmuls
    float_stages: tuple[int, ...] = ()  # stages (0-based) whose quantizable layers all stay float
    # when set, only quantizable layers whose node name contains one of these stay int8, every other one float
    int8_only: tuple[str, ...] = ()


ALL = "all"
BF16_HYBRID = "bf16-hybrid"
MLP_FC1 = "mlp-fc1"
PLACEMENTS = {ALL: Placement(), BF16_HYBRID: Placement(quantize_attention=False, float_stages=(0,)),
              MLP_FC1: Placement(quantize_attention=False, int8_only=("/mlp/fc1/",))}


def default_placement(mode: str) -> str:
    """The placement an INT8 recipe gets when none is named: the one that held a segmenter's bar for
    segmenters, the fastest for everything else (detectors miss their bar with any placement tried)."""
    return MLP_FC1 if mode == SEGMENTER else ALL


def placement(name: str) -> Placement:
    if name not in PLACEMENTS:
        raise UsageError(f"unknown INT8 placement {name!r}; choose {', '.join(PLACEMENTS)}")
    return PLACEMENTS[name]
