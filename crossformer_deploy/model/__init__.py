"""The CrossFormer model in PyTorch: model -> export -> passes -> precision -> engines -> runtime."""
from .config import TINY, VARIANTS, CrossFormerConfig, get_config
from .crossformer import CrossFormer, check_input_size
from .factory import create_model

__all__ = ["TINY", "VARIANTS", "CrossFormer", "CrossFormerConfig", "check_input_size", "create_model",
           "get_config"]
