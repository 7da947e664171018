"""Cross-scale embedding layers (CEL): several kernel sizes, one stride, concatenated channels."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.model.grouping import Size
from crossformer_deploy.model.tracing import spatial_size


def _split_channels(total: int, n: int) -> list[int]:
    """Large kernels get fewer channels: total/2, total/4, ..., the last two equal (the authors' rule)."""
    return [total // 2 ** (i + 1) if i < n - 1 else total // 2**i for i in range(n)]


def _convs(in_chans: int, out_dim: int, kernel_sizes: tuple[int, ...], stride: int) -> nn.ModuleList:
    # padding (k - stride) / 2 keeps every branch at exactly H / stride for H a multiple of stride
    return nn.ModuleList(
        nn.Conv2d(in_chans, c, kernel_size=k, stride=stride, padding=(k - stride) // 2)
        for k, c in zip(kernel_sizes, _split_channels(out_dim, len(kernel_sizes)))
    )


def _conv_cat(convs: nn.ModuleList, x: Tensor) -> tuple[Tensor, Size, Size]:
    """NCHW -> (tokens [B, H/s * W/s, C], H/s, W/s)."""
    y = torch.cat([conv(x) for conv in convs], dim=1)
    h, w = spatial_size(y)
    return y.flatten(2).transpose(1, 2), h, w


def to_map(x: Tensor, H: Size, W: Size) -> Tensor:
    """Tokens [B, H * W, C] -> NCHW map [B, C, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], -1, H, W)


class PatchEmbed(nn.Module):
    """First CEL, stride 4: image [B, 3, H, W] -> (LayerNorm(concat of convs) [B, H/4 * W/4, C], H/4, W/4)."""

    def __init__(self, in_chans: int, embed_dim: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        self.projs = _convs(in_chans, embed_dim, kernel_sizes, stride=4)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Size, Size]:
        x, h, w = _conv_cat(self.projs, x)
        return self.norm(x), h, w


class PatchMerging(nn.Module):
    """Later CELs, stride 2: tokens [B, H * W, C] -> (concat of convs of LayerNorm(x) [B, H/2 * W/2, 2C], H/2, W/2)."""

    def __init__(self, dim: int, kernel_sizes: tuple[int, ...]):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reductions = _convs(dim, 2 * dim, kernel_sizes, stride=2)

    def forward(self, x: Tensor, H: Size, W: Size) -> tuple[Tensor, Size, Size]:
        return _conv_cat(self.reductions, to_map(self.norm(x), H, W))
