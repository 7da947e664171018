"""Triton model configurations (``config.pbtxt``) for our exports: tensors, batching, ensembles, notes.

Text only: protobuf text format of Triton's ModelConfig, '#' comments allowed. The tests parse every config
we write with Triton's own ModelConfig proto.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx

from crossformer_deploy.base.errors import ModelFileError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.tensorrt.sidecar import EngineIdentity

PLUGIN_LIBRARY = "libcrossformer_plugins.so"
_ONNX_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 7: "TYPE_INT64", 6: "TYPE_INT32", 2: "TYPE_UINT8"}


@dataclass(frozen=True)
class TensorDecl:
    """One ``input``/``output`` entry of config.pbtxt (dims without the batch dim when batching)."""

    name: str
    data_type: str
    dims: tuple[int, ...]

    def text(self) -> str:
        dims = ", ".join(str(d) for d in self.dims)
        return f"{{ name: {_quote(self.name)}, data_type: {self.data_type}, dims: [ {dims} ] }}"


@dataclass(frozen=True)
class ModelIO:
    """A model's tensors with their full shapes (batch dim first) and whether the batch dim is free."""

    inputs: tuple[TensorDecl, ...]
    outputs: tuple[TensorDecl, ...]
    dynamic_batch: bool

    def for_config(self, batching: bool) -> tuple[tuple[TensorDecl, ...], tuple[TensorDecl, ...]]:
        """With ``max_batch_size > 0`` Triton's dims leave out the batch dim; with 0 they are the full shape."""
        def strip(ts: tuple[TensorDecl, ...]) -> tuple[TensorDecl, ...]:
            return tuple(TensorDecl(t.name, t.data_type, t.dims[1:]) for t in ts) if batching else ts

        return strip(self.inputs), strip(self.outputs)


def onnx_io(path: str) -> ModelIO:
    """Inputs/outputs with their shapes as the ONNX graph declares them (symbolic dims -> -1)."""
    graph = onnx.load(path, load_external_data=False).graph
    initializers = {t.name for t in graph.initializer}

    def decl(v: onnx.ValueInfoProto) -> TensorDecl:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        if t.elem_type not in _ONNX_TYPES:
            raise ModelFileError(f"{path}: tensor {v.name!r} has ONNX element type {t.elem_type}, "
                                 f"which this generator does not map to a Triton type")
        return TensorDecl(v.name, _ONNX_TYPES[t.elem_type], dims)

    inputs = tuple(decl(v) for v in graph.input if v.name not in initializers)
    outputs = tuple(decl(v) for v in graph.output)
    return ModelIO(inputs, outputs, dynamic_batch=all(t.dims and t.dims[0] == -1 for t in inputs))


def plan_io(info: ModelInfo) -> ModelIO:
    """An engine's tensors from its ModelInfo: the ONNX it was built from had these (same names)."""
    batch = -1 if info.batch is None else info.batch
    h, w = (-1, -1) if info.dynamic else info.input_size
    image = TensorDecl("image", "TYPE_FP32", (batch, 3, h, w))  # our engines keep fp32 I/O (casts inside)
    if info.mode == "classifier":
        outputs: tuple[TensorDecl, ...] = (TensorDecl("logits", "TYPE_FP32", (batch, info.num_classes)),)
    else:
        outputs = tuple(TensorDecl(f"stage{i}", "TYPE_FP32", (batch, -1, -1, -1)) for i in range(1, 5))
    return ModelIO((image,), outputs, dynamic_batch=info.batch is None)


def model_config(name: str, engine: str, max_batch: int, inputs: Sequence[TensorDecl], outputs: Sequence[TensorDecl],
                 device: str, instances: int, comment: Sequence[str] = (),
                 parameters: dict[str, str] | None = None) -> str:
    """config.pbtxt text (protobuf text format of Triton's ModelConfig; '#' comments are allowed)."""
    lines = [*(f"# {c}" for c in comment), f"name: {_quote(name)}", engine, f"max_batch_size: {max_batch}",
             _tensor_list("input", inputs), _tensor_list("output", outputs)]
    if max_batch > 0:
        lines.append("dynamic_batching { }")
    lines.append(f"instance_group [ {{ count: {instances}, kind: {device} }} ]")
    lines += [f"parameters {{ key: {_quote(k)}, value: {{ string_value: {_quote(v)} }} }}"
              for k, v in (parameters or {}).items()]
    return "\n".join(lines) + "\n"


def ensemble_config(name: str, max_batch: int, outputs: Sequence[TensorDecl]) -> str:
    """Bytes in, labels out: preprocess -> model -> postprocess."""
    def step(model: str, inputs: dict[str, str], outs: dict[str, str]) -> str:
        maps = [f"input_map {{ key: {_quote(k)}, value: {_quote(v)} }}" for k, v in inputs.items()]
        maps += [f"output_map {{ key: {_quote(k)}, value: {_quote(v)} }}" for k, v in outs.items()]
        return f"    {{ model_name: {_quote(model)}, model_version: -1,\n      " + ",\n      ".join(maps) + " }"

    steps = [step(f"{name}_preprocess", {"image_bytes": "image_bytes"}, {"image": "image"}),
             step(name, {"image": "image"}, {"logits": "logits"}),
             step(f"{name}_postprocess", {"logits": "logits"}, {t.name: t.name for t in outputs})]
    head = f"# Ensemble: encoded image bytes -> {name}_preprocess -> {name} -> {name}_postprocess -> labels."
    return "\n".join([head,
                      f"name: {_quote(name + '_ensemble')}", 'platform: "ensemble"', f"max_batch_size: {max_batch}",
                      _tensor_list("input", [TensorDecl("image_bytes", "TYPE_STRING", (1,))]),
                      _tensor_list("output", outputs),
                      "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}"]) + "\n"


def plugin_note(identity: EngineIdentity) -> list[str]:
    """What tritonserver needs to load an engine with the fused attention op (not run here: no TensorRT)."""
    uses = ("This engine was built with the crossformer::GroupedAttention plugin" if identity.plugin else
            "The sidecar records no GroupedAttention plugin in this engine; an engine built with it")
    return [f"Built ({identity.precision}) by TensorRT {identity.tensorrt_version} for {identity.gpu_name} (compute "
            f"capability {identity.compute_capability}):",
            "Triton's TensorRT backend must use that TensorRT version, on that GPU model.",
            uses + ". Built through plugins/tensorrt_plugin.py (ahead-of-time Triton kernel), the kernel",
            "is embedded in the plan and tritonserver needs no plugin library or flag (plugins/README.md).",
            "Only an engine built with a C++ plugin library instead needs that library loaded first:",
            f"  tritonserver --model-repository=REPO --backend-config=tensorrt,plugins=/path/{PLUGIN_LIBRARY}"]



def _tensor_list(kind: str, tensors: Sequence[TensorDecl]) -> str:
    return f"{kind} [\n" + ",\n".join(f"  {t.text()}" for t in tensors) + "\n]"


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

