"""Model files: which runtime a file is for (by its extension), and whether it is there at all.
(What an exported ONNX file says about itself is read by ``export.onnx_export.load_exported_onnx``.)"""
from __future__ import annotations

import os

from crossformer_deploy.base.errors import ModelFileError

ENGINE_EXTS = (".plan", ".engine", ".trt")  # TensorRT engines; everything else is ONNX (or OpenVINO IR)


def is_engine(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(ENGINE_EXTS)


def check_model_file(path: str | os.PathLike) -> str:
    """``path`` as a string if it is a non-empty file; ModelFileError otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"model file not found: {path}")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"model file is empty: {path}")
    return path
