"""Pick the runner for a model file and read what the model says about itself."""
from __future__ import annotations

import os

from ..errors import ModelFileError, UsageError
from ..export.metadata import ModelInfo
from .runner import Runner

ENGINE_EXTS = (".plan", ".engine", ".trt")


def open_runner(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None) -> Runner:
    """ONNX files run on ONNX Runtime (or OpenVINO with provider="openvino"); engines on TensorRT."""
    path = os.fspath(path)
    if path.endswith(ENGINE_EXTS):
        from .tensorrt_runner import TensorRTRunner

        return TensorRTRunner(path)
    if provider == "openvino":
        from .openvino_runner import OpenVINORunner

        return OpenVINORunner(path, threads=threads)
    from .onnxruntime_runner import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, provider=provider, threads=threads)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The ModelInfo an exported file carries (ONNX metadata_props, or an engine's sidecar)."""
    path = os.fspath(path)
    if path.endswith(ENGINE_EXTS):
        from ..engines.identity import read_sidecar

        return read_sidecar(path).info
    return load_exported_onnx(path)[1]


def load_exported_onnx(path: str, missing: str = "model file", hint: str = "") -> tuple:
    """(ModelProto without external data, ModelInfo) of an ONNX file crossformer-export wrote; one-line
    errors for a missing, truncated or foreign file (``missing`` names the file, ``hint`` ends the last)."""
    import onnx

    if not os.path.isfile(path):
        raise ModelFileError(f"{missing} not found: {path}")
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as e:  # DecodeError and friends: truncated or not ONNX at all
        raise ModelFileError(f"{path}: not an ONNX model, or truncated ({type(e).__name__})") from None
    if not proto.graph.node:
        raise ModelFileError(f"{path}: not an ONNX model, or truncated (no graph)")
    props = {p.key: p.value for p in proto.metadata_props}
    if "variant" not in props:
        raise UsageError(f"{path}: not exported by crossformer-export (no CrossFormer metadata){hint}")
    return proto, ModelInfo.from_props(props)
