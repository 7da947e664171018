"""Adaptive average pooling as exact bin averages computed from the map's run-time size.

``nn.AdaptiveAvgPool2d`` exports to ONNX as an ``AveragePool`` whose kernel and stride are fixed from the
size seen at export time (and refuses sizes not divisible by the output), so a graph exported at one size is
wrong at others: at a 512 short side the stage-4 map is 16 a side and 16 / 3, 16 / 6 do not divide. Here
the bins are PyTorch's (bin i of s over n covers floor(i n / s) .. ceil((i + 1) n / s) - 1) and the pooling
is two matrix products with weights 1 / len on each bin, built from ``arange`` of the traced size.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.model.grouping import Size
from crossformer_deploy.model.tracing import spatial_size


def pool_matrix(n: Size, s: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """[s, n]: row i averages the cells of bin i of an adaptive pool from ``n`` cells to ``s``."""
    i = torch.arange(s).unsqueeze(1)  # [s, 1]
    # integer division of non-negative values: floor and truncation agree, and ONNX Div (trunc) is one op
    start = torch.div(i * n, s, rounding_mode="trunc")
    end = torch.div((i + 1) * n + (s - 1), s, rounding_mode="trunc")
    cells = torch.arange(n).unsqueeze(0)  # [1, n]
    inside = (cells >= start) & (cells < end)
    return inside.to(dtype) / (end - start).to(dtype)


class AdaptiveAvgPool(nn.Module):
    """[B, C, H, W] -> [B, C, s, s], equal to ``nn.AdaptiveAvgPool2d(s)`` at every H, W (also H < s)."""

    def __init__(self, output_size: int):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Tensor) -> Tensor:
        h, w = spatial_size(x)
        rows = pool_matrix(h, self.output_size, x.dtype)  # [s, H]
        cols = pool_matrix(w, self.output_size, x.dtype)  # [s, W]
        return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
