"""The fused grouped-attention kernel as a PyTorch custom op: ``torch.ops.crossformer_deploy.grouped_attention``.

Why an op and not a plain call: torch.compile cannot trace into a Triton launch that passes Python ints and a
kernel object it does not know, and a graph break at every block would cut the forward into 20+ pieces and
keep inductor from fusing the LayerNorms, bias + GELU and residual adds around the attention. Registered as a
custom op with a fake (shape-only) implementation, the kernel is one opaque node: the whole forward becomes one
graph that inductor fuses and captures in one CUDA graph.

The op takes the kernel's own arguments (``triton_kernel.grouped_attention_triton``); ``family`` travels as an
int (``Family.attr``) because custom-op schemas take only plain types.
"""
from __future__ import annotations

import torch
from torch import Tensor

OP_NAME = "crossformer_deploy::grouped_attention"


@torch.library.custom_op(OP_NAME, mutates_args=())
def grouped_attention(qkv: Tensor, table: Tensor, num_heads: int, mode: str, group_size: int, interval: int,
                      scale: float, family: int) -> Tensor:
    """qkv ``[B, H, W, 3C]``, centred DPB table ``[heads, TH, TW]`` -> ``[B, H, W, C]`` (qkv's dtype)."""
    # at first use: the kernel module reads TRITON_INTERPRET when first imported, and imports Triton
    from crossformer_deploy.plugins.triton_kernel import grouped_attention_triton

    return grouped_attention_triton(qkv, table, num_heads, mode, group_size, interval, scale, family)


@grouped_attention.register_fake
def _fake(qkv: Tensor, table: Tensor, num_heads: int, mode: str, group_size: int, interval: int, scale: float,
          family: int) -> Tensor:
    # the real kernel's checks (plugins.reference.check_inputs) run with the real tensors; here only the
    # shape rule that the output depends on, so that a wrong qkv fails at trace time and not in a kernel
    B, H, W, C3 = qkv.shape
    torch._check(C3 % (3 * num_heads) == 0, lambda: f"qkv's last dim {C3} is not 3 * {num_heads} heads * head_dim")
    return qkv.new_empty(B, H, W, C3 // 3)
