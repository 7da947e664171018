"""CrossFormer (Wang et al., ICLR 2022) and CrossFormer++ (TPAMI 2023): classifier and
detection/segmentation backbone.

Maps flow as tokens, [B, H * W, C] with their H and W beside them, from the embedding to the head: a rank-3
residual stream needs no layout changes in a runtime (OpenVINO runs a LayerNorm of it as one MVN and reorders
rank-4 maps to blocked layouts around every Add). Nothing in ``forward`` changes module state, so one instance
serves every input size.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.base.errors import InputSizeError
from crossformer_deploy.base.sizes import check_size
from crossformer_deploy.model.attention import Attention
from crossformer_deploy.model.config import CrossFormerConfig, Family
from crossformer_deploy.model.embedding import PatchEmbed, PatchMerging, to_map
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
        """Tokens [B, H * W, C] of an H x W map -> the same."""
        lay = group_layout(H, W, self.group_size, self.interval, self.lda, self.family)
        x = x + self.attn(self.norm1(x), lay)
        x = x + self.mlp(self.norm2(x))
        if self.acl:  # amplitude cooling: LN(depthwise 3x3 conv(x)), zero padding, no residual
            x = self.ex_ln(self.ex_conv(to_map(x, H, W)).flatten(2).transpose(1, 2))
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

    def forward(self, x: Tensor, H: Size, W: Size) -> tuple[Tensor, tuple[Tensor, Size, Size]]:
        """Tokens [B, H * W, C] -> (stage output, the same; (merged [B, H/2 * W/2, 2C], H/2, W/2), or the stage
        output again after the last stage)."""
        for blk in self.blocks:
            x = blk(x, H, W)
        return x, ((x, H, W) if self.downsample is None else self.downsample(x, H, W))


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
        x, h, w = self.patch_embed(x)
        feats = []
        for layer in self.layers:
            feat, (x_next, h_next, w_next) = layer(x, h, w)
            if self.mode == "backbone":  # a classifier reads only the last stage's tokens: no maps to build
                feats.append(to_map(feat, h, w))
            x, h, w = x_next, h_next, w_next
        if self.mode == "backbone":
            return tuple(feats)
        return self.head(self.norm(x).mean(dim=1))
