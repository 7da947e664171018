"""The machine a bench runs on: CPU model and instruction-set flags, software versions, what is native."""
from __future__ import annotations

import functools
import os
import platform
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import onnxruntime
import torch

from crossformer_deploy.runtime.openvino_runner import openvino_version

CPU_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")
# bf16 arithmetic in hardware: AVX-512 BF16 (Zen 4, Cooper Lake and later) or AMX (Sapphire Rapids and later).
# Without either, PyTorch emulates bf16 (seconds per call on an AVX2 Zen 3) and OpenVINO falls back to f32.
NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


@functools.cache  # read once per process, not once per case
def cpu_model_and_flags() -> tuple[str, frozenset[str]]:
    cpu, flags = None, frozenset()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == "model name" and cpu is None:
                    cpu = v.strip()
                elif k.strip() == "flags" and not flags:
                    flags = frozenset(v.split())
    except OSError:  # not Linux: the platform's own (vaguer) name, no flags
        pass
    return cpu or platform.processor() or "?", flags


def emulated(precision: str, flags: frozenset[str]) -> str | None:
    """Why ``precision`` would be emulated on a CPU with ``flags``, or None when it is native."""
    if precision == "bf16" and flags and not any(f in flags for f in NATIVE_BF16):
        return "this CPU has neither avx512_bf16 nor amx_bf16"
    return None


def machine_info() -> dict:
    cpu, flags = cpu_model_and_flags()


    return {"cpu": cpu, "flags": {f: f in flags for f in CPU_FLAGS}, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino_version(), "nncf": _nncf_version(),
            "numpy": np.__version__}


def kind(flags: dict[str, bool]) -> str:
    """A short name for the CPU kinds seen so far: what decides which paths are native."""
    if flags.get("amx_tile"):
        return "amx"
    if flags.get("avx512_bf16") or flags.get("avx512_vnni"):
        return "avx512-vnni-bf16" if flags.get("avx512_bf16") else "avx512-vnni"
    return "avx2"


def _nncf_version() -> str | None:
    try:  # the version only: importing nncf costs seconds
        return version("nncf")
    except PackageNotFoundError:
        return None
