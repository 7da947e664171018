"""Semantic FPN's decode head (Kirillov et al., 2019; mmseg ``FPNHead``) with mmseg's state-dict keys."""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from crossformer_deploy.model.seg.conv_module import ConvModule
from crossformer_deploy.model.seg.resize import Upsample2x, resize_like


class FPNHead(nn.Module):
    """FPN maps [B, C, H/s_i, W/s_i] (strides s_i = 4, 8, 16, 32) -> logits [B, num_classes, H/4, W/4].

    ``scale_heads[i]``: max(1, log2(s_i / s_0)) x (3x3 ConvModule + BN + ReLU, then for i > 0 a bilinear x2),
    so every level reaches stride s_0; they are summed (each resized to level 0's run-time size, a no-op at
    multiples of 32, as mmseg does), then ``conv_seg`` (1x1 with bias). Dropout is the identity at inference
    and has no parameters: left out. Keys: ``scale_heads.{i}.{2k}`` (ConvModules; odd indices are the
    parameter-free upsamplings), ``conv_seg``.
    """

    def __init__(self, in_channels: int, channels: int, feature_strides: Sequence[int], num_classes: int):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for stride in feature_strides:
            length = max(1, int(math.log2(stride) - math.log2(feature_strides[0])))
            layers: list[nn.Module] = []
            for k in range(length):
                layers.append(ConvModule(in_channels if k == 0 else channels, channels, 3))
                if stride != feature_strides[0]:
                    layers.append(Upsample2x())
            self.scale_heads.append(nn.Sequential(*layers))
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        out = self.scale_heads[0](feats[0])
        for head, x in zip(self.scale_heads[1:], feats[1:]):
            out = out + resize_like(head(x), out)
        return self.conv_seg(out)
