"""What a bench run compares, and how each result is judged: backends, peers, bars, the record of a result."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import UsageError
from ..runtime.parity import TOLERANCES

# Order = table order; the value is the precision a backend's accuracy is held to (BAR).
BACKENDS: dict[str, str] = {
    "torch": "fp32", "torch-compile": "fp32", "torch-bf16": "bf16",
    "ort": "fp32", "ort-static": "fp32", "ort-target": "fp32", "ort-fp16": "fp16", "ort-int8": "int8",
    "ov-f32": "fp32", "ov-bf16": "bf16", "ov-nncf-int8": "int8",
    "ov-target-f32": "fp32", "ov-target-bf16": "bf16", "ov-int8": "int8", "ov-target-nncf-int8": "int8",
    "tensorrt": "fp32", "torch-cuda": "fp16",
}
# What a CPU user picks without us: the plain export on ONNX Runtime or OpenVINO, and OpenVINO's own INT8
# (NNCF post-training quantization, transformer preset, on the plain export).
PEERS = ("ort", "ov-f32", "ov-bf16", "ov-nncf-int8")
# Our paths: graphs out of our export pipeline (target passes, our FP16 / INT8 passes, NNCF on our graph).
OURS = ("ort-target", "ort-fp16", "ort-int8", "ov-target-f32", "ov-target-bf16", "ov-int8", "ov-target-nncf-int8")
BASELINE = "torch"
GOAL_RATIO = 1.2  # issue [J]: our fastest faithful path against the fastest faithful peer
# Faithful (issue [J]): fp32 max abs <= 1e-4; bf16 like fp16, cosine >= 0.9995; int8 cosine >= 0.99.
BAR = {**TOLERANCES, "bf16": TOLERANCES["fp16"]}


@dataclass
class BenchConfig:
    variant: str | None = "s"
    weights: str | None = None
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)])
    batches: list[int] = field(default_factory=lambda: [1])
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    threads: int = 2
    repeats: int = 20
    warmup: int = 3
    block: int = 3  # consecutive timed runs per backend and round
    pause: float = 0.3  # seconds before each backend's turn: the previous one's thread pool goes idle
    seed: int = 0
    calib: str | None = None  # image folder for INT8 calibration (default: seeded noise images)
    profile_backend: str | None = None  # ort-* or ov-*: per-op-type times after the timing
    run_emulated: bool = False  # time bf16 paths even where this CPU would emulate them (seconds per call)


@dataclass
class Candidate:
    """A built backend: ``fn`` maps the input image to outputs by name."""

    fn: Callable[[np.ndarray], dict[str, np.ndarray]]
    graph: str  # what it runs, for the report
    precision: str  # what it really computes in (e.g. OpenVINO's resolved hint)
    runner: object = None  # kept alive for the run; closed at the end


@dataclass
class Result:
    size: str
    batch: int
    backend: str
    status: str  # ok | skipped | failed
    note: str = ""
    graph: str = ""
    precision: str = ""
    build_s: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    vs_torch: float | None = None
    vs_peer: float | None = None  # speed-up over the fastest faithful peer of the same case
    max_abs: float | None = None
    cosine: float | None = None
    within_tolerance: bool | None = None


def role(backend: str) -> str:
    return "peer" if backend in PEERS else "ours" if backend in OURS else "other"


def check_backends(names: list[str]) -> list[str]:
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise UsageError(f"unknown backend {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))
