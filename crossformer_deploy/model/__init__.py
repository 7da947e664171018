"""The CrossFormer model in PyTorch: model -> export -> passes -> precision -> engines -> runtime."""
from crossformer_deploy.model.config import TINY, TINY_PP, VARIANTS, CrossFormerConfig, get_config
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.factory import create_model

__all__ = ["TINY", "TINY_PP", "VARIANTS", "CrossFormer", "CrossFormerConfig", "create_model",
           "get_config"]
