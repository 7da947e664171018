"""The machine side of an engine: which TensorRT builds and loads it, and which GPU it is for.

TensorRT's Python API does not report the GPU, so it is asked of whichever of PyTorch (CUDA build),
cuda-python or PyCUDA is installed.
"""
from __future__ import annotations

from dataclasses import dataclass

from crossformer_deploy.base.errors import UsageError

NO_TENSORRT = "TensorRT is not installed: pip install tensorrt (needs an NVIDIA GPU)"


@dataclass(frozen=True)
class DeviceIdentity:
    """The machine side of an identity: the TensorRT that builds/loads, and the GPU it targets."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "9.0"

    def describe(self) -> str:
        return f"TensorRT {self.tensorrt_version} on {self.gpu_name} (compute capability {self.compute_capability})"



def tensorrt_version() -> str:
    """The installed TensorRT's version; UsageError when it cannot be imported."""
    try:
        import tensorrt as trt
    except Exception:  # ImportError, or the PyPI download stub failing inside its own import
        raise UsageError(NO_TENSORRT) from None
    return str(trt.__version__)


def current_device_identity(device: int = 0) -> DeviceIdentity:
    """This machine's TensorRT version and GPU ``device`` (name, compute capability).

    UsageError when TensorRT is missing or no CUDA GPU is visible. The GPU is queried through whichever
    of PyTorch (CUDA build), cuda-python or PyCUDA is present: TensorRT's Python API does not report it.
    """
    version = tensorrt_version()
    gpu = _gpu_properties(device)
    if gpu is None:
        raise UsageError("no CUDA GPU is visible (checked with PyTorch, cuda-python and PyCUDA): TensorRT engines "
                         "are built and run on an NVIDIA GPU")
    return DeviceIdentity(version, gpu[0], gpu[1])


def _gpu_properties(device: int) -> tuple[str, str] | None:
    for query in (_gpu_torch, _gpu_cuda_python, _gpu_pycuda):
        try:
            found = query(device)
        except Exception:  # a missing or broken optional package: try the next one
            found = None
        if found:
            return found
    return None


# Each probe imports its package when asked: whichever of them is installed answers.
def _gpu_torch(device: int) -> tuple[str, str] | None:
    import torch

    if not torch.cuda.is_available() or device >= torch.cuda.device_count():
        return None
    major, minor = torch.cuda.get_device_capability(device)
    return torch.cuda.get_device_name(device), f"{major}.{minor}"


def _gpu_cuda_python(device: int) -> tuple[str, str] | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6 layout
    err, props = cudart.cudaGetDeviceProperties(device)
    if int(err) != 0:
        return None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.rstrip("\x00"), f"{props.major}.{props.minor}"


def _gpu_pycuda(device: int) -> tuple[str, str] | None:
    import pycuda.driver as drv

    drv.init()
    d = drv.Device(device)
    major, minor = d.compute_capability()
    return d.name(), f"{major}.{minor}"
