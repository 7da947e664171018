"""mmcv's ConvModule as the released checkpoints store it: ``conv`` [+ ``bn``] [+ ReLU]."""
from __future__ import annotations

from torch import Tensor, nn


class ConvModule(nn.Module):
    """Conv2d, then BatchNorm2d and ReLU when asked; [B, Cin, H, W] -> [B, Cout, H', W'].

    With a norm the conv has no bias (keys ``conv.weight``, ``bn.*``); without one it has a bias (``conv.weight``,
    ``conv.bias``), as in mmcv. SyncBN in the authors' configs is BN at inference.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, norm: bool = True, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=not norm)
        self.bn = nn.BatchNorm2d(cout) if norm else None
        self.act = nn.ReLU() if act else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.act is None else self.act(x)
