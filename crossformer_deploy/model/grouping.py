"""Short- and long-distance grouping (SDA / LDA) as index arithmetic.

One code path serves SDA, LDA and the small-map rule: every size parameter is *selected* from
``small = min(H, W) <= G`` instead of branched on, so the same functions work with Python ints
(eager) and with 0-d tensors (sizes as traced by the ONNX exporter), and a traced graph stays
correct at every input size.

Group (gi, gj), member (a, c) sits at row ``gi * s_out + a * s_in`` and col ``gj * s_out + c * s_in``
of the map padded right/bottom to (Hp, Wp):
  SDA: s_out = g (group size), s_in = 1; groups are g x g adjacent tokens.
  LDA: s_out = 1, s_in = I (interval); group (i, j) holds rows i, i+I, ..., cols j, j+I, ...
Padding is never materialised: padded slots point at token 0 and are masked as keys (so what they
hold never reaches an output) and dropped as queries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

Size = Union[int, Tensor]

# The authors' additive fill for padded keys (fp32). FP16 graphs replace it (it overflows fp16).
MASK_FILL = -1e6


def _traced(*xs: Size) -> bool:
    return any(isinstance(x, Tensor) for x in xs)


def smin(a: Size, b: Size) -> Size:
    if _traced(a, b):
        return torch.minimum(torch.as_tensor(a), torch.as_tensor(b))
    return min(a, b)


def select(cond, a: Size, b: Size) -> Size:
    """``a if cond else b`` that stays a graph op when ``cond`` is a traced tensor."""
    if isinstance(cond, Tensor):
        return torch.where(cond, torch.as_tensor(a), torch.as_tensor(b))
    return a if cond else b


@dataclass(frozen=True)
class GroupLayout:
    """How an (H, W) map splits into groups for one block call.

    gh, gw: group shape (tokens per group N = gh * gw); nh, nw: groups per column/row (nG = nh * nw);
    s_out, s_in: row/col stride between groups and within a group; Hp, Wp: padded size.
    """

    H: Size
    W: Size
    gh: Size
    gw: Size
    nh: Size
    nw: Size
    s_out: Size
    s_in: Size


def group_layout(H: Size, W: Size, group_size: int, interval: int, lda: bool) -> GroupLayout:
    """The layout of an SDA (``lda=False``) or LDA block, with the small-map rule applied.

    If min(H, W) <= G the block is SDA with group size min(H, W) for this call (an LDA block too).
    """
    small = smin(H, W) <= group_size
    g = smin(group_size, smin(H, W))  # SDA group size, shrunk on small maps
    use_lda = (~small if isinstance(small, Tensor) else not small) if lda else False
    div = select(use_lda, interval, g)
    Hp = (H + div - 1) // div * div
    Wp = (W + div - 1) // div * div
    gh = select(use_lda, Hp // interval, g)
    gw = select(use_lda, Wp // interval, g)
    return GroupLayout(H=H, W=W, gh=gh, gw=gw, nh=Hp // gh, nw=Wp // gw,
                       s_out=select(use_lda, 1, g), s_in=select(use_lda, interval, 1))


def _arange(n: Size, device) -> Tensor:
    return torch.arange(n, device=device)


def member_coords(lay: GroupLayout, device=None) -> tuple[Tensor, Tensor]:
    """Row/col of each member inside its group: two [N] tensors (a, c)."""
    p = _arange(lay.gh * lay.gw, device)
    return p // lay.gw, p % lay.gw


def group_index(lay: GroupLayout, device=None) -> tuple[Tensor, Tensor]:
    """Token index of every group slot, and which slots are real tokens.

    Returns ``index`` [nG, N] into the flattened map (padded slots point at token 0: a copy of a real
    token instead of a zero-padded copy of the map) and ``valid`` [nG, N] (False for padding).
    """
    gid = _arange(lay.nh * lay.nw, device)
    a, c = member_coords(lay, device)
    rows = (gid // lay.nw)[:, None] * lay.s_out + a[None, :] * lay.s_in
    cols = (gid % lay.nw)[:, None] * lay.s_out + c[None, :] * lay.s_in
    valid = (rows < lay.H) & (cols < lay.W)
    index = torch.where(valid, rows * lay.W + cols, torch.zeros_like(rows))
    return index, valid


def ungroup_index(lay: GroupLayout, device=None) -> Tensor:
    """For each token of the (H, W) map, its slot in the grouped tensor flattened to [nG * N]: [H, W]."""
    h = _arange(lay.H, device)
    w = _arange(lay.W, device)
    gi, a = (h // lay.s_out) % lay.nh, (h // lay.s_in) % lay.gh
    gj, c = (w // lay.s_out) % lay.nw, (w // lay.s_in) % lay.gw
    return (gi[:, None] * lay.nw + gj[None, :]) * (lay.gh * lay.gw) + a[:, None] * lay.gw + c[None, :]


def group(x: Tensor, index: Tensor) -> Tensor:
    """[B, H, W, C] -> [B, nG, N, C] (padded slots: a copy of token 0, to be masked)."""
    B, C = x.shape[0], x.shape[-1]
    return x.reshape(B, -1, C)[:, index]


def ungroup(x: Tensor, inverse: Tensor) -> Tensor:
    """[B, nG, N, C] -> [B, H, W, C]; padded slots are dropped (the crop)."""
    B, C = x.shape[0], x.shape[-1]
    return x.reshape(B, -1, C)[:, inverse]
