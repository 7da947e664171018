"""mmdet's ``RetinaHead`` (Lin et al., 2017) at inference, with its state-dict keys.

Per FPN level, two towers of ``stacked_convs`` 3x3 convs + ReLU (``cls_convs.{i}.conv``, ``reg_convs.{i}.conv``;
no norm in the released configs, so each conv has a bias), then ``retina_cls`` (A * C logits a location) and
``retina_reg`` (A * 4 deltas). The towers and output convs are shared by all levels.
"""
from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from crossformer_deploy.model.seg.conv_module import ConvModule


class RetinaHead(nn.Module):
    """``forward(feats)``: L maps [B, in_channels, H_l, W_l] -> (cls_scores, bbox_preds), L maps each:
    [B, A * num_classes, H_l, W_l] logits (sigmoid, no background class) and [B, A * 4, H_l, W_l] deltas;
    channel ``a * num_classes + c`` is anchor ``a``, class ``c`` (mmdet's layout)."""

    def __init__(self, num_classes: int, in_channels: int = 256, feat_channels: int = 256, stacked_convs: int = 4,
                 num_anchors: int = 9):
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        chans = [in_channels] + [feat_channels] * stacked_convs
        self.cls_convs = nn.ModuleList(ConvModule(chans[i], chans[i + 1], 3, norm=False) for i in range(stacked_convs))
        self.reg_convs = nn.ModuleList(ConvModule(chans[i], chans[i + 1], 3, norm=False) for i in range(stacked_convs))
        self.retina_cls = nn.Conv2d(chans[-1], num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(chans[-1], num_anchors * 4, 3, padding=1)

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """One level: [B, C_in, H, W] -> ([B, A * K, H, W], [B, A * 4, H, W])."""
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.retina_cls(cls_feat), self.retina_reg(reg_feat)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        outs = [self.forward_single(x) for x in feats]
        return [c for c, _ in outs], [r for _, r in outs]
