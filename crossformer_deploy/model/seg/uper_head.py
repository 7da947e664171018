"""UPerNet's decode head (Xiao et al., 2018; mmseg ``UPerHead``) with mmseg's state-dict keys."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossformer_deploy.model.seg.adaptive_pool import AdaptiveAvgPool
from crossformer_deploy.model.seg.conv_module import ConvModule
from crossformer_deploy.model.seg.resize import resize_like


class PPM(nn.ModuleList):
    """Pyramid pooling: per scale s, [B, C, h, w] -> pool to s x s -> 1x1 ConvModule -> bilinear back to h x w.

    Keys ``{i}.1.conv``, ``{i}.1.bn`` (index 0 is the parameter-free pool), as mmseg's ``psp_modules``.
    """

    def __init__(self, pool_scales: Sequence[int], in_channels: int, channels: int):
        super().__init__(nn.Sequential(AdaptiveAvgPool(s), ConvModule(in_channels, channels, 1)) for s in pool_scales)

    def forward(self, x: Tensor) -> list[Tensor]:
        return [resize_like(branch(x), x) for branch in self]


class UPerHead(nn.Module):
    """Backbone maps [B, C_i, H/s_i, W/s_i] -> logits [B, num_classes, H/4, W/4].

    PPM on the last map, concatenated with it -> ``bottleneck`` (3x3): the top lateral. ``lateral_convs``
    (1x1) on the others; top-down, each lateral += the coarser one resized to its size (bilinear);
    ``fpn_convs`` (3x3) on all but the top; every level resized to the finest, concatenated ->
    ``fpn_bottleneck`` (3x3) -> ``conv_seg`` (1x1 with bias). Every ConvModule has BN and ReLU; dropout
    (identity at inference) is left out.
    """

    def __init__(self, in_channels: Sequence[int], channels: int, pool_scales: Sequence[int], num_classes: int):
        super().__init__()
        *low, top = in_channels
        self.psp_modules = PPM(pool_scales, top, channels)
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in low)
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3) for _ in low)
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        top = feats[-1]
        laterals = [conv(x) for conv, x in zip(self.lateral_convs, feats)]
        laterals.append(self.bottleneck(torch.cat([top, *self.psp_modules(top)], dim=1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize_like(laterals[i], laterals[i - 1])
        outs = [conv(x) for conv, x in zip(self.fpn_convs, laterals)] + [laterals[-1]]
        outs = [outs[0]] + [resize_like(x, outs[0]) for x in outs[1:]]
        return self.conv_seg(self.fpn_bottleneck(torch.cat(outs, dim=1)))
