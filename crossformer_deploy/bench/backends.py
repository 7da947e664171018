"""Backends: name -> builder(Context) -> Candidate. A builder raises to be skipped with its one-line reason."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch

from crossformer_deploy.base.errors import UsageError, first_line
from crossformer_deploy.bench.config import BACKENDS, BackendSpec, Candidate
from crossformer_deploy.bench.graphs import CaseGraphs
from crossformer_deploy.bench.machine import emulated
from crossformer_deploy.export.onnx_export import output_names
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from crossformer_deploy.runtime.openvino_runner import OpenVINORunner
from crossformer_deploy.runtime.runner import Runner
from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner


@dataclass
class Context:
    model: object
    graphs: CaseGraphs
    threads: int
    shape: tuple[int, int, int, int]
    flags: frozenset[str] = frozenset()  # this CPU's instruction-set flags (machine.cpu_flags)
    run_emulated: bool = False


def _torch(ctx: Context, compiled: bool = False, bf16: bool = False) -> Candidate:
    module = torch.compile(ctx.model) if compiled else ctx.model
    names = output_names(ctx.model)

    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = module(torch.from_numpy(x))
        ys = (y,) if isinstance(y, torch.Tensor) else y
        return {n: t.float().numpy() for n, t in zip(names, ys)}

    what = "torch.compile (inductor)" if compiled else "eager"
    return Candidate(fn, f"PyTorch {what}" + (" + autocast bf16" if bf16 else ""), "bf16" if bf16 else "fp32")


def _runner_candidate(runner, graph: str, precision: str) -> Candidate:
    runner.load()
    name = runner.inputs[0].name
    return Candidate(lambda x: runner.run({name: x}), graph, precision, runner)


def _ort(ctx: Context, spec: BackendSpec, provider: str = "cpu") -> Candidate:
    path, desc = ctx.graphs.get(spec.graph)
    return _runner_candidate(OnnxRuntimeRunner(path, provider, ctx.threads), f"ORT {provider}: {desc}", spec.bar)


def _ov(ctx: Context, spec: BackendSpec) -> Candidate:
    path, desc = ctx.graphs.get(spec.graph)
    # Compiled for the case's static shape unless the backend measures the dynamic graph as such: every graph
    # gets OpenVINO's fast path, so the bar is measured against the best a user gets from OpenVINO.
    runner = OpenVINORunner(path, ctx.threads, spec.hint, static_shape=ctx.shape if spec.reshape else None)
    runner.load()
    how = "reshaped static" if spec.reshape else "dynamic shape"
    return _runner_candidate(runner, f"OpenVINO CPU: {desc}, {how}", runner.effective_precision)


def _tensorrt(ctx: Context, spec: BackendSpec) -> Candidate:
    try:  # optional: TensorRT's libraries and a GPU
        import tensorrt  # noqa: F401
    except ImportError:
        raise UsageError("TensorRT is not installed (pip install tensorrt; needs an NVIDIA GPU)") from None
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise UsageError("ONNX Runtime has no TensorrtExecutionProvider here (install onnxruntime-gpu)")
    return _ort(ctx, spec, provider="tensorrt")


def _torch_cuda(ctx: Context, spec: BackendSpec) -> Candidate:
    runner = TorchCudaRunner(ctx.model)
    return _runner_candidate(runner, "PyTorch fp16 on CUDA: fused Triton attention, CUDA graphs", "fp16")


# runtime of a BackendSpec -> how to build it
BUILDERS: dict[str, Callable[[Context, BackendSpec], Candidate]] = {
    "torch": lambda c, s: _torch(c),
    "torch-compile": lambda c, s: _torch(c, compiled=True),
    "torch-bf16": lambda c, s: _torch(c, bf16=True),
    "ort": _ort,
    "ov": _ov,
    "tensorrt": _tensorrt,
    "torch-cuda": _torch_cuda,
}
assert {b.runtime for b in BACKENDS.values()} <= BUILDERS.keys()


def build(name: str, ctx: Context) -> Candidate:
    """The backend, or an exception whose one line says why not (a bf16 path on a CPU without bf16
    instructions is refused unless asked for: emulated, it takes seconds per call and says nothing)."""
    spec = BACKENDS[name]
    refuse_emulated(spec.bar, ctx.flags, ctx.run_emulated)
    return BUILDERS[spec.runtime](ctx, spec)


def refuse_emulated(precision: str, flags: frozenset[str], run_emulated: bool) -> None:
    """EmulatedError for a path this CPU would only emulate, unless it was asked for (--run-emulated)."""
    why = emulated(precision, flags)
    if why and not run_emulated:
        raise EmulatedError(f"emulated, skipped: {why} (--run-emulated times it anyway)")


class EmulatedError(UsageError):
    """A path this CPU would only emulate."""


def dense_runner(runtime: str, path: str, threads: int, ov_precision: str = "f32") -> tuple[Runner, str]:
    """(loaded runner, graph label) of a detector's or segmenter's dynamic graph on ``runtime`` ("ort" or "ov").
    OpenVINO compiles it per shape, as crossformer-infer does (runtime/openvino_runner.py: its dynamic compile holds
    far more memory and runs slower)."""
    if runtime == "ort":
        return OnnxRuntimeRunner(path, threads=threads).load(), "ONNX Runtime: dynamic graph"
    return (OpenVINORunner(path, threads, ov_precision, per_shape=1).load(),
            "OpenVINO: dynamic graph compiled per shape")


def one_line(e: BaseException) -> str:
    """A backend's failure for the table's note column (our own errors need no type name)."""
    return first_line(e, 240) if isinstance(e, UsageError) else f"{type(e).__name__}: {first_line(e, 200)}"
