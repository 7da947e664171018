"""OpenVINO backend (CPU): reads our ONNX directly, no IR conversion step.

``openvino`` is imported lazily, so this module imports (and the CLI lists the provider) without it;
constructing a runner without it is a one-line UsageError.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np

from crossformer_deploy.base.errors import ModelFileError, UsageError, first_line
from crossformer_deploy.base.model_file import check_model_file
from crossformer_deploy.runtime.runner import Runner, TensorSpec

PRECISIONS = ("f32", "bf16")
INSTALL_HINT = "OpenVINO is not installed: pip install openvino"


def import_openvino():
    try:
        import openvino
    except ImportError:
        raise UsageError(INSTALL_HINT) from None
    return openvino


def openvino_version() -> str | None:
    try:
        import openvino
    except ImportError:
        return None
    return openvino.__version__


class OpenVINORunner(Runner):
    """An ONNX file compiled by OpenVINO for the CPU, tuned for latency (one request at a time).

    precision_hint: "f32" (the default, so that fp32 validation tolerances hold), "bf16", or None for
    OpenVINO's own choice (bf16 on CPUs with AVX-512 BF16 or AMX, f32 elsewhere).
    static_shape: reshape the (dynamic) input to this shape before compiling: OpenVINO then plans
    memory and picks kernels once, which is faster; a dict maps input names to shapes.
    per_shape: N > 0 compiles the model once per distinct set of input shapes, as a static model, and
    keeps the N most recently used (0: one compile of the model as it is). OpenVINO's CPU plugin plans
    memory ahead only for static shapes: compiled dynamic, Mask R-CNN-S at 800x1216 held 6.0 GB (11.5 GB
    once it had run a batch of 2, never given back), compiled for the shape 1.4 GB, and each run was
    1-14 % faster, for 2-3 s of compiling per new shape (benchmarks/ov_shape_memory_zen4.json).
    """

    name = "openvino"

    def __init__(self, path: str | os.PathLike, threads: int | None = None, precision_hint: str | None = "f32",
                 static_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                 perf_count: bool = False, per_shape: int = 0):
        super().__init__()
        self.path = check_model_file(path)
        if precision_hint is not None and precision_hint not in PRECISIONS:
            raise UsageError(f"unknown OpenVINO precision {precision_hint!r}; choose {', '.join(PRECISIONS)} or None")
        self.ov = import_openvino()  # fail at construction, before anything expensive
        self.threads, self.precision_hint, self.static_shape = threads, precision_hint, static_shape
        self.perf_count = perf_count
        if per_shape < 0:
            raise UsageError(f"per_shape must be >= 0, got {per_shape}")
        self.per_shape = per_shape
        self.compiled = None
        self.request = None
        self._core = self._model = None
        self._by_shape: OrderedDict[tuple, tuple[object, object]] = OrderedDict()

    def config(self) -> dict[str, object]:
        cfg: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.precision_hint:
            cfg["INFERENCE_PRECISION_HINT"] = self.precision_hint
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.perf_count:
            cfg["PERF_COUNT"] = "YES"
        return cfg

    def _load(self) -> None:
        core = self.ov.Core()
        try:
            model = core.read_model(self.path)
        except Exception as e:  # OpenVINO raises RuntimeError for every kind of unreadable file
            raise ModelFileError(f"{self.path}: OpenVINO cannot read this model ({first_line(e, 200)})") from None
        if self.static_shape is not None:
            shapes = (dict(self.static_shape) if isinstance(self.static_shape, Mapping)
                      else {model.inputs[0].get_any_name(): self.static_shape})
            try:
                model.reshape({k: [int(d) for d in v] for k, v in shapes.items()})
            except Exception as e:  # a static graph of another size, or an unknown input name
                raise UsageError(f"{self.path}: cannot reshape to {shapes} ({str(e).strip()[:200]})") from None
        if self.per_shape and model.is_dynamic():
            self._core, self._model = core, model  # compiled per shape in _run
        else:
            self.compiled = core.compile_model(model, "CPU", self.config())
            self.request = self.compiled.create_infer_request()

    def _specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(port) -> TensorSpec:
            shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
            return TensorSpec(port.get_any_name(), shape, np.dtype(port.get_element_type().to_dtype()))

        ports = self._model if self._model is not None else self.compiled
        return [spec(p) for p in ports.inputs], [spec(p) for p in ports.outputs]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._model is not None:
            self._use_shape(feeds)
        # share_outputs=False (the default) copies the results out: the next run reuses the buffers.
        res = self.request.infer(feeds)
        return {s.name: np.asarray(res[p]) for s, p in zip(self.outputs, self.compiled.outputs)}

    def _use_shape(self, feeds: dict[str, np.ndarray]) -> None:
        """Point compiled / request at the static compile for these feeds' shapes (compiled on first sight; the
        least recently used one dropped past ``per_shape``)."""
        key = tuple(sorted((k, tuple(v.shape)) for k, v in feeds.items()))
        if key not in self._by_shape:
            model = self._model.clone()
            try:
                model.reshape({k: list(shape) for k, shape in key})
            except Exception as e:  # a shape the graph cannot take: one line, like a static reshape
                raise UsageError(f"{self.path}: cannot run at {dict(key)} ({first_line(e, 200)})") from None
            compiled = self._core.compile_model(model, "CPU", self.config())
            self._by_shape[key] = (compiled, compiled.create_infer_request())
            while len(self._by_shape) > self.per_shape:
                self._by_shape.popitem(last=False)
        self._by_shape.move_to_end(key)
        self.compiled, self.request = self._by_shape[key]

    @property
    def effective_precision(self) -> str:
        """The precision OpenVINO actually runs with (what None resolved to on this CPU)."""
        self.load()
        compiled = self.compiled or self._core.compile_model(self._model, "CPU", self.config())
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def profile(self) -> list[tuple[str, str, str, float]]:
        """(node name, layer type, kernel, ms) per executed layer of the last run; needs perf_count=True."""
        if not self.perf_count:
            raise UsageError("OpenVINO profiling needs OpenVINORunner(..., perf_count=True)")
        out = []
        for p in self.request.get_profiling_info():
            if p.status == p.Status.EXECUTED:
                out.append((p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1e3))
        return out

    def close(self) -> None:
        self.request = self.compiled = self._core = self._model = None
        self._by_shape.clear()
        self._loaded = False
