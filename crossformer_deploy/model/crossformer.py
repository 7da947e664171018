"""CrossFormer (Wang et al., ICLR 2022) and CrossFormer++ (TPAMI 2023): classifier and
detection/segmentation backbone.

Maps flow channels-last, [B, H, W, C], from the embedding to the head. Nothing in ``forward``
changes module state, so one instance serves every input size.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from crossformer_deploy.base.errors import InputSizeError
from crossformer_deploy.base.sizes import check_size
from crossformer_deploy.model.attention import Attention
from crossformer_deploy.model.config import CrossFormerConfig, Family
from crossformer_deploy.model.embedding import PatchEmbed, PatchMerging
from crossformer_deploy.model.grouping import Size, group_layout


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CrossFormerBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x)); SDA (``lda=False``) or LDA grouping of either
    ``family``, and with ``acl`` CrossFormer++'s amplitude cooling layer at the end."""

    def __init__(self, dim: int, num_heads: int, group_size: int, interval: int, lda: bool,
                 mlp_ratio: float, family: Family = Family.CROSSFORMER, acl: bool = False):
        super().__init__()
        self.group_size, self.interval, self.lda, self.family = group_size, interval, lda, family
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.acl = acl
        if acl:
            self.ex_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.ex_ln = nn.LayerNorm(dim)

    def forward(self, x: Tensor, H: Size, W: Size) -> Tensor:
        lay = group_layout(H, W, self.group_size, self.interval, self.lda, self.family)
        x = x + self.attn(self.norm1(x), lay)
        x = x + self.mlp(self.norm2(x))
        if self.acl:  # amplitude cooling: LN(depthwise 3x3 conv(x)), zero padding, no residual
            x = self.ex_ln(self.ex_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
        return x


class Stage(nn.Module):
    """Blocks alternating SDA (even index) and LDA (odd), then the optional stride-2 merge."""

    def __init__(self, cfg: CrossFormerConfig, i: int):
        super().__init__()
        dim = cfg.stage_dim(i)
        self.blocks = nn.ModuleList(
            CrossFormerBlock(dim, cfg.num_heads[i], cfg.group_sizes[i], cfg.intervals[i], lda=j % 2 == 1,
                             mlp_ratio=cfg.mlp_ratios[i], family=cfg.family, acl=cfg.has_acl(i, j))
            for j in range(cfg.depths[i])
        )
        last = i == cfg.num_stages - 1
        self.downsample = None if last else PatchMerging(dim, cfg.merge_sizes[i])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """[B, H, W, C] -> (stage output [B, H, W, C], merged [B, H/2, W/2, 2C] or the same)."""
        H, W = _hw(x)
        for blk in self.blocks:
            x = blk(x, H, W)
        return x, (x if self.downsample is None else self.downsample(x))


_TRACE_SIZES = contextvars.ContextVar("crossformer_trace_sizes", default=True)


@contextlib.contextmanager
def fixed_size_tracing() -> Iterator[None]:
    """While tracing, take map sizes as constants (a fixed-size export) instead of graph values."""
    token = _TRACE_SIZES.set(False)
    try:
        yield
    finally:
        _TRACE_SIZES.reset(token)


def _hw(x: Tensor) -> tuple[Size, Size]:
    """Map size of a channels-last tensor: 0-d tensors while the ONNX exporter traces a dynamic graph,
    so every size computed from it stays a graph op instead of a constant baked for one input."""
    if torch.jit.is_tracing() and _TRACE_SIZES.get():
        shape = torch._shape_as_tensor(x)
        return shape[1], shape[2]
    return int(x.shape[1]), int(x.shape[2])


class CrossFormer(nn.Module):
    """CrossFormer or CrossFormer++ (``cfg.family``).

    ``mode="classifier"``: image [B, 3, H, W] -> logits [B, num_classes] (final LN, mean pool, Linear).
    ``mode="backbone"``: image -> the four stage outputs as NCHW maps (no final norm), strides 4..32.
    """

    def __init__(self, cfg: CrossFormerConfig, mode: str = "classifier", num_classes: int = 1000):
        super().__init__()
        if mode not in ("classifier", "backbone"):
            raise ValueError(f"mode must be 'classifier' or 'backbone', not {mode!r}")
        self.cfg, self.mode, self.num_classes = cfg, mode, num_classes
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch_sizes)
        self.layers = nn.ModuleList(Stage(cfg, i) for i in range(cfg.num_stages))
        if mode == "classifier":
            self.norm = nn.LayerNorm(cfg.num_features)
            self.head = nn.Linear(cfg.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, ...]:
        if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
            if x.dim() != 4 or x.shape[1] != self.cfg.in_chans:
                raise InputSizeError(f"expected an image batch [B, {self.cfg.in_chans}, H, W], got {list(x.shape)}")
            check_size(x.shape[2], x.shape[3], self.cfg.stride)
        x = self.patch_embed(x)
        feats = []
        for layer in self.layers:
            feat, x = layer(x)
            feats.append(feat)
        if self.mode == "backbone":
            return tuple(f.permute(0, 3, 1, 2) for f in feats)
        x = self.norm(x).flatten(1, 2).mean(dim=1)
        return self.head(x)
