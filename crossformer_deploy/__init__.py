"""crossformer-deploy: CrossFormer from PyTorch to ONNX Runtime, TensorRT and Triton."""
__version__ = "0.2.0"

__all__ = ["CrossFormer", "CrossFormerConfig", "__version__", "create_model"]


def __getattr__(name: str):
    # Lazy: the runtime (ONNX Runtime, OpenVINO, Triton's Python backend) must import without torch.
    if name in ("CrossFormer", "CrossFormerConfig", "create_model"):
        from crossformer_deploy import model

        return getattr(model, name)
    raise AttributeError(f"module 'crossformer_deploy' has no attribute {name!r}")
