"""Triton Inference Server model repositories for an exported CrossFormer (.onnx, or a TensorRT .plan).

Every model is a directory ``<name>/config.pbtxt`` + ``<name>/1/<model file>``:

- ``onnx``: ``platform: "onnxruntime_onnx"``, ``1/model.onnx`` (Triton's ONNX Runtime backend);
- ``plan``: ``platform: "tensorrt_plan"``, ``1/model.plan`` (+ its sidecar), with the plugin note;
- ``python``: ``backend: "python"``, ``1/model.py`` running our OnnxRuntimeRunner over ``1/model.onnx``
  (``serving.RuntimeModel``; the variant served in the tests: the tritonserver in nvidia-pytriton has only the
  Python backend);
- a segmenter on ``python``: ``serving.SegmentModel``, encoded image bytes in, ``class_map`` out (its own
  preprocessing; one image a request);
- a detector on ``onnx``: the graph as it is (``image`` + ``image_size`` in, ``dets`` / ``labels`` (/ ``masks``)
  out, batching requests of one input size); on ``python``: ``serving.DetectModel``, encoded image bytes in, the
  image's detections out (mmdet's test pipeline, masks pasted; one image a request);
- ``with_preprocess``: also ``<name>_preprocess`` (encoded image bytes -> ``image``, our preprocessing),
  ``<name>_postprocess`` (``logits`` -> top-k labels as JSON, probabilities, class ids) and
  ``<name>_ensemble`` wiring bytes -> labels through the three.

A repository is built in a staging folder and renamed into place, so Triton never sees half a model.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from crossformer_deploy.base.errors import ModelFileError, UsageError
from crossformer_deploy.base.model_file import ENGINE_EXTS, is_engine
from crossformer_deploy.base.model_info import DETECTOR, SEGMENTER, ModelInfo
from crossformer_deploy.engines.open_model import read_model_info
from crossformer_deploy.engines.tensorrt.sidecar import read_sidecar, sidecar_path
from crossformer_deploy.engines.triton.config import (
    TensorDecl,
    ensemble_config,
    model_config,
    onnx_io,
    plan_io,
    plugin_note,
)

KINDS = ("auto", "onnx", "plan", "python")
DEFAULT_TOPK = 5
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass
@dataclass
class ModelDir:
    """What one model directory will hold: generated texts and files copied from elsewhere."""

    name: str
    max_batch: int  # as written in its config.pbtxt (0: no batching)
    image_type: str  # the data type of its first input
    texts: dict[str, str] = field(default_factory=dict)  # relative path -> content
    copies: dict[str, str] = field(default_factory=dict)  # relative path -> source file



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
    if with_preprocess and not (info.mode in (SEGMENTER, DETECTOR) and kind == "python"):  # takes images already
        models = pipeline_models(models[0], info, instances, topk, execution_env)
    return install(models, os.fspath(out_dir), overwrite)


def resolve_kind(model_path: str, kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"unknown repository kind {kind!r}; choose {', '.join(KINDS)}")
    engine = is_engine(model_path)
    if not engine and not model_path.endswith(".onnx"):
        raise ModelFileError(f"{model_path}: expected an .onnx model or a TensorRT engine ({', '.join(ENGINE_EXTS)})")
    if kind == "auto":
        return "plan" if engine else "onnx"
    if engine and kind != "plan":
        raise UsageError(f"{model_path} is a TensorRT engine: only the tensorrt backend serves it "
                         f"(the onnxruntime and python backends need the .onnx it was built from)")
    if not engine and kind == "plan":
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
    if info.mode == SEGMENTER and kind == "plan":
        # plan_io knows one input (image); a segmenter also takes output_size
        raise UsageError("a segmenter is served through --backend onnxruntime (image and output_size in, class_map "
                         "out) or --backend python (encoded image in, class_map out); --backend tensorrt is not "
                         "built for it yet")
    if info.mode == SEGMENTER and kind == "python":
        return _segment_model(model_path, name, info, instances, execution_env)
    if info.mode == DETECTOR and kind == "plan":
        raise UsageError("a detector is served through --backend onnxruntime (image and image_size in, dets and "
                         "labels out) or --backend python (encoded image in, detections out); --backend tensorrt "
                         "is not built for it yet")
    if info.mode == DETECTOR and kind == "python":
        return _detect_model(model_path, name, info, instances, execution_env)
    if kind == "plan":
        return _plan_model(model_path, name, info, max_batch, instances)
    io_ = onnx_io(model_path)
    source = f"from {os.path.basename(model_path)} ({_describe(info)})"
    if kind == "onnx":
        batch = max_batch if io_.dynamic_batch else 0
        notes = (_segmenter_note() if info.mode == SEGMENTER else
                 [*_detector_note(io_), *_fixed_batch_note(info, io_.dynamic_batch)] if info.mode == DETECTOR else
                 _fixed_batch_note(info, io_.dynamic_batch))
        comment = [f"ONNX Runtime backend, {source}.", *notes]
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


def _segment_model(model_path: str, name: str, info: ModelInfo, instances: int,
                   execution_env: str | None) -> ModelDir:
    """A segmenter on the Python backend: encoded image bytes in, class map out (serving.SegmentModel)."""
    comment = [f"Python backend: encoded image bytes -> AlignResize, mean/std -> 1/model.onnx ({_describe(info)}) "
               "on", "crossformer_deploy's OnnxRuntimeRunner -> class_map [H0, W0] (int64 class ids at the image's "
               "own size).", "One image per request (each has its own input size): max_batch_size 0.",
               *_python_env_note(execution_env)]
    config = model_config(name, 'backend: "python"', 0, (TensorDecl("image_bytes", "TYPE_STRING", (1,)),),
                          (TensorDecl("class_map", "TYPE_INT64", (-1, -1)),), "KIND_CPU", instances, comment,
                          _env_parameters(execution_env))
    texts = {"config.pbtxt": config, "1/model.py": model_py("SegmentModel", "a segmenter, image in, class map out")}
    return ModelDir(name, 0, "TYPE_STRING", texts, {"1/model.onnx": model_path})


def _detect_model(model_path: str, name: str, info: ModelInfo, instances: int,
                  execution_env: str | None) -> ModelDir:
    """A detector on the Python backend: encoded image bytes in, its detections out (serving.DetectModel)."""
    masks = any(t.name == "masks" for t in onnx_io(model_path).outputs)
    outputs = (TensorDecl("dets", "TYPE_FP32", (-1, 5)), TensorDecl("labels", "TYPE_INT64", (-1,)),
               TensorDecl("names", "TYPE_STRING", (-1,)),
               *((TensorDecl("masks", "TYPE_UINT8", (-1, -1, -1)),) if masks else ()))
    comment = [f"Python backend: encoded image bytes -> mmdet's test pipeline (keep-ratio resize to "
               f"{info.scale[0]}x{info.scale[1]}, mean/std, pad to 32) -> 1/model.onnx ({_describe(info)}) on",
               "crossformer_deploy's OnnxRuntimeRunner -> the image's detections, by descending score: dets [N, 5] "
               "(x1, y1, x2, y2, score", "in the image's pixels), labels [N] (class ids), names [N]"
               + (", masks [N, H0, W0] (0/1, pasted at the image's size)." if masks else "."),
               "Every detection the graph keeps (score > 0.05). One image per request: max_batch_size 0.",
               *_python_env_note(execution_env)]
    config = model_config(name, 'backend: "python"', 0, (TensorDecl("image_bytes", "TYPE_STRING", (1,)),), outputs,
                          "KIND_CPU", instances, comment, _env_parameters(execution_env))
    texts = {"config.pbtxt": config, "1/model.py": model_py("DetectModel", "a detector, image in, detections out")}
    return ModelDir(name, 0, "TYPE_STRING", texts, {"1/model.onnx": model_path})


def _plan_model(model_path: str, name: str, info: ModelInfo, max_batch: int, instances: int) -> ModelDir:
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
        what = ("a segmenter: --backend python serves it image in, class map out, no --with-preprocess needed"
                if info.mode == SEGMENTER else
                "a detector: --backend python serves it image in, detections out, no --with-preprocess needed"
                if info.mode == DETECTOR else "a backbone: feature maps, no labels")
        raise UsageError(f"--with-preprocess needs a classifier (this model is {what})")
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



def model_py(cls: str, role: str) -> str:
    """A generated model.py: imports the serving class below (crossformer_deploy imports torch lazily,
    and the serving env has no torch)."""
    return f'''"""Triton Python-backend model: {role}.

Generated by crossformer-triton-repo. The code is crossformer_deploy.engines.triton.serving.{cls}: the stub's
Python (the first python3 on the server's PATH, or EXECUTION_ENV_PATH) needs crossformer-deploy, numpy<2,
onnxruntime and pillow, and no torch (`python -m crossformer_deploy.engines.triton.env` makes such an env).
"""
from crossformer_deploy.engines.triton.serving import {cls} as TritonPythonModel

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



def _describe(info: ModelInfo) -> str:
    size = "dynamic HxW" if info.dynamic else "{}x{}".format(*info.input_size)
    batch = "dynamic batch" if info.batch is None else f"batch {info.batch}"
    return f"CrossFormer {info.variant} {info.mode}, {info.num_classes} classes, {size}, {batch}, {info.precision}"


def _fixed_batch_note(info: ModelInfo, batching: bool) -> list[str]:
    if batching:
        return []
    return [f"The graph's batch is fixed at {info.batch}: max_batch_size 0 and full shapes; send exactly that batch."]


def _segmenter_note() -> list[str]:
    return ["A segmenter: inputs image [B, 3, H, W] (AlignResized, base/seg_preprocess.py) and output_size [2] (the",
            "original H0, W0, shared by the batch, so no batch dim): max_batch_size 0 and full shapes; one request",
            "per original size. Output class_map [B, H0, W0] (int64 class ids)."]


def _detector_note(io_) -> list[str]:
    outs = ", ".join(f"{t.name} {list(t.dims)}" for t in io_.outputs)
    return ["A detector: inputs image [B, 3, H, W] (resized keeping the ratio, normalised, zero-padded to multiples of",
            "32: base/det_preprocess.py) and image_size [B, 4] int64 (per image: resized h, w, original h, w);",
            f"outputs {outs}: boxes and scores in original-image pixels, unused rows 0 (labels -1).",
            "Triton batches requests of one input size."]


def _python_env_note(execution_env: str | None) -> list[str]:
    if execution_env:
        return [f"The stub runs in the packed env at EXECUTION_ENV_PATH ({execution_env})."]
    return ["No EXECUTION_ENV_PATH: the stub runs the first python3 on tritonserver's PATH; it needs numpy<2",
            "(numpy 2 gave empty outputs with tritonserver 2.51), onnxruntime, pillow and crossformer-deploy."]


def _env_parameters(execution_env: str | None) -> dict[str, str]:
    return {"EXECUTION_ENV_PATH": execution_env} if execution_env else {}

