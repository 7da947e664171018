"""What a bench run compares, and how each result is judged: backends, peers, bars, the record of a result."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.runtime.parity import TOLERANCES


@dataclass(frozen=True)
class BackendSpec:
    """One way from a CrossFormer to an answer: which runtime, on which graph (``graphs.GRAPHS``), held to which
    precision's bar, and whose path it is (a peer is what a user runs without us)."""

    runtime: str  # torch | torch-compile | torch-bf16 | ort | ov | tensorrt | torch-cuda
    bar: str  # the precision whose bar (BAR) its accuracy is held to
    role: str = "other"  # peer | ours | other
    graph: str | None = None  # the graph an ort / ov / tensorrt backend runs
    hint: str | None = None  # OpenVINO's INFERENCE_PRECISION_HINT (None: OpenVINO's own choice)
    reshape: bool = True  # OpenVINO: compile for the case's static shape (False: the graph's dynamic one)
    run: str = ""  # how a user runs the result (--recommend)


_INFER = "crossformer-infer IMAGES --model model.onnx"
_INFER_OV = _INFER + " --provider openvino"
_OV_BF16 = "OpenVINO with INFERENCE_PRECISION_HINT=bf16 (runtime/openvino_runner.py)"
_NNCF_OURS = ("then NNCF on it (crossformer_deploy.bench.graphs.nncf_quantize, head float) -> model.xml, run with "
              "OpenVINO (not a crossformer-export option)")
_PEER_OV = "OpenVINO on the authors' model exported by torch.onnx.export (their path, not ours)"
# Order = table order. Peers run the peer graph: the authors' model exported by plain torch.onnx.export at the
# case's shape (``--official``), or ours in its place when their code is not given.
BACKENDS: dict[str, BackendSpec] = {
    "torch": BackendSpec("torch", "fp32", run="PyTorch: crossformer_deploy.create_model(...) (no export)"),
    "torch-compile": BackendSpec("torch-compile", "fp32", run="PyTorch: torch.compile(create_model(...))"),
    "torch-bf16": BackendSpec("torch-bf16", "bf16",
                              run="PyTorch: create_model(...) under torch.autocast('cpu', torch.bfloat16)"),
    "ort": BackendSpec("ort", "fp32", "peer", "peer", run="ONNX Runtime on the authors' torch.onnx.export"),
    "ort-qdq-int8": BackendSpec("ort", "int8", "peer", "ort-qdq-peer",
                                run="onnxruntime.quantization.quantize_static of the authors' export, on ORT"),
    "ort-dynamic": BackendSpec("ort", "fp32", graph="plain", run=_INFER),
    "ort-static": BackendSpec("ort", "fp32", graph="static", run=_INFER),
    "ort-target": BackendSpec("ort", "fp32", "ours", "target-onnxruntime", run=_INFER),
    "ort-fp16": BackendSpec("ort", "fp16", "ours", "fp16", run=_INFER),
    "ort-int8": BackendSpec("ort", "int8", "ours", "int8-onnxruntime", run=_INFER),
    "ov-f32": BackendSpec("ov", "fp32", "peer", "peer", "f32", run=_PEER_OV),
    "ov-bf16": BackendSpec("ov", "bf16", "peer", "peer", "bf16", run=_PEER_OV),
    "ov-nncf-int8": BackendSpec("ov", "int8", "peer", "nncf-peer", run="nncf.quantize(the authors' export, "
                                "model_type=TRANSFORMER), then OpenVINO (NNCF's path, not ours)"),
    "ov-nncf-int8-head-float": BackendSpec("ov", "int8", "peer", "nncf-peer-head-float",
                                           run="nncf.quantize(..., ignored_scope=the head), then OpenVINO"),
    "ov-dynamic": BackendSpec("ov", "fp32", graph="plain", hint="f32", reshape=False, run=_INFER_OV),
    "ov-target-f32": BackendSpec("ov", "fp32", "ours", "target-openvino", "f32", run=_INFER_OV),
    "ov-target-bf16": BackendSpec("ov", "bf16", "ours", "target-openvino", "bf16", run=_OV_BF16),
    # Q/DQ layers in int8, the rest in OpenVINO's default precision
    "ov-int8": BackendSpec("ov", "int8", "ours", "int8-openvino", run=_INFER_OV),
    # stage 1 and the attention matmuls float (bf16 where the CPU has it), the rest int8 (placement.py)
    "ov-int8-hybrid": BackendSpec("ov", "int8", "ours", "int8-openvino-hybrid", run=_INFER_OV),
    "ov-target-nncf-int8": BackendSpec("ov", "int8", "ours", "nncf-target-openvino", run=_NNCF_OURS),
    "tensorrt": BackendSpec("tensorrt", "fp32", graph="static", run="ONNX Runtime's TensorRT execution provider"),
    "torch-cuda": BackendSpec("torch-cuda", "fp16",
                              run="crossformer-infer IMAGES --variant V --weights W --provider torch-cuda"),
}
PEERS = tuple(k for k, b in BACKENDS.items() if b.role == "peer")
OURS = tuple(k for k, b in BACKENDS.items() if b.role == "ours")
BASELINE = "torch"
GOAL_RATIO = 1.2  # our fastest faithful path against the fastest faithful peer (docs/measurements.md)
# Faithful: fp32 max abs <= 1e-4; bf16 like fp16, cosine >= 0.9995; int8 cosine >= 0.99.
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
    official: str | None = None  # the authors' models/crossformer.py: the peers' model (else ours stands in)
    weights_seed: int = 0  # seed of the trained-like weights when no checkpoint is given


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
    return BACKENDS[backend].role


def check_backends(names: list[str]) -> list[str]:
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise UsageError(f"unknown backend {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))
