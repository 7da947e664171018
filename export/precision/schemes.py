"""INT8 schemes: how weights are quantized, which scheme a graph carries, and which CPUs it suits.

x86 CPUs without VNNI sum each pair of u8 x s8 products in a saturating 16-bit lane (vpmaddubsw), and ONNX Runtime
turns our s8 activations into u8, so 8-bit weights can overflow the pair (2 * 255 * 127 > 32767): ``reduced-range``
weights ([-64, 64], ONNX Runtime's ``reduce_range``) keep every pair below 32767 on any x86 CPU, for one bit of
weight resolution. TensorRT's int8 GEMMs accumulate in 32 bits, so the tensorrt target keeps full-range
``symmetric`` weights. The measurements behind both are in docs/int8.md.
"""
from __future__ import annotations

import json
import os

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import ModelInfo

REDUCED_RANGE = "reduced-range"  # s8 weights in [-64, 64] per channel, s8 activations: any x86 CPU
SYMMETRIC = "symmetric"  # s8 weights in [-127, 127] per channel, s8 activations: TensorRT, VNNI CPUs
SCHEMES = (REDUCED_RANGE, SYMMETRIC)
PORTABLE = REDUCED_RANGE
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


def check_scheme(name: str) -> str:
    if name not in SCHEMES:
        raise UsageError(f"unknown INT8 scheme {name!r}; choose {', '.join(SCHEMES)}")
    return name


def scheme_for_target(target: str) -> str:
    """The scheme a target gets by default: TensorRT symmetric, every CPU target the portable one."""
    return SYMMETRIC if target == "tensorrt" else PORTABLE


def graph_scheme(info: ModelInfo) -> str | None:
    """The scheme recorded in an INT8 graph's metadata; None for a graph that is not INT8.

    INT8 graphs written before the scheme was recorded were all quantized symmetrically."""
    if info.precision != "int8":
        return None
    extra = info.extra if isinstance(info.extra, dict) else json.loads(info.extra or "{}")
    return (extra.get("int8") or {}).get("scheme", SYMMETRIC)


def cpu_flags(path: str | os.PathLike = "/proc/cpuinfo") -> set[str] | None:
    """The CPU's feature flags (Linux /proc/cpuinfo); None where they cannot be read."""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return set(value.split())
    except OSError:
        return None
    return None


def has_vnni(flags: set[str]) -> bool:
    """AVX-512 VNNI, AVX-VNNI or AMX: u8 x s8 products accumulate in 32 bits, nothing saturates."""
    return any(f in flags for f in VNNI_FLAGS)


def saturation_warning(info: ModelInfo, flags: set[str] | None) -> str | None:
    """One line to print when this INT8 graph runs on a CPU where its scheme loses accuracy."""
    scheme = graph_scheme(info)
    if scheme is None or scheme == PORTABLE or flags is None or has_vnni(flags) or "avx2" not in flags:
        return None  # not int8, portable, unknown CPU, VNNI, or not x86 (no vpmaddubsw path at all)
    return (f"warning: this INT8 graph uses the {scheme} scheme and this CPU has no VNNI (no avx512_vnni, "
            f"avx_vnni or amx): int8 sums can saturate and accuracy drops; re-export with "
            f"--int8-scheme {PORTABLE}")
