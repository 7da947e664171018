"""mmdet's ``SingleRoIExtractor``: each RoI's features by RoIAlign from the one FPN level its size maps to.

A RoI of scale ``sqrt(w * h)`` (input pixels) goes to level ``floor(log2(scale / finest_scale + 1e-6))``,
clamped to [0, L - 1] (finest_scale 56: under 112 px the stride-4 map, from 448 px the stride-32 one). The level
is computed in the graph from the RoIs themselves, as ``(v >= t_1) + (v >= t_2) + ...`` with ``v = scale /
finest_scale + 1e-6`` (float32, mmdet's operations) and ``t_k`` the smallest float32 whose ``torch.log2`` is
>= k: mmdet's integer without a ``Log`` op. ``t_k`` is 2**k less a few floats (``torch.log2(7.9999995)`` rounds
to 3.0), found once by asking torch; a plain ``v >= 2**k`` would put a RoI in those few floats a level below
mmdet's, a graph's ``Log`` / ``Div`` wherever their rounding differs from torch's. Per level, the RoIs found
there (``NonZero``) are aligned from that map (``RoiAlign``) and scattered back to their rows (``ScatterND``): any
number of RoIs, any mix of levels, batch indices carried per RoI. A RoI of no width or height gets 0 (mmcv's and
ONNX Runtime's answer: no samples, count 1) by a final ``Where``: OpenVINO's CPU ``ROIAlign`` divides 0 by 0
there, and the padding rows (zero boxes) would carry NaN.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossformer_deploy.model.det.roi_align import roi_align


def log2_thresholds(levels: int, steps: int = 64) -> tuple[float, ...]:
    """For k = 1 .. levels - 1: the smallest float32 v with ``torch.log2(v) >= k`` (v near 2**k; one vector
    evaluation per k, as mmdet evaluates all RoIs at once)."""
    out = []
    for k in range(1, levels):
        below = torch.tensor(2.0**k, dtype=torch.float32)
        cands = [below]
        for _ in range(steps):
            below = torch.nextafter(below, torch.tensor(0.0))
            cands.append(below)
        cands = torch.stack(cands[::-1])  # ascending, ending at 2**k
        ok = torch.log2(cands) >= k
        first = int(ok.flip(0).to(torch.int64).cumprod(0).sum())  # the run of True ending at 2**k
        out.append(float(cands[len(cands) - first]))
    return tuple(out)


class SingleRoIExtractor(nn.Module):
    """``forward(feats, rois, batch_idx)``: L maps [B, C, H_l, W_l] (strides ``strides``), rois [R, 4] (x1, y1,
    x2, y2; input pixels), batch_idx [R] int64 -> [R, C, S, S], S = ``output_size``. Holds no tensors."""

    def __init__(self, output_size: int, strides: Sequence[int], finest_scale: int = 56, aligned: bool = True):
        super().__init__()
        self.output_size, self.strides = int(output_size), tuple(strides)
        self.finest_scale, self.aligned = finest_scale, aligned
        self.thresholds = log2_thresholds(len(self.strides))

    def levels(self, rois: Tensor) -> Tensor:
        """[R, 4] -> [R] int64 level of each RoI."""
        scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
        v = scale / self.finest_scale + 1e-6
        level = torch.zeros_like(v, dtype=torch.int64)
        for t in self.thresholds:
            level = level + (v >= t).to(torch.int64)
        return level

    def forward(self, feats: Sequence[Tensor], rois: Tensor, batch_idx: Tensor) -> Tensor:
        s, c = self.output_size, feats[0].shape[1]
        level = self.levels(rois)
        out = torch.zeros_like(rois[:, :1, None, None]).repeat(1, c, s, s)  # [R, C, S, S], R a graph value
        for i, stride in enumerate(self.strides):
            inds = torch.nonzero(level == i).flatten()
            part = roi_align(feats[i], rois[inds], batch_idx[inds], (s, s), 1.0 / stride, self.aligned)
            out = out.index_put((inds,), part)
        empty = (rois[:, 2] <= rois[:, 0]) | (rois[:, 3] <= rois[:, 1])
        return torch.where(empty[:, None, None, None], torch.zeros_like(out), out)
