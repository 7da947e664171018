"""The fused grouped-attention kernel inside a PyTorch CrossFormer (the ``torch-cuda`` provider).

``fuse_attention(model)`` swaps every block's attention for ``FusedAttention``: the same qkv / proj
weights and position bias, with the grouping, masking, softmax and ungrouping done by one Triton kernel
launch per block (the custom op of ``torch_op``, one node to torch.compile) instead of PyTorch's gathers + SDPA.
The model's own ``Attention`` stays the reference; nothing in the model package imports this file.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.model.attention import Attention
from crossformer_deploy.model.config import Family
from crossformer_deploy.model.crossformer import CrossFormerBlock
from crossformer_deploy.model.grouping import GroupLayout
from crossformer_deploy.plugins.reference import centred_table
from crossformer_deploy.plugins.torch_op import grouped_attention


class FusedAttention(nn.Module):
    """qkv projection -> fused grouped attention (Triton) -> output projection, on [B, H, W, C] maps."""

    def __init__(self, attn: Attention, group_size: int, interval: int, lda: bool,
                 family: Family = Family.CROSSFORMER):
        super().__init__()
        self.family = family
        self.qkv, self.proj, self.pos = attn.qkv, attn.proj, attn.pos
        self.num_heads, self.scale = attn.num_heads, attn.scale
        self.group_size, self.interval, self.mode = group_size, interval, "lda" if lda else "sda"
        self._tables: dict[tuple, Tensor] = {}

    def table(self, gh: int, gw: int) -> Tensor:
        """Centred fp32 DPB table [heads, 2gh-1, 2gw-1] for a gh x gw group.

        A function of the weights and the group shape only: computed once per shape and device (inference
        weights do not change; ``clear_tables`` if they do). The DPB MLP is kept in fp32 whatever the rest of
        the model is: its offsets come in as fp32, and an fp16 bias would cost accuracy for no speed.
        """
        key = (gh, gw, self.qkv.weight.device)
        if key not in self._tables:
            with torch.no_grad():
                self._tables[key] = centred_table(self.pos.float().table(gh, gw), gh, gw)
        return self._tables[key]

    def clear_tables(self) -> None:
        self._tables.clear()

    def forward(self, x: Tensor, lay: GroupLayout) -> Tensor:
        """Tokens [B, H * W, C] -> the same; the kernel reads the qkv projection as the map [B, H, W, 3C]."""
        B, C = x.shape[0], x.shape[-1]
        qkv = self.qkv(x.reshape(B, int(lay.H), int(lay.W), C))
        out = grouped_attention(qkv, self.table(int(lay.gh), int(lay.gw)), self.num_heads, self.mode,
                                self.group_size, self.interval, self.scale, self.family.attr)
        return self.proj(out).reshape(B, -1, C)


def fuse_attention(model: nn.Module) -> nn.Module:
    """Replace, in place, the attention of every CrossFormer block by ``FusedAttention``; returns ``model``."""
    n = 0
    for block in model.modules():
        if isinstance(block, CrossFormerBlock) and isinstance(block.attn, Attention):
            block.attn = FusedAttention(block.attn, block.group_size, block.interval, block.lda, block.family)
            n += 1
    if n == 0:
        raise ValueError("fuse_attention: no CrossFormer block with a plain Attention in this model")
    return model
