"""mmdet's ``Shared2FCBBoxHead`` at inference, with its state-dict keys.

A RoI's features [C, 7, 7] flattened, two shared fully connected layers with ReLU (``shared_fcs.0``,
``shared_fcs.1``), then ``fc_cls`` (num_classes + 1 logits: softmax, the background last) and ``fc_reg``
(class-specific: 4 deltas per class, class ``c`` at columns ``4c .. 4c + 3``).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class Shared2FCBBoxHead(nn.Module):
    """``forward(roi_feats [R, C, S, S])`` -> (cls_score [R, num_classes + 1], bbox_pred [R, num_classes * 4])."""

    def __init__(self, num_classes: int, in_channels: int = 256, roi_size: int = 7, fc_channels: int = 1024):
        super().__init__()
        self.num_classes = num_classes
        self.shared_fcs = nn.ModuleList([nn.Linear(in_channels * roi_size * roi_size, fc_channels),
                                         nn.Linear(fc_channels, fc_channels)])
        self.fc_cls = nn.Linear(fc_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_channels, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.flatten(1)
        for fc in self.shared_fcs:
            x = F.relu(fc(x))
        return self.fc_cls(x), self.fc_reg(x)
