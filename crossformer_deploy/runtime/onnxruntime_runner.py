"""ONNX Runtime backend: CPU by default, CUDA / TensorRT execution providers when installed."""
from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort

from crossformer_deploy.base.errors import ModelFileError, UsageError, first_line
from crossformer_deploy.base.model_file import check_model_file
from crossformer_deploy.runtime.runner import Runner, TensorSpec

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
           "tensor(uint8)": np.uint8}


class OnnxRuntimeRunner(Runner):
    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                 optimization: str = "all"):
        super().__init__()
        self.path = check_model_file(path)
        if provider not in PROVIDERS:
            raise UsageError(f"unknown provider {provider!r}; choose {', '.join(PROVIDERS)}")
        self.provider, self.threads, self.optimization = provider, threads, optimization
        self.session = None

    def _load(self) -> None:
        available = ort.get_available_providers()
        wanted = PROVIDERS[self.provider][0]
        if wanted not in available:
            raise UsageError(f"ONNX Runtime has no {wanted} here (available: {', '.join(available)}); "
                             f"install onnxruntime-gpu for cuda/tensorrt")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        if self.threads:
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(self.path, opts, providers=[p for p in PROVIDERS[self.provider]
                                                                             if p in available])
        except Exception as e:  # ORT raises its own exception types for every kind of bad file
            raise ModelFileError(f"{self.path}: not a loadable ONNX model ({first_line(e, 200)})") from None
        stride = self.session.get_modelmeta().custom_metadata_map.get("stride")
        self.stride = int(stride) if stride and stride.isdigit() else None

    def _specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        def spec(a) -> TensorSpec:
            return TensorSpec(a.name, tuple(d if isinstance(d, int) else (d or None) for d in a.shape),
                              np.dtype(_DTYPES.get(a.type, np.float32)))

        return [spec(a) for a in self.session.get_inputs()], [spec(a) for a in self.session.get_outputs()]

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outs = self.session.run(None, feeds)
        return {s.name: o for s, o in zip(self.outputs, outs)}

    def metadata(self) -> dict[str, str]:
        self.load()
        return dict(self.session.get_modelmeta().custom_metadata_map)
