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

# OpenVINO compiles a dynamic graph once per input shape, keeping this many (OpenVINORunner's per_shape). Measured
# (benchmarks/ov_shape_memory_zen4.json): each kept shape holds its own static memory plan (1-1.5 GB for a
# detector at 800x1216 or a segmenter at 512x704), while a dynamic compile's memory grows with the largest input
# it saw and is not given back (6.0 GB for Mask R-CNN-S at 800x1216, 11.5 GB once it ran a batch of 2). Two cover
# a collection's landscape and portrait photos (the resize keeps the aspect ratio) at 4.1 GB for Mask R-CNN-S,
# and every run is 1-14 % faster than the dynamic compile's.
OPENVINO_SHAPES_KEPT = 2


def open_runner(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                openvino_shapes: int = OPENVINO_SHAPES_KEPT) -> Runner:
    """ONNX files run on ONNX Runtime (or OpenVINO with provider="openvino", a dynamic graph compiled per input
    shape with ``openvino_shapes`` kept; 0: one dynamic compile); engines on TensorRT."""
    path = os.fspath(path)
    if is_engine(path):
        return TensorRTRunner(path)
    if provider == "openvino":
        return OpenVINORunner(path, threads=threads, per_shape=openvino_shapes)
    return OnnxRuntimeRunner(path, provider=provider, threads=threads)


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """The ModelInfo an exported file carries (ONNX metadata_props, or an engine's sidecar)."""
    path = os.fspath(path)
    if is_engine(path):
        return read_sidecar(path).info
    return load_exported_onnx(path)[1]
