"""Grouped multi-head self-attention (the LSDA core) and the attention module around it."""
from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from crossformer_deploy.model.grouping import (
    MASK_FILL,
    GroupLayout,
    group,
    group_by_reshape,
    group_index,
    has_padding,
    is_static,
    ungroup,
    ungroup_by_reshape,
    ungroup_index,
)
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
    index, valid, inverse, offsets = layout_indices(lay, qkv.device)
    if is_static(lay):  # a fixed-size layout regroups by reshapes, a traced one by index gathers
        g = group_by_reshape(qkv, lay)
        out = attend(g.reshape(-1, g.shape[2], C3), table, valid, offsets, num_heads, scale, mask_fill,
                     pads=has_padding(lay))
        return ungroup_by_reshape(out.reshape(B, g.shape[1], g.shape[2], -1), lay)
    g = group(qkv, index)
    out = attend(g.reshape(-1, g.shape[2], C3), table, valid, offsets, num_heads, scale, mask_fill)
    return ungroup(out.reshape(B, g.shape[1], g.shape[2], -1), inverse)


def attend(qkv: Tensor, table: Tensor, valid: Tensor, offsets: Tensor, num_heads: int, scale: float,
           mask_fill: float = MASK_FILL, pads: bool = True) -> Tensor:
    """Attention of grouped tokens: qkv [B * nG, N, 3C] -> [B * nG, N, C]; ``pads``: some keys are padding
    (``valid`` [nG, N] False) and are masked. Written out rather than F.scaled_dot_product_attention, on rank-4
    [B * nG, heads, N, hd] tensors with a [1, heads, N, N] bias: the pattern runtimes fuse (OpenVINO's
    attention subgraph), as in the authors' graph."""
    BG, N, C3 = qkv.shape
    C = C3 // 3
    g = qkv.reshape(BG, N, 3, num_heads, C // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = g[0], g[1], g[2]
    attn = (q * scale) @ k.transpose(-2, -1) + gather_bias(table, offsets).unsqueeze(0).to(q.dtype)
    if pads:
        nG = valid.shape[0]
        key_mask = torch.where(valid, 0.0, mask_fill).to(attn.dtype)  # [nG, N]
        attn = (attn.reshape(-1, nG, num_heads, N, N) + key_mask[:, None, None, :]).reshape(BG, num_heads, N, N)
    return (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(BG, N, C)


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
        """Tokens [B, H * W, C] of the layout's map -> the same."""
        table = self.pos.table(lay.gh, lay.gw)
        B, C = x.shape[0], x.shape[-1]
        x = x.reshape(B, lay.H, lay.W, C)  # a view
        # spatial_qkv is an ONNX-export switch (the TorchScript exporter); torch.compile cannot read a ContextVar
        # and would break its graph at every block, so a compiled model never asks
        if is_static(lay) and (torch.compiler.is_compiling() or not _SPATIAL_QKV.get()):
            # tokens grouped first (Linear layers commute with grouping): the reshapes then move C channels
            # instead of the 3C of qkv, as in the authors' model
            _, valid, _, offsets = layout_indices(lay, x.device)
            g = group_by_reshape(x, lay)  # [B, nG, N, C]
            nG, N = g.shape[1], g.shape[2]
            out = attend(self.qkv(g.reshape(-1, N, C)), table, valid, offsets, self.num_heads, self.scale,
                         pads=has_padding(lay))  # on [B * nG, N, C]: rank 3, so runtimes fuse each bias
            return ungroup_by_reshape(self.proj(out).reshape(B, nG, N, C), lay).reshape(B, -1, C)
        # the qkv projection of the map: what the fused GroupedAttention op reads
        return self.proj(grouped_attention(self.qkv(x), table, lay, self.num_heads, self.scale)).reshape(B, -1, C)


_SPATIAL_QKV = contextvars.ContextVar("crossformer_spatial_qkv", default=False)


@contextlib.contextmanager
def spatial_qkv() -> Iterator[None]:
    """Keep the qkv projection on the map, and grouping inside the attention, also for a fixed-size layout: the
    form the fused ``GroupedAttention`` op replaces (``--target tensorrt``)."""
    token = _SPATIAL_QKV.set(True)
    try:
        yield
    finally:
        _SPATIAL_QKV.reset(token)
