"""Short- and long-distance grouping (SDA / LDA) as index arithmetic, for both families.

One code path serves SDA, LDA, both families and the small-map rule: every size parameter is
*selected* from ``small = min(H, W) <= G`` instead of branched on, so the same functions work with
Python ints (eager) and with 0-d tensors (sizes as traced by the ONNX exporter), and a traced graph
stays correct at every input size.

A layout is a group shape (gh, gw) and one stride s. The map is padded right/bottom to
(Hp, Wp) = (ceil(H / (gh s)) gh s, ...) and cut into regions of gh*s x gw*s tokens; inside a region,
group (i, j) with i, j < s holds rows i, i+s, ..., cols j, j+s, .... So group (gi, gj), member (a, c)
sits at

    row = (gi // s) * gh * s + gi % s + a * s        (cols alike with gj, gw, c)

  SDA:                 s = 1: adjacent gh x gw tokens.
  LDA, CrossFormer:    s = I, gh = ceil(H / I): one region (the map), groups of stride I.
  LDA, CrossFormer++:  s = I, gh = gw = G: regions of G*I tokens a side (the map padded to a multiple).
Small maps (min(H, W) <= G) run SDA (s = 1), in an LDA block too, with groups of min(H, W) a side
(CrossFormer) or one H x W group (CrossFormer++; the authors' backbone pads it to max(H, W) square, which
changes nothing: padded keys are masked and position biases depend on offsets only).
Padding is never materialised: padded slots point at token 0 and are masked as keys (so what they
hold never reaches an output) and dropped as queries.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from crossformer_deploy.model.config import Family

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
    s: stride between a group's members (1 in SDA, I in LDA); see the module docstring.
    """

    H: Size
    W: Size
    gh: Size
    gw: Size
    nh: Size
    nw: Size
    s: Size


def _cdiv(a: Size, b: Size) -> Size:
    return (a + b - 1) // b


def group_layout(H: Size, W: Size, group_size: int, interval: int, lda: bool,
                 family: Family = Family.CROSSFORMER) -> GroupLayout:
    """The layout of an SDA (``lda=False``) or LDA block of either family, with the small-map rule applied for
    this call only (module docstring)."""
    mn = smin(H, W)
    small = mn <= group_size
    use_lda = (~small if isinstance(small, Tensor) else not small) if lda else False
    s = select(use_lda, interval, 1)
    if family is Family.CROSSFORMER_PP:
        gh, gw = select(small, H, group_size), select(small, W, group_size)
    else:
        g = smin(group_size, mn)  # SDA group size, shrunk on small maps
        gh, gw = select(use_lda, _cdiv(H, interval), g), select(use_lda, _cdiv(W, interval), g)
    return GroupLayout(H=H, W=W, gh=gh, gw=gw, nh=_cdiv(H, gh * s) * s, nw=_cdiv(W, gw * s) * s, s=s)


def _arange(n: Size, device) -> Tensor:
    return torch.arange(n, device=device)


def member_coords(lay: GroupLayout, device=None) -> tuple[Tensor, Tensor]:
    """Row/col of each member inside its group: two [N] tensors (a, c)."""
    p = _arange(lay.gh * lay.gw, device)
    return p // lay.gw, p % lay.gw


def first_member(g: Tensor, extent: Size, s: Size) -> Tensor:
    """Row (col) of the first member of group row (col) ``g``: ``(g // s) * extent * s + g % s``."""
    return (g // s) * (extent * s) + g % s


def _slot(pos: Tensor, extent: Size, s: Size) -> tuple[Tensor, Tensor]:
    """(group row, member row) of map row ``pos``: the inverse of ``first_member`` + a * s."""
    region, r = pos // (extent * s), pos % (extent * s)
    return region * s + r % s, r // s


def group_index(lay: GroupLayout, device=None) -> tuple[Tensor, Tensor]:
    """Token index of every group slot, and which slots are real tokens.

    Returns ``index`` [nG, N] into the flattened map (padded slots point at token 0: a copy of a real
    token instead of a zero-padded copy of the map) and ``valid`` [nG, N] (False for padding).
    """
    gid = _arange(lay.nh * lay.nw, device)
    a, c = member_coords(lay, device)
    rows = first_member(gid // lay.nw, lay.gh, lay.s)[:, None] + a[None, :] * lay.s
    cols = first_member(gid % lay.nw, lay.gw, lay.s)[:, None] + c[None, :] * lay.s
    valid = (rows < lay.H) & (cols < lay.W)
    index = torch.where(valid, rows * lay.W + cols, torch.zeros_like(rows))
    return index, valid


def ungroup_index(lay: GroupLayout, device=None) -> Tensor:
    """For each token of the (H, W) map, its slot in the grouped tensor flattened to [nG * N]: [H, W]."""
    h = _arange(lay.H, device)
    w = _arange(lay.W, device)
    gi, a = _slot(h, lay.gh, lay.s)
    gj, c = _slot(w, lay.gw, lay.s)
    return (gi[:, None] * lay.nw + gj[None, :]) * (lay.gh * lay.gw) + a[:, None] * lay.gw + c[None, :]


def is_static(lay: GroupLayout) -> bool:
    """Whether every size of the layout is a Python int (eager, or a fixed-size export)."""
    return not _traced(lay.H, lay.W, lay.gh, lay.gw, lay.nh, lay.nw, lay.s)


def has_padding(lay: GroupLayout) -> bool:
    """Whether a static layout's groups cover more than the map (padded slots): the regions tile nh * gh rows
    and nw * gw columns. Read off the sizes, not off ``valid``: no device sync, nothing data-dependent for
    torch.compile to break its graph on."""
    return lay.nh * lay.gh != lay.H or lay.nw * lay.gw != lay.W


def group_by_reshape(x: Tensor, lay: GroupLayout) -> Tensor:
    """``group`` for a static layout, as Pad + Reshape + Transpose instead of a Gather (what a fixed-size graph
    runs fastest: no index tensors, data movement a runtime can fuse): [B, H, W, C] -> [B, nG, N, C].

    The map is zero-padded to (nh * gh, nw * gw) = (R gh s, Rw gw s), seen as [B, R, gh, s, Rw, gw, s, C] (region,
    member, phase) and reordered to [B, R, s, Rw, s, gh, gw, C]: group (r s + i, rw s + j), member (a, c) is map
    row r gh s + a s + i, as ``group_index`` places it. Padded slots hold zeros instead of token 0: both are masked
    as keys and dropped as queries.
    """
    B, C = x.shape[0], x.shape[-1]
    if has_padding(lay):
        x = torch.nn.functional.pad(x, (0, 0, 0, lay.nw * lay.gw - lay.W, 0, lay.nh * lay.gh - lay.H))
    shape, perm = _regroup(lay)
    return x.reshape(B, *shape, C).permute(0, *perm, len(shape) + 1).reshape(B, lay.nh * lay.nw, lay.gh * lay.gw, C)


def _regroup(lay: GroupLayout) -> tuple[list[int], list[int]]:
    """The map's axes (R, gh, s, Rw, gw, s) without those of size 1 (a transpose of rank 6 for SDA and the
    one-region LDA, not 8), and the order that puts them as (R, s, Rw, s, gh, gw); axis numbers from 1."""
    sizes = [lay.nh // lay.s, lay.gh, lay.s, lay.nw // lay.s, lay.gw, lay.s]
    order = [0, 2, 3, 5, 1, 4]
    kept = [i for i, n in enumerate(sizes) if n != 1]
    return [sizes[i] for i in kept], [kept.index(i) + 1 for i in order if i in kept]


def ungroup_by_reshape(x: Tensor, lay: GroupLayout) -> Tensor:
    """The inverse of ``group_by_reshape``, and the crop: [B, nG, N, C] -> [B, H, W, C]."""
    B, C = x.shape[0], x.shape[-1]
    shape, perm = _regroup(lay)
    grouped = [shape[p - 1] for p in perm]  # the axes in grouped order
    inverse = [perm.index(i) + 1 for i in range(1, len(shape) + 1)]
    x = x.reshape(B, *grouped, C).permute(0, *inverse, len(shape) + 1)
    x = x.reshape(B, lay.nh * lay.gh, lay.nw * lay.gw, C)
    return x[:, :lay.H, :lay.W] if has_padding(lay) else x


def group(x: Tensor, index: Tensor) -> Tensor:
    """[B, H, W, C] -> [B, nG, N, C] (padded slots: a copy of token 0, to be masked)."""
    B, C = x.shape[0], x.shape[-1]
    return x.reshape(B, -1, C)[:, index]


def ungroup(x: Tensor, inverse: Tensor) -> Tensor:
    """[B, nG, N, C] -> [B, H, W, C]; padded slots are dropped (the crop)."""
    B, C = x.shape[0], x.shape[-1]
    return x.reshape(B, -1, C)[:, inverse]
