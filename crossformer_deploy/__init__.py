"""crossformer-deploy: CrossFormer from PyTorch to ONNX Runtime, TensorRT and Triton."""
__version__ = "0.1.0"

from .model import CrossFormer, CrossFormerConfig, create_model

__all__ = ["CrossFormer", "CrossFormerConfig", "__version__", "create_model"]
