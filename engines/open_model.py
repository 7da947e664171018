"""Open any deployable model file: an ONNX file on ONNX Runtime (or OpenVINO), a TensorRT engine on TensorRT, and
what the file says about itself. It picks between the runtimes and the engines, so it sits above both."""
from __future__ import annotations

import os

from crossformer_deploy.base.model_file import is_engine
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner
from crossformer_deploy.engines.tensorrt.sidecar import read_sidecar
from crossformer_deploy.export.onnx_export import load_exported_onnx
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from crossformer_deploy.runtime.openvino_runner import OpenVINORunner
from crossformer_deploy.runtime.runner import Runner


def open_runner(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None) -> Runner:
    """ONNX files run on ONNX Runtime (or OpenVINO with provider="openvino"); engines on TensorRT."""
    path = os.fspath(path)
    if is_engine(path):
        return TensorRTRunner(path)
    if provider == "openvino":
        return OpenVINORunner(path, threads=threads)
    return OnnxRuntimeRunner(path, provider=provider, threads=threads)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The ModelInfo an exported file carries (ONNX metadata_props, or an engine's sidecar)."""
    path = os.fspath(path)
    if is_engine(path):
        return read_sidecar(path).info
    return load_exported_onnx(path)[1]
