"""What the TensorRT engine tests share: stand-in GPUs, a model's info, fake engines with real sidecars."""
from __future__ import annotations

import os

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.tensorrt.device import DeviceIdentity
from crossformer_deploy.engines.tensorrt.profiles import Profile
from crossformer_deploy.engines.tensorrt.sidecar import EngineIdentity, write_sidecar

H100 = DeviceIdentity("10.9.0", "NVIDIA H100 80GB HBM3", "9.0")
A100 = DeviceIdentity("10.9.0", "NVIDIA A100-SXM4-80GB", "8.0")
INFO = ModelInfo(variant="tiny", mode="classifier", num_classes=10, weights="test.pth sha256=00")


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or the PyPI download stub failing inside its own import
        return False
    return True


HAS_TRT = _has_tensorrt()


def identity(**kw) -> EngineIdentity:
    base = dict(onnx_sha256="ab" * 32, tensorrt_version=H100.tensorrt_version, gpu_name=H100.gpu_name,
                compute_capability=H100.compute_capability,
                profiles=(Profile((1, 224, 224), (1, 224, 224), (8, 224, 224)),), precision="fp32")
    return EngineIdentity(**{**base, **kw})


def fake_engine(directory, name="model.plan", info=INFO, ident_=None, data=b"not a real TensorRT plan") -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as f:
        f.write(data)
    write_sidecar(path, info, ident_ or identity())
    return path
