"""Triton Inference Server model repositories for an exported CrossFormer (.onnx, or a TensorRT .plan).

Every model is a directory ``<name>/config.pbtxt`` + ``<name>/1/<model file>``:

- ``onnx``: ``platform: "onnxruntime_onnx"``, ``1/model.onnx`` (Triton's ONNX Runtime backend);
- ``plan``: ``platform: "tensorrt_plan"``, ``1/model.plan`` (+ its sidecar), with the plugin note;
- ``python``: ``backend: "python"``, ``1/model.py`` running our OnnxRuntimeRunner over ``1/model.onnx``
  (the variant served in the tests: the tritonserver in nvidia-pytriton has only the Python backend);
- ``with_preprocess``: also ``<name>_preprocess`` (encoded image bytes -> ``image``, our preprocessing),
  ``<name>_postprocess`` (``logits`` -> top-k labels as JSON, probabilities, class ids) and
  ``<name>_ensemble`` wiring bytes -> labels through the three.

The second half of this file is the serving side: the ``TritonPythonModel`` classes that the generated
``model.py`` files import inside Triton's Python-backend stub. It must stay importable without torch.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CrossFormerError, ImageError, InputSizeError, ModelFileError, UsageError
from ..export.metadata import ModelInfo
from ..runtime.open import ENGINE_EXTS, read_model_info

if TYPE_CHECKING:
    from .identity import EngineIdentity

KINDS = ("auto", "onnx", "plan", "python")
PLUGIN_LIBRARY = "libcrossformer_plugins.so"
DEFAULT_TOPK = 5
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
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


@dataclass
class ModelDir:
    """What one model directory will hold: generated texts and files copied from elsewhere."""

    name: str
    max_batch: int  # as written in its config.pbtxt (0: no batching)
    image_type: str  # the data type of its first input
    texts: dict[str, str] = field(default_factory=dict)  # relative path -> content
    copies: dict[str, str] = field(default_factory=dict)  # relative path -> source file


# ------------------------------------------------------------------------------------------------
# Generator
# ------------------------------------------------------------------------------------------------

def write_repository(model_path: str | os.PathLike, name: str, out_dir: str | os.PathLike, max_batch: int = 32,
                     instances: int = 1, with_preprocess: bool = False, kind: str = "auto",
                     overwrite: bool = False, topk: int = DEFAULT_TOPK,
                     execution_env: str | None = None) -> list[str]:
    """Write the Triton model(s) for ``model_path`` into the repository ``out_dir``; return the files written.

    ``kind``: ``auto`` (ONNX -> ``onnx``, engine -> ``plan``), ``onnx``, ``plan`` or ``python``.
    ``execution_env``: a packed Python env (conda-pack tarball) for the Python-backend models'
    ``EXECUTION_ENV_PATH``; without it the stub runs the first ``python3`` on the server's PATH.
    Existing model directories are replaced only with ``overwrite=True``.
    """
    model_path = os.fspath(model_path)
    kind = resolve_kind(model_path, kind)
    _check_args(name, max_batch, instances, topk)
    info = read_model_info(model_path)
    models = [main_model(model_path, name, info, kind, max_batch, instances, execution_env)]
    if with_preprocess:
        models = pipeline_models(models[0], info, instances, topk, execution_env)
    return install(models, os.fspath(out_dir), overwrite)


def resolve_kind(model_path: str, kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"unknown repository kind {kind!r}; choose {', '.join(KINDS)}")
    is_engine = model_path.endswith(ENGINE_EXTS)
    if not is_engine and not model_path.endswith(".onnx"):
        raise ModelFileError(f"{model_path}: expected an .onnx model or a TensorRT engine ({', '.join(ENGINE_EXTS)})")
    if kind == "auto":
        return "plan" if is_engine else "onnx"
    if is_engine and kind != "plan":
        raise UsageError(f"{model_path} is a TensorRT engine: only the tensorrt backend serves it "
                         f"(the onnxruntime and python backends need the .onnx it was built from)")
    if not is_engine and kind == "plan":
        raise UsageError(f"the tensorrt backend needs an engine (.plan); build one from {model_path} with "
                         f"crossformer-build-engine")
    return kind


def _check_args(name: str, max_batch: int, instances: int, topk: int) -> None:
    if not _NAME.match(name):
        raise UsageError(f"model name {name!r}: use letters, digits, '_', '.', '-' (it becomes a directory name)")
    for what, v in (("max batch", max_batch), ("instances", instances), ("top-k", topk)):
        if v < 1:
            raise UsageError(f"{what} must be at least 1, got {v}")


def main_model(model_path: str, name: str, info: ModelInfo, kind: str, max_batch: int, instances: int,
               execution_env: str | None = None) -> ModelDir:
    """The model itself, in the layout of ``kind``."""
    if kind == "plan":
        return _plan_model(model_path, name, info, max_batch, instances)
    io_ = onnx_io(model_path)
    source = f"from {os.path.basename(model_path)} ({_describe(info)})"
    if kind == "onnx":
        batch = max_batch if io_.dynamic_batch else 0
        comment = [f"ONNX Runtime backend, {source}.", *_fixed_batch_note(info, io_.dynamic_batch)]
        config = model_config(name, 'platform: "onnxruntime_onnx"', batch, *io_.for_config(batch > 0), "KIND_CPU",
                              instances, comment)
        return ModelDir(name, batch, io_.inputs[0].data_type, {"config.pbtxt": config}, {"1/model.onnx": model_path})
    # python: the model concatenates requests and pads fixed-batch graphs itself, so it always batches
    comment = [f"Python backend running crossformer_deploy's OnnxRuntimeRunner over 1/model.onnx, {source}.",
               *_python_env_note(execution_env)]
    config = model_config(name, 'backend: "python"', max_batch, *io_.for_config(True), "KIND_CPU", instances,
                          comment, _env_parameters(execution_env))
    texts = {"config.pbtxt": config, "1/model.py": model_py("RuntimeModel", "the CrossFormer model")}
    return ModelDir(name, max_batch, io_.inputs[0].data_type, texts, {"1/model.onnx": model_path})


def _plan_model(model_path: str, name: str, info: ModelInfo, max_batch: int, instances: int) -> ModelDir:
    from .identity import read_sidecar, sidecar_path

    sidecar = read_sidecar(model_path)
    io_ = plan_io(info)
    notes = [f"TensorRT backend, from {os.path.basename(model_path)} ({_describe(info)}).",
             *_fixed_batch_note(info, io_.dynamic_batch)]
    engine_max = max((p.max[0] for p in sidecar.identity.profiles), default=None)
    if io_.dynamic_batch and engine_max is not None and max_batch > engine_max:
        notes.append(f"max_batch_size lowered from {max_batch} to {engine_max}: the engine's largest profile batch.")
        max_batch = engine_max
    notes += plugin_note(sidecar.identity)
    batch = max_batch if io_.dynamic_batch else 0
    config = model_config(name, 'platform: "tensorrt_plan"', batch, *io_.for_config(batch > 0), "KIND_GPU",
                          instances, notes)
    readme = "# " + name + "\n\n" + "\n".join(notes) + "\n"
    return ModelDir(name, batch, io_.inputs[0].data_type, {"config.pbtxt": config, "README.md": readme},
                    {"1/model.plan": model_path, "1/model.plan.json": sidecar_path(model_path)})


def pipeline_models(model: ModelDir, info: ModelInfo, instances: int, topk: int,
                    execution_env: str | None) -> list[ModelDir]:
    """``<name>_preprocess`` -> ``<name>`` -> ``<name>_postprocess``, and ``<name>_ensemble`` wiring them."""
    if info.mode != "classifier":
        raise UsageError("--with-preprocess needs a classifier (this model is a backbone: feature maps, no labels)")
    if model.max_batch == 0:
        raise UsageError(f"--with-preprocess needs a dynamic-batch model, this one takes batch {info.batch} only; "
                         f"export without --batch, or use the python backend (it pads batches)")
    if model.image_type != "TYPE_FP32":
        raise UsageError(f"--with-preprocess feeds float32 images; this graph's input is {model.image_type}")
    k = min(topk, info.num_classes)
    outputs = (TensorDecl("labels", "TYPE_STRING", (1,)), TensorDecl("probabilities", "TYPE_FP32", (k,)),
               TensorDecl("class_ids", "TYPE_INT64", (k,)))
    # the ensemble and its steps batch as much as the model does (a plan's max batch may have been lowered)
    return [_preprocess_model(model, info, instances, execution_env),
            model,
            _postprocess_model(model, info, outputs, instances, execution_env),
            # Triton wants a version directory even for an ensemble; a file keeps the (empty) folder
            ModelDir(f"{model.name}_ensemble", model.max_batch, "TYPE_STRING",
                     {"config.pbtxt": ensemble_config(model.name, model.max_batch, outputs), "1/.keep": ""})]


def _preprocess_model(model: ModelDir, info: ModelInfo, instances: int, execution_env: str | None) -> ModelDir:
    h, w = info.input_size
    params = {"height": str(h), "width": str(w), "crop_ratio": str(info.crop_ratio),
              "mean": json.dumps(list(info.mean)), "std": json.dumps(list(info.std)), **_env_parameters(execution_env)}
    comment = [f"Encoded image bytes -> the {h}x{w} input of {model.name} (resize, center crop, mean/std).",
               "A request whose bytes do not decode gets an error response; the others are answered.",
               *_python_env_note(execution_env)]
    name = f"{model.name}_preprocess"
    config = model_config(name, 'backend: "python"', model.max_batch, (TensorDecl("image_bytes", "TYPE_STRING", (1,)),),
                          (TensorDecl("image", "TYPE_FP32", (3, h, w)),), "KIND_CPU", instances, comment, params)
    return ModelDir(name, model.max_batch, "TYPE_STRING",
                    {"config.pbtxt": config, "1/model.py": model_py("PreprocessModel", "image bytes -> image")})


def _postprocess_model(model: ModelDir, info: ModelInfo, outputs: tuple[TensorDecl, ...], instances: int,
                       execution_env: str | None) -> ModelDir:
    k = outputs[1].dims[0]
    params = {"num_classes": str(info.num_classes), "topk": str(k), **_env_parameters(execution_env)}
    comment = [f"logits -> top-{k}: labels (a JSON list of {{class, label, prob}} per image, the format of "
               "crossformer-infer --json), probabilities, class_ids.", *_python_env_note(execution_env)]
    name = f"{model.name}_postprocess"
    config = model_config(name, 'backend: "python"', model.max_batch,
                          (TensorDecl("logits", "TYPE_FP32", (info.num_classes,)),), outputs, "KIND_CPU", instances,
                          comment, params)
    return ModelDir(name, model.max_batch, "TYPE_FP32",
                    {"config.pbtxt": config, "1/model.py": model_py("PostprocessModel", "logits -> top-k labels")})


def onnx_io(path: str) -> ModelIO:
    """Inputs/outputs with their shapes as the ONNX graph declares them (symbolic dims -> -1)."""
    import onnx

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
            f"  tritonserver --model-repository=REPO --backend-config=tensorrt,plugins=/path/{PLUGIN_LIBRARY}",
            "NOT run here: no TensorRT or GPU on the machine that wrote",
            "and tested this generator; only the config text was checked (parsed as Triton's ModelConfig)."]


def model_py(cls: str, role: str) -> str:
    """A generated model.py: imports the serving class below (crossformer_deploy imports torch lazily,
    and the serving env has no torch)."""
    return f'''"""Triton Python-backend model: {role}.

Generated by crossformer-triton-repo. The code is crossformer_deploy.engines.triton_repo.{cls}: the stub's
Python (the first python3 on the server's PATH, or EXECUTION_ENV_PATH) needs crossformer-deploy, numpy<2,
onnxruntime and pillow, and no torch (`python -m crossformer_deploy.engines.triton_env` makes such an env).
"""
from crossformer_deploy.engines.triton_repo import {cls} as TritonPythonModel

__all__ = ["TritonPythonModel"]
'''


def install(models: Sequence[ModelDir], out_dir: str, overwrite: bool) -> list[str]:
    """Build every model directory in a staging dir inside ``out_dir`` (same filesystem), then rename each
    into place: a failed copy never leaves a half-written model for Triton to load."""
    os.makedirs(out_dir, exist_ok=True)
    taken = [m.name for m in models if os.path.exists(os.path.join(out_dir, m.name))]
    if taken and not overwrite:
        raise UsageError(f"{os.path.join(out_dir, taken[0])} already exists; pass --overwrite to replace "
                         f"{'it' if len(taken) == 1 else 'them (' + ', '.join(taken) + ')'}")
    staging = tempfile.mkdtemp(prefix=".crossformer-triton-repo-", dir=out_dir)
    written: list[str] = []
    try:
        for m in models:
            _write_model(m, os.path.join(staging, m.name))
        for m in models:
            target = os.path.join(out_dir, m.name)
            if os.path.exists(target):  # move the old one aside into staging (deleted with it)
                os.rename(target, os.path.join(staging, f"{m.name}.replaced"))
            os.rename(os.path.join(staging, m.name), target)
            written += sorted(os.path.join(target, rel) for rel in [*m.texts, *m.copies])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written


def _write_model(m: ModelDir, root: str) -> None:
    for rel, text in m.texts.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        with open(os.path.join(root, rel), "w", encoding="utf-8") as f:
            f.write(text)
    for rel, src in m.copies.items():
        os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
        shutil.copyfile(src, os.path.join(root, rel))


def _tensor_list(kind: str, tensors: Sequence[TensorDecl]) -> str:
    return f"{kind} [\n" + ",\n".join(f"  {t.text()}" for t in tensors) + "\n]"


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _describe(info: ModelInfo) -> str:
    size = "dynamic HxW" if info.dynamic else "{}x{}".format(*info.input_size)
    batch = "dynamic batch" if info.batch is None else f"batch {info.batch}"
    return f"CrossFormer {info.variant} {info.mode}, {info.num_classes} classes, {size}, {batch}, {info.precision}"


def _fixed_batch_note(info: ModelInfo, batching: bool) -> list[str]:
    if batching:
        return []
    return [f"The graph's batch is fixed at {info.batch}: max_batch_size 0 and full shapes; send exactly that batch."]


def _python_env_note(execution_env: str | None) -> list[str]:
    if execution_env:
        return [f"The stub runs in the packed env at EXECUTION_ENV_PATH ({execution_env})."]
    return ["No EXECUTION_ENV_PATH: the stub runs the first python3 on tritonserver's PATH; it needs numpy<2",
            "(numpy 2 gave empty outputs with tritonserver 2.51), onnxruntime, pillow and crossformer-deploy."]


def _env_parameters(execution_env: str | None) -> dict[str, str]:
    return {"EXECUTION_ENV_PATH": execution_env} if execution_env else {}


# ------------------------------------------------------------------------------------------------
# Serving side: runs inside Triton's Python-backend stub (numpy, Pillow, ONNX Runtime; never torch)
# ------------------------------------------------------------------------------------------------

def check_image_shape(shape: Sequence[int], info: ModelInfo) -> None:
    """InputSizeError for a batch the model cannot take. ONNX Runtime does not refuse an H of 225 by
    itself (the dynamic graph pads and answers), so the served model checks what the CLI checks."""
    if len(shape) != 4 or shape[1] != 3:
        raise InputSizeError(f"image must be [batch, 3, height, width], got {list(shape)}")
    h, w = shape[2], shape[3]
    if not info.dynamic and (h, w) != tuple(info.input_size):
        raise InputSizeError(f"this model takes {info.input_size[0]}x{info.input_size[1]} images only, got {h}x{w}")
    if h % info.stride or w % info.stride or h <= 0 or w <= 0:
        raise InputSizeError(f"image height and width must be multiples of {info.stride}, got {h}x{w}")


def decode_image(data: bytes):
    """Encoded bytes -> RGB PIL image via load_image (EXIF orientation, mode conversions); ImageError if
    they do not decode."""
    from ..runtime.preprocess import load_image

    buf = io.BytesIO(data)
    try:
        return load_image(buf)  # Pillow opens file objects as well as paths
    except ImageError as e:
        raise ImageError(str(e).replace(str(buf), f"request image ({len(data)} bytes)")) from None


class _ServedModel:
    """What the three Python models share: parameters from config.pbtxt, one response per request."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # provided by the stub; absent anywhere else

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.setup()

    def setup(self) -> None:
        pass

    def execute(self, requests: list) -> list:
        """Answer each request, or give it an error response: an exception raised out of execute() would
        fail every request of the batch, and a bad image in one request must not cost the others."""
        answers = self.answer(requests)
        return [self._response(a) for a in answers]

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        raise NotImplementedError

    def input(self, request, name: str) -> np.ndarray:
        return self.pb.get_input_tensor_by_name(request, name).as_numpy()

    def _response(self, answer: dict[str, np.ndarray] | Exception):
        if isinstance(answer, Exception):
            msg = str(answer) if isinstance(answer, CrossFormerError) else f"{type(answer).__name__}: {answer}"
            return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(msg))
        return self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(k, v) for k, v in answer.items()])


class RuntimeModel(_ServedModel):
    """The CrossFormer graph (1/model.onnx) on OnnxRuntimeRunner; requests of one size run as one batch."""

    def setup(self) -> None:
        from ..runtime.onnxruntime_runner import OnnxRuntimeRunner

        self.runner = OnnxRuntimeRunner(os.path.join(self.version_dir, "model.onnx")).load()
        self.info = ModelInfo.from_props(self.runner.metadata())

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception | None] = [None] * len(requests)
        by_size: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            try:
                x = self.input(request, "image")
                check_image_shape(x.shape, self.info)
                by_size.setdefault(x.shape[1:], []).append((i, x))
            except Exception as e:  # this request's own fault: answer it with the error
                answers[i] = e
        for items in by_size.values():
            try:
                outs = self.run_batch(np.concatenate([x for _, x in items]))
            except Exception as e:
                for i, _ in items:
                    answers[i] = e
                continue
            start = 0
            for i, x in items:
                answers[i] = {k: v[start:start + len(x)] for k, v in outs.items()}
                start += len(x)
        return answers  # type: ignore[return-value]

    def run_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch; a fixed-batch graph runs it in chunks of its batch, the last one padded."""
        from ..runtime.classify import fill_batch

        step = self.info.batch
        if step is None:
            return self.runner.run({"image": x})
        parts = [self.runner.run({"image": fill_batch(x[s:s + step], step)}) for s in range(0, len(x), step)]
        return {k: np.concatenate([p[k] for p in parts])[: len(x)] for k in parts[0]}


class PreprocessModel(_ServedModel):
    """Encoded image bytes [batch, 1] -> ``image`` [batch, 3, H, W] with crossformer_deploy's preprocess."""

    def setup(self) -> None:
        p = self.params
        self.size = (int(p["height"]), int(p["width"]))
        self.crop_ratio = float(p["crop_ratio"])
        self.mean, self.std = json.loads(p["mean"]), json.loads(p["std"])

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                images = [self.preprocess(b) for b in self.input(request, "image_bytes").reshape(-1)]
                answers.append({"image": np.stack(images)})
            except Exception as e:
                answers.append(e)
        return answers

    def preprocess(self, data: bytes) -> np.ndarray:
        from ..runtime.preprocess import preprocess

        return preprocess(decode_image(bytes(data)), self.size, self.crop_ratio, self.mean, self.std)


class PostprocessModel(_ServedModel):
    """``logits`` -> top-k: labels (JSON per image, crossformer-infer's format), probabilities, class ids."""

    def setup(self) -> None:
        from ..runtime.labels import class_names

        self.k = int(self.params["topk"])
        self.names = class_names(int(self.params["num_classes"]))

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                answers.append(self.top_k(self.input(request, "logits")))
            except Exception as e:
                answers.append(e)
        return answers

    def top_k(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        from ..runtime.classify import Prediction, top_k

        rows = top_k(logits, self.k, self.names)
        labels = [json.dumps(Prediction("", row).to_json()["topk"]).encode() for row in rows]
        return {"labels": np.array(labels, dtype=object).reshape(-1, 1),
                "probabilities": np.array([[p for _, _, p in row] for row in rows], np.float32),
                "class_ids": np.array([[c for c, _, _ in row] for row in rows], np.int64)}
