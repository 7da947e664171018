"""mmdet's ``RPNHead`` (Ren et al., 2015) at inference, with its state-dict keys.

Per FPN level, shared by all: ``rpn_conv`` (3x3, a bias, then ReLU; a plain conv, not a ConvModule, as mmdet's
one-conv RPN builds it), then ``rpn_cls`` (1x1: one sigmoid objectness logit per anchor) and ``rpn_reg`` (1x1:
4 deltas per anchor).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


class RPNHead(nn.Module):
    """``forward(feats)``: L maps [B, in_channels, H_l, W_l] -> (cls_scores, bbox_preds), L maps each:
    [B, A, H_l, W_l] objectness logits and [B, A * 4, H_l, W_l] deltas (channel ``a * 4 + k``)."""

    def __init__(self, in_channels: int = 256, feat_channels: int = 256, num_anchors: int = 3):
        super().__init__()
        self.num_anchors = num_anchors
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, num_anchors * 4, 1)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = F.relu(self.rpn_conv(x))
        return self.rpn_cls(x), self.rpn_reg(x)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        outs = [self.forward_single(x) for x in feats]
        return [c for c, _ in outs], [r for _, r in outs]
