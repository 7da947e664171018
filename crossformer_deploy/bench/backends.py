"""Backends: name -> builder(Context) -> Candidate. A builder raises to be skipped with its one-line reason."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError, first_line
from ..export.onnx_export import output_names
from .config import BACKENDS, Candidate
from .graphs import CaseGraphs
from .machine import emulated


@dataclass
class Context:
    model: object
    graphs: CaseGraphs
    threads: int
    shape: tuple[int, int, int, int]
    flags: frozenset[str] = frozenset()  # this CPU's instruction-set flags (machine.cpu_flags)
    run_emulated: bool = False


def _torch(ctx: Context, compiled: bool = False, bf16: bool = False) -> Candidate:
    import torch

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


def _ort(ctx: Context, key: str, precision: str, provider: str = "cpu") -> Candidate:
    from ..runtime.onnxruntime_runner import OnnxRuntimeRunner

    path, desc = ctx.graphs.get(key)
    return _runner_candidate(OnnxRuntimeRunner(path, provider, ctx.threads), f"ORT {provider}: {desc}", precision)


def _ov(ctx: Context, key: str, hint: str | None) -> Candidate:
    from ..runtime.openvino_runner import OpenVINORunner

    path, desc = ctx.graphs.get(key)
    # Reshaped to the case's static shape: the peers get OpenVINO's fast path too, so the bar is measured
    # against the best a user gets from OpenVINO on the plain export.
    runner = OpenVINORunner(path, ctx.threads, hint, static_shape=ctx.shape)
    runner.load()
    return _runner_candidate(runner, f"OpenVINO CPU: {desc}, reshaped static", runner.effective_precision)


def _tensorrt(ctx: Context) -> Candidate:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise UsageError("TensorRT is not installed (pip install tensorrt; needs an NVIDIA GPU)") from None
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise UsageError("ONNX Runtime has no TensorrtExecutionProvider here (install onnxruntime-gpu)")
    return _ort(ctx, "static", "fp32", provider="tensorrt")


def _torch_cuda(ctx: Context) -> Candidate:
    from ..runtime.torch_cuda_runner import TorchCudaRunner

    runner = TorchCudaRunner(ctx.model)
    return _runner_candidate(runner, "PyTorch fp16 on CUDA: fused Triton attention, CUDA graphs", "fp16")


BUILDERS: dict[str, Callable[[Context], Candidate]] = {
    "torch": _torch,
    "torch-compile": lambda c: _torch(c, compiled=True),
    "torch-bf16": lambda c: _torch(c, bf16=True),
    "ort": lambda c: _ort(c, "plain", "fp32"),
    "ort-static": lambda c: _ort(c, "static", "fp32"),
    "ort-target": lambda c: _ort(c, "target-onnxruntime", "fp32"),
    "ort-fp16": lambda c: _ort(c, "fp16", "fp16"),
    "ort-int8": lambda c: _ort(c, "int8-onnxruntime", "int8"),
    "ov-f32": lambda c: _ov(c, "plain", "f32"),
    "ov-bf16": lambda c: _ov(c, "plain", "bf16"),
    "ov-nncf-int8": lambda c: _ov(c, "nncf-plain", None),
    "ov-target-f32": lambda c: _ov(c, "target-openvino", "f32"),
    "ov-target-bf16": lambda c: _ov(c, "target-openvino", "bf16"),
    "ov-int8": lambda c: _ov(c, "int8-openvino", None),  # Q/DQ layers in int8, the rest in OpenVINO's default
    "ov-target-nncf-int8": lambda c: _ov(c, "nncf-target-openvino", None),
    "tensorrt": _tensorrt,
    "torch-cuda": _torch_cuda,
}
assert BUILDERS.keys() == BACKENDS.keys()


def build(name: str, ctx: Context) -> Candidate:
    """The backend, or an exception whose one line says why not (a bf16 path on a CPU without bf16
    instructions is refused unless asked for: emulated, it takes seconds per call and says nothing)."""
    why = emulated(BACKENDS[name], ctx.flags)
    if why and not ctx.run_emulated:
        raise EmulatedError(f"emulated, skipped: {why} (--run-emulated times it anyway)")
    return BUILDERS[name](ctx)


class EmulatedError(UsageError):
    """A path this CPU would only emulate."""


def one_line(e: BaseException) -> str:
    """A backend's failure for the table's note column (our own errors need no type name)."""
    return first_line(e, 240) if isinstance(e, UsageError) else f"{type(e).__name__}: {first_line(e, 200)}"
