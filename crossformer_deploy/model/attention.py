"""Grouped multi-head self-attention (the LSDA core) and the attention module around it."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crossformer_deploy.model.grouping import MASK_FILL, GroupLayout, group, group_index, ungroup, ungroup_index
from crossformer_deploy.model.position_bias import DynamicPosBias, gather_bias, offset_index


def layout_indices(lay: GroupLayout, device=None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(group index, valid, ungroup index, DPB offset index) of a layout. In eager mode they depend on
    the map size only, so they are memoised (a pure function of ints, not module state); traced
    sizes are graph values and always rebuilt."""
    if all(isinstance(v, int) for v in (lay.H, lay.W, lay.gh, lay.gw)):
        return _layout_indices_cached(lay, str(device or "cpu"))
    return _layout_indices(lay, device)


def _layout_indices(lay: GroupLayout, device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    index, valid = group_index(lay, device)
    return index, valid, ungroup_index(lay, device), offset_index(lay, device)


@functools.lru_cache(maxsize=256)
def _layout_indices_cached(lay: GroupLayout, device: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return _layout_indices(lay, torch.device(device))


def grouped_attention(qkv: Tensor, table: Tensor, lay: GroupLayout, num_heads: int, scale: float,
                      mask_fill: float = MASK_FILL) -> Tensor:
    """Attention within groups, straight from the spatial qkv projection.

    qkv [B, H, W, 3C] (channels ordered q | k | v, heads inside each), table [T, heads] for the
    layout's group shape -> [B, H, W, C]. This is the math of the fused
    ``crossformer::GroupedAttention`` op; the projection commutes with padding and grouping because
    padded keys are masked and padded queries are cropped, so padding is never materialised.
    """
    B, C3 = qkv.shape[0], qkv.shape[-1]
    C = C3 // 3
    index, valid, inverse, offsets = layout_indices(lay, qkv.device)
    g = group(qkv, index)  # [B, nG, N, 3C]
    nG, N = g.shape[1], g.shape[2]
    g = g.reshape(B, nG, N, 3, num_heads, C // num_heads).permute(3, 0, 1, 4, 2, 5)
    q, k, v = g[0], g[1], g[2]  # [B, nG, heads, N, hd]
    bias = gather_bias(table, offsets)  # [heads, N, N]
    key_mask = torch.where(valid, 0.0, mask_fill).to(bias.dtype)  # [nG, N]
    bias = bias.unsqueeze(0) + key_mask[:, None, None, :]  # [nG, heads, N, N]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=scale)
    out = out.transpose(2, 3).reshape(B, nG, N, C)
    return ungroup(out, inverse)


class Attention(nn.Module):
    """qkv projection -> grouped attention with DPB -> output projection, on [B, H, W, C] maps."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.pos = DynamicPosBias(dim, num_heads)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, lay: GroupLayout) -> Tensor:
        table = self.pos.table(lay.gh, lay.gw)
        return self.proj(grouped_attention(self.qkv(x), table, lay, self.num_heads, self.scale))
