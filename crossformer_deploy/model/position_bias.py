"""Dynamic position bias (DPB): an MLP of the relative offset between two group members."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.model.grouping import GroupLayout, Size, member_coords


def _ln_relu_linear(d_in: int, d_out: int) -> nn.Sequential:
    # Index 0 / 2 match the authors' state-dict keys (pos1.0 = LayerNorm, pos1.2 = Linear).
    return nn.Sequential(nn.LayerNorm(d_in), nn.ReLU(), nn.Linear(d_in, d_out))


def offset_grid(gh: Size, gw: Size, device=None) -> Tensor:
    """All offsets (dh, dw), dh in [1-gh, gh-1], dw in [1-gw, gw-1], row-major: [(2gh-1)(2gw-1), 2] fp32."""
    dh = torch.arange(1 - gh, gh, device=device)
    dw = torch.arange(1 - gw, gw, device=device)
    grid = torch.stack(torch.meshgrid(dh, dw, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2).float()


def offset_index(lay: GroupLayout, device=None) -> Tensor:
    """Row of the offset table for each (query, key) pair of a group: [N, N]."""
    a, c = member_coords(lay, device)
    dh = a[:, None] - a[None, :] + (lay.gh - 1)
    dw = c[:, None] - c[None, :] + (lay.gw - 1)
    return dh * (2 * lay.gw - 1) + dw


def gather_bias(table: Tensor, index: Tensor) -> Tensor:
    """Expand a table [T, heads] to the per-pair bias [heads, N, N]."""
    return table[index].permute(2, 0, 1)


class DynamicPosBias(nn.Module):
    """Linear(2, d) -> [LN, ReLU, Linear(d, d)] x 2 -> [LN, ReLU, Linear(d, heads)], d = dim // 16.

    The table depends only on the group shape (gh, gw), never on the image, which is what lets
    export fold it to a constant (static sizes) or a precomputed max-size table.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        d = dim // 16
        self.num_heads = num_heads
        self.pos_proj = nn.Linear(2, d)
        self.pos1 = _ln_relu_linear(d, d)
        self.pos2 = _ln_relu_linear(d, d)
        self.pos3 = _ln_relu_linear(d, num_heads)

    def forward(self, offsets: Tensor) -> Tensor:
        """[T, 2] offsets -> [T, heads]."""
        return self.pos3(self.pos2(self.pos1(self.pos_proj(offsets))))

    def table(self, gh: Size, gw: Size) -> Tensor:
        """The bias table for a gh x gw group: [(2gh-1)(2gw-1), heads]."""
        w = self.pos_proj.weight  # offsets in the weights' dtype: a model cast to fp16 runs as is
        return self(offset_grid(gh, gw, w.device).to(w.dtype))
