"""The CrossFormer model in PyTorch: model -> export -> passes -> precision -> engines -> runtime."""
from .config import TINY, TINY_PP, VARIANTS, CrossFormerConfig, get_config
from .crossformer import CrossFormer, check_input_size
from .factory import create_model

__all__ = ["TINY", "TINY_PP", "VARIANTS", "CrossFormer", "CrossFormerConfig", "check_input_size", "create_model",
           "get_config"]
