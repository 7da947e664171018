"""PyTorch reference for ``crossformer::GroupedAttention`` (docs/fused-op.md; the contract is ``op.py``).

Built on the model's own functions (``group_layout`` + ``grouped_attention``): the only thing added
here is the op's table convention, a *centred* table ``[heads, TH, TW]`` that may be larger than the
group needs (one table precomputed for the largest group of an engine profile serves every smaller
size). ``grouped_attention_reference`` crops it back to the model's flat table and calls the model,
so for fp32 it is bit-identical to the model.
"""
from __future__ import annotations

import torch
from torch import Tensor

from crossformer_deploy.model.attention import grouped_attention
from crossformer_deploy.model.config import Family
from crossformer_deploy.model.grouping import GroupLayout, group_layout
from crossformer_deploy.plugins.op import OpAttrs, as_family

QKV_DTYPES = (torch.float32, torch.float16)


def centred_table(flat_table: Tensor, gh: int, gw: int) -> Tensor:
    """Model table ``[(2gh-1)(2gw-1), heads]`` (row-major over (dh, dw) from (1-gh, 1-gw)) ->
    exact-size centred table ``[heads, 2gh-1, 2gw-1]``; entry [h, gh-1+dh, gw-1+dw] is offset (dh, dw)."""
    rows, heads = flat_table.shape
    if rows != (2 * gh - 1) * (2 * gw - 1):
        raise ValueError(f"flat table has {rows} rows, a {gh}x{gw} group needs {(2 * gh - 1) * (2 * gw - 1)}")
    return flat_table.t().reshape(heads, 2 * gh - 1, 2 * gw - 1).contiguous()


def pad_table(table: Tensor, th: int, tw: int, fill: float = float("nan")) -> Tensor:
    """Centre ``table [heads, h, w]`` (odd h, w) in a larger odd ``[heads, th, tw]``.

    The op never reads outside the window its group shape needs, so the fill is never used; NaN is
    the default so that a kernel reading it anyway poisons its output and fails the tests.
    """
    heads, h, w = table.shape
    if th % 2 == 0 or tw % 2 == 0 or th < h or tw < w:
        raise ValueError(f"target size {th}x{tw} must be odd and at least {h}x{w}")
    out = table.new_full((heads, th, tw), fill)
    oh, ow = (th - h) // 2, (tw - w) // 2
    out[:, oh:oh + h, ow:ow + w] = table
    return out


def crop_table(table: Tensor, gh, gw) -> Tensor:
    """Centred ``[heads, TH, TW]`` -> the model's flat ``[(2gh-1)(2gw-1), heads]`` for a gh x gw group.

    Index ops, not slicing: gh and gw may be 0-d tensors while the ONNX exporter traces (the op's
    ONNX function), and slice bounds would be baked in as constants.
    """
    heads = table.shape[0]
    shape = torch._shape_as_tensor(table) if torch.jit.is_tracing() else table.shape
    ch, cw = (shape[1] - 1) // 2, (shape[2] - 1) // 2
    rows = torch.arange(ch - (gh - 1), ch + gh, device=table.device)
    cols = torch.arange(cw - (gw - 1), cw + gw, device=table.device)
    return table.index_select(1, rows).index_select(2, cols).reshape(heads, -1).t()


def check_inputs(qkv_shape: tuple[int, ...], qkv_dtype: torch.dtype, table_shape: tuple[int, ...],
                 table_dtype: torch.dtype, num_heads: int, mode: str, group_size: int,
                 interval: int, family: Family | int = 0) -> GroupLayout:
    """Validate the op's inputs and attributes (docs/fused-op.md, "Schema") and return the layout (Python ints).

    qkv ``[B, H, W, 3C]``, table ``[heads, TH, TW]``. Raises ValueError / TypeError with the rule broken.
    Shared by the reference and the Triton launcher so that both reject the same things; the attributes are
    checked by the op's spec (``op.OpAttrs``), as the TensorRT plugin checks them.
    """
    attrs = OpAttrs(num_heads, mode, group_size, interval, 1.0, as_family(family))
    if qkv_dtype not in QKV_DTYPES:
        raise TypeError(f"qkv must be float32 or float16, got {qkv_dtype}")
    if table_dtype not in (torch.float32, qkv_dtype):
        raise TypeError(f"table must be float32 or the dtype of qkv ({qkv_dtype}), got {table_dtype}")
    if len(qkv_shape) != 4:
        raise ValueError(f"qkv must be [B, H, W, 3C], got shape {tuple(qkv_shape)}")
    B, H, W, C3 = qkv_shape
    if min(B, H, W) < 1 or C3 % 3 or (C3 // 3) % num_heads or C3 == 0:
        raise ValueError(f"qkv {tuple(qkv_shape)}: need B, H, W >= 1 and last dim 3C with C divisible by "
                         f"num_heads={num_heads}")
    if len(table_shape) != 3 or table_shape[0] != num_heads:
        raise ValueError(f"table must be [num_heads={num_heads}, TH, TW], got {tuple(table_shape)}")
    lay = group_layout(H, W, group_size, interval, attrs.lda, attrs.family)
    _, th, tw = table_shape
    if th % 2 == 0 or tw % 2 == 0 or th < 2 * lay.gh - 1 or tw < 2 * lay.gw - 1:
        raise ValueError(f"table {th}x{tw} must have odd sizes >= {2 * lay.gh - 1}x{2 * lay.gw - 1} "
                         f"(group {lay.gh}x{lay.gw} for an {H}x{W} map, mode {mode})")
    return lay


def grouped_attention_reference(qkv: Tensor, table: Tensor, num_heads: int, mode: str, group_size: int,
                                interval: int, scale: float, family: Family | int = 0) -> Tensor:
    """The op's semantics: qkv ``[B, H, W, 3C]`` + centred table ``[heads, TH, TW]`` -> ``[B, H, W, C]``.

    Computes in qkv's dtype exactly as the model does. To judge an fp16 implementation, evaluate this
    on ``qkv.float()`` (CPU fp16 attention and the model's -1e6 key fill are not a precision reference).
    """
    lay = check_inputs(tuple(qkv.shape), qkv.dtype, tuple(table.shape), table.dtype, num_heads, mode,
                       group_size, interval, family)
    flat = crop_table(table, lay.gh, lay.gw)
    return grouped_attention(qkv, flat, lay, num_heads, scale)
