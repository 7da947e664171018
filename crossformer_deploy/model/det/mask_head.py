"""mmdet's ``FCNMaskHead`` at inference, with its state-dict keys.

A RoI's features [C, 14, 14] through ``num_convs`` 3x3 convs + ReLU (``convs.{i}.conv``, no norm), a 2x2
stride-2 transposed conv + ReLU (``upsample``: 28x28), and ``conv_logits`` (1x1: one mask logit map per class).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from crossformer_deploy.model.seg.conv_module import ConvModule


class FCNMaskHead(nn.Module):
    """``forward(roi_feats [R, C, S, S])`` -> mask logits [R, num_classes, 2S, 2S]."""

    def __init__(self, num_classes: int, in_channels: int = 256, channels: int = 256, num_convs: int = 4):
        super().__init__()
        chans = [in_channels] + [channels] * num_convs
        self.convs = nn.ModuleList(ConvModule(chans[i], chans[i + 1], 3, norm=False) for i in range(num_convs))
        self.upsample = nn.ConvTranspose2d(chans[-1], channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(F.relu(self.upsample(x)))
