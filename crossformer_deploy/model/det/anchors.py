"""RetinaNet's anchors as mmdet 3.x's ``AnchorGenerator`` makes them, for feature maps of any run-time size.

Per level: base anchors (one per ratio x scale, ratio-major as mmdet's ``scale_major``), centred on
``center_offset * stride`` (0 in mmdet 3.x: the top-left corner of the cell, not its middle), shifted over the
map's grid. Row order is mmdet's: (y, x, anchor), which is also the order of the head's maps after
``permute(0, 2, 3, 1)``. Values are computed with mmdet's float32 operations in mmdet's order, so they are
bit-identical to its priors.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossformer_deploy.model.det.config import AnchorConfig
from crossformer_deploy.model.grouping import Size


def base_anchors(base_size: int, scales: Tensor, ratios: Tensor, center_offset: float = 0.0) -> Tensor:
    """[A, 4] (x1, y1, x2, y2) around (c, c), c = center_offset * base_size; A = len(ratios) * len(scales).

    h / w = ratio, area (base_size * scale)^2; float32 in mmdet's order: ``base * (1 / sqrt(r)) * scale``."""
    center = center_offset * base_size
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (base_size * w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (base_size * h_ratios[:, None] * scales[None, :]).reshape(-1)
    return torch.stack([center - 0.5 * ws, center - 0.5 * hs, center + 0.5 * ws, center + 0.5 * hs], dim=-1)


class AnchorGenerator(nn.Module):
    """``forward(sizes)``: per level (H_l, W_l) -> anchors [H_l * W_l * A, 4] in input-image pixels.

    The sizes may be 0-d tensors (a dynamic ONNX trace): the grid is then ``Range`` ops on the run-time size,
    never a constant for the export size. The base anchors are non-persistent buffers (constants of the
    graph; no state-dict keys, as in mmdet, whose generator holds no weights).
    """

    def __init__(self, cfg: AnchorConfig):
        super().__init__()
        self.strides = tuple(cfg.strides)
        self.num_anchors = cfg.num_anchors
        # mmdet: np.array of 2**(i / n) times the base scale, then torch.Tensor(...) -> float32
        scales = torch.tensor([cfg.octave_base_scale * 2 ** (i / cfg.scales_per_octave)
                               for i in range(cfg.scales_per_octave)], dtype=torch.float32)
        ratios = torch.tensor(cfg.ratios, dtype=torch.float32)
        for i, stride in enumerate(self.strides):
            self.register_buffer(f"base_{i}", base_anchors(stride, scales, ratios, cfg.center_offset),
                                 persistent=False)

    def level(self, i: int, height: Size, width: Size) -> Tensor:
        """[H * W * A, 4] for level ``i`` of a map H x W."""
        base: Tensor = getattr(self, f"base_{i}")
        stride = self.strides[i]
        shift_x = torch.arange(0, width, device=base.device).to(base.dtype) * stride
        shift_y = torch.arange(0, height, device=base.device).to(base.dtype) * stride
        # broadcasting with a zero row / column (exact) instead of expand(h, w): no sizes are needed here
        xx = shift_x[None, :] + torch.zeros_like(shift_y)[:, None]
        yy = shift_y[:, None] + torch.zeros_like(shift_x)[None, :]
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)  # [H, W, 4]
        return (base[None, None] + shifts[:, :, None]).reshape(-1, 4)

    def forward(self, sizes: Sequence[tuple[Size, Size]]) -> list[Tensor]:
        if len(sizes) != len(self.strides):
            raise ValueError(f"{len(sizes)} feature maps for {len(self.strides)} anchor levels")
        return [self.level(i, h, w) for i, (h, w) in enumerate(sizes)]

