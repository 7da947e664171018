"""Triton kernel for ``crossformer::GroupedAttention`` (flash-style, one pass over each group).

One program per (batch * group, head, block of queries). It reads q, k, v straight from the spatial
``[B, H, W, 3C]`` projection (group membership is index arithmetic, padding is a load mask; nothing is
transposed or padded in memory), gathers the DPB bias from the centred ``[heads, TH, TW]`` table,
drops padded keys, and runs an online softmax over key blocks with fp32 accumulation.

The kernel's argument order (input pointers, int32 scalars, output pointer, then constexprs) is the
calling convention of TensorRT's AOT plugins, so ``compile_aot`` can hand the PTX to TensorRT as is.

Triton is optional: this module imports without it, and the entry points raise a clear error.
Run on the CPU with ``TRITON_INTERPRET=1`` set before this module is first imported (it is read when
the kernel is decorated).
"""
from __future__ import annotations

import builtins
import inspect
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from crossformer_deploy.model.config import Family
from crossformer_deploy.plugins.op import as_family
from crossformer_deploy.plugins.reference import check_inputs

try:  # a guard, not a lazy import: @triton.jit must see the kernel at import time
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised in a subprocess by the tests
    triton = None

TRITON_MISSING = ("crossformer_deploy.plugins.triton_kernel needs OpenAI Triton (`pip install triton`); "
                  "on a machine without a GPU also set TRITON_INTERPRET=1 before importing it")

# Python-int arithmetic for ``layout_scalars``; tensorrt_plugin passes trtp.min / max / cdiv instead.
INT_OPS = SimpleNamespace(min=builtins.min, max=builtins.max, cdiv=lambda a, b: -(-a // b))


def layout_scalars(H: Any, W: Any, group_size: int, interval: int, lda: bool, family: Family = Family.CROSSFORMER,
                   ops: SimpleNamespace = INT_OPS) -> dict[str, Any]:
    """The kernel's layout arguments (gh, gw, nh, nw, s) for an H x W map of either family.

    Same rule as ``model.grouping.group_layout`` (checked against it by the tests), written once for
    Python ints and for TensorRT's symbolic shape expressions: no branches on H, W; a selection is
    ``small * a + big * b`` with 0/1 flags, and a symbolic value is always the left operand (those
    expressions have no reflected operators).
    """
    G, iv = group_size, interval
    mn = ops.min(H, W)
    small = mn < G + 1  # 0/1: the small-map rule (an LDA block runs SDA)
    big = ops.min(ops.max(mn, G) - G, 1)  # 1 - small, with no symbolic right operand and nothing negative
    s = small + big * iv if lda else 1
    if family is Family.CROSSFORMER_PP:  # G x G groups; a small map is one H x W group
        gh, gw = small * H + big * G, small * W + big * G
    else:  # LDA groups span the map; SDA groups shrink to min(H, W) on small maps
        g = ops.min(mn, G)
        gh, gw = (small * g + big * ops.cdiv(H, iv), small * g + big * ops.cdiv(W, iv)) if lda else (g, g)
    return dict(gh=gh, gw=gw, nh=ops.cdiv(H, gh * s) * s, nw=ops.cdiv(W, gw * s) * s, s=s)


def block_sizes(n_tokens: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) for groups of ``n_tokens``: 64 covers a 7x7 group in one block; tl.dot
    needs >= 16 on GPUs."""
    b = builtins.min(64, builtins.max(16, triton.next_power_of_2(n_tokens) if triton else 64))
    return b, b


if triton is not None:

    @triton.jit
    def grouped_attention_kernel(
        qkv_ptr, table_ptr,  # inputs
        H, W, gh, gw, nh, nw, s, TH, TW,  # int32 scalars (TensorRT: "extra args")
        out_ptr,  # output
        NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, SCALE: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    ):
        C: tl.constexpr = NUM_HEADS * HEAD_DIM
        LOG2E: tl.constexpr = 1.4426950408889634
        pid_bg = tl.program_id(0)
        head = tl.program_id(1)
        pid_m = tl.program_id(2)
        b = pid_bg // (nh * nw)
        g = pid_bg % (nh * nw)
        gi = g // nw
        gj = g % nw
        row0 = (gi // s) * gh * s + gi % s  # top-left member of this group (model/grouping.py)
        col0 = (gj // s) * gw * s + gj % s
        n_tok = gh * gw
        # int64 for the image offset: B * H * W * 3C can pass 2**31 at large batch sizes
        qkv_img = qkv_ptr + b.to(tl.int64) * H * W * (3 * C) + head * HEAD_DIM
        out_img = out_ptr + b.to(tl.int64) * H * W * C + head * HEAD_DIM
        tab = table_ptr + head * TH * TW + ((TH - 1) // 2) * TW + (TW - 1) // 2  # points at offset (0, 0)

        d = tl.arange(0, BLOCK_D)
        d_ok = d < HEAD_DIM
        m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # query members
        a_q = m // gw
        c_q = m % gw
        r_q = row0 + a_q * s
        w_q = col0 + c_q * s
        q_ok = (m < n_tok) & (r_q < H) & (w_q < W)  # padded queries are computed on zeros, never written
        # Rows whose bias may be read. A table too small for this group (an engine profile sized wrong)
        # is never read out of bounds: its bias is NaN instead, so the output is loudly wrong.
        bias_rows = m < tl.where((2 * gh - 1 <= TH) & (2 * gw - 1 <= TW), n_tok, 0)
        tok_q = r_q * W + w_q
        q = tl.load(qkv_img + tok_q[:, None] * (3 * C) + d[None, :], mask=q_ok[:, None] & d_ok[None, :], other=0.0)

        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        for start_n in range(0, n_tok, BLOCK_N):
            n = start_n + tl.arange(0, BLOCK_N)  # key members
            a_k = n // gw
            c_k = n % gw
            r_k = row0 + a_k * s
            w_k = col0 + c_k * s
            k_ok = (n < n_tok) & (r_k < H) & (w_k < W)
            kv = qkv_img + (r_k * W + w_k)[:, None] * (3 * C) + d[None, :]
            kv_mask = k_ok[:, None] & d_ok[None, :]
            k = tl.load(kv + C, mask=kv_mask, other=0.0)
            v = tl.load(kv + 2 * C, mask=kv_mask, other=0.0)
            # fp32 scores; "ieee" keeps fp32 inputs out of TF32 (the 1e-5 bar), fp16 uses tensor cores anyway
            logit = tl.dot(q, tl.trans(k), input_precision="ieee")
            # DPB bias at offset (a_q - a_k, c_q - c_k); only in-group pairs are read, never the table's padding
            # (NaN where not read: such pairs are padded keys, masked below, or rows never written)
            bias = tl.load(tab + (a_q[:, None] - a_k[None, :]) * TW + (c_q[:, None] - c_k[None, :]),
                           mask=bias_rows[:, None] & (n < n_tok)[None, :], other=float("nan")).to(tl.float32)
            logit = (logit * SCALE + bias) * LOG2E
            logit = tl.where(k_ok[None, :], logit, float("-inf"))  # padded keys leave the softmax
            m_new = tl.maximum(m_i, tl.max(logit, 1))
            # a block of padding only (possible in LDA) keeps m at -inf: shift by 0 to avoid inf - inf
            m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp2(m_i - m_shift)
            p = tl.exp2(logit - m_shift[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
            m_i = m_new
        # l_i > 0 on every row of a group holding a real token; a group of padding only (CrossFormer++ LDA
        # on odd maps) gives 0/0 here, on rows that q_ok never lets be written
        out = acc / l_i[:, None]
        tl.store(out_img + tok_q[:, None] * C + d[None, :], out.to(out_ptr.dtype.element_ty),
                 mask=q_ok[:, None] & d_ok[None, :])


def _require_triton() -> None:
    if triton is None:
        raise RuntimeError(TRITON_MISSING)


def grouped_attention_triton(qkv: Tensor, table: Tensor, num_heads: int, mode: str, group_size: int,
                             interval: int, scale: float, family: Family | int = 0, *, block_m: int | None = None,
                             block_n: int | None = None, num_warps: int = 4, out: Tensor | None = None) -> Tensor:
    """Run the kernel: qkv ``[B, H, W, 3C]`` (fp32/fp16), centred table ``[heads, TH, TW]`` -> ``[B, H, W, C]``.

    The layout is computed here in Python ints and passed as scalars. ``block_m`` / ``block_n``
    override the query/key block sizes (the tests use small blocks to exercise several key blocks).
    ``out`` (contiguous ``[B, H, W, C]``, qkv's dtype) receives the result in place, e.g. a TensorRT buffer.
    """
    _require_triton()
    lay = check_inputs(tuple(qkv.shape), qkv.dtype, tuple(table.shape), table.dtype, num_heads, mode,
                       group_size, interval, family)
    interpret = type(grouped_attention_kernel).__name__ == "InterpretedFunction"
    if qkv.device.type != "cuda" and not interpret:
        raise RuntimeError("the Triton kernel needs CUDA tensors, or TRITON_INTERPRET=1 set before importing "
                           "crossformer_deploy.plugins.triton_kernel to run it on the CPU")
    qkv, table = qkv.contiguous(), table.contiguous()
    B, H, W, C3 = qkv.shape
    head_dim = C3 // 3 // num_heads
    sc = layout_scalars(H, W, group_size, interval, mode == "lda", as_family(family))
    n_tok = sc["gh"] * sc["gw"]
    bm, bn = block_sizes(n_tok)
    bm, bn = block_m or bm, block_n or bn
    assert (sc["gh"], sc["gw"], sc["s"]) == (lay.gh, lay.gw, lay.s)  # the kernel's layout is the model's
    if out is None:
        out = qkv.new_empty(B, H, W, C3 // 3)
    elif out.shape != (B, H, W, C3 // 3) or out.dtype != qkv.dtype or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous {qkv.dtype} tensor of shape {(B, H, W, C3 // 3)}")
    grid = (B * sc["nh"] * sc["nw"], num_heads, triton.cdiv(n_tok, bm))
    grouped_attention_kernel[grid](
        qkv, table, H, W, sc["gh"], sc["gw"], sc["nh"], sc["nw"], sc["s"],
        table.shape[1], table.shape[2], out,
        NUM_HEADS=num_heads, HEAD_DIM=head_dim, SCALE=float(scale),
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=builtins.max(16, triton.next_power_of_2(head_dim)),
        num_warps=num_warps,
    )
    return out


_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16"}
# The kernel's int32 scalar arguments, in order (TensorRT passes them as the AOT plugin's extra args).
SCALAR_ARGS = ("H", "W", "gh", "gw", "nh", "nw", "s", "TH", "TW")


def aot_ptx_version(arch: int) -> int:
    """The PTX ISA version to emit for compute capability ``arch`` (e.g. 90): the oldest that the
    architecture allows, not the newest that Triton's bundled ptxas knows.

    TensorRT embeds the PTX in the engine and the driver JIT-compiles it when the engine loads, so the
    PTX ISA decides the oldest driver that can run the engine. Triton 3.9 writes ``.version 9.4`` by
    default, which CUDA 12 drivers (those of tensorrt-cu12) refuse; ISA 8.0 is CUDA 12.0's and the first
    with sm_90a, 8.6 / 8.7 the first with sm_100 / sm_120.
    """
    return 87 if arch >= 120 else 86 if arch >= 100 else 80


def _ast_source(fn: Any, signature: dict[str, str], constexprs: dict[str, Any]) -> Any:
    """``triton.compiler.ASTSource`` across Triton releases: 3.3 renamed ``constants=`` to ``constexprs=``."""
    params = inspect.signature(triton.compiler.ASTSource.__init__).parameters
    if "constexprs" in params:
        return triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    if "constants" in params:  # Triton < 3.3: same dict, older name
        return triton.compiler.ASTSource(fn=fn, signature=signature, constants=constexprs)
    raise RuntimeError(f"this Triton ({triton.__version__}) has an ASTSource that takes neither constexprs= nor "
                       "constants=; install triton>=3.3")


def compile_aot(qkv_dtype: torch.dtype, table_dtype: torch.dtype, num_heads: int, head_dim: int, scale: float,
                block_m: int = 64, block_n: int = 64, num_warps: int = 4, target: Any = None,
                max_shared: int = 48 * 1024) -> Any:
    """Compile the kernel ahead of time (no GPU needed when ``target`` is given, e.g.
    ``triton.backends.compiler.GPUTarget("cuda", 90, 32)``; default: the current device).

    Returns Triton's CompiledKernel: ``.asm["ptx"]``, ``.metadata.name``, ``.metadata.num_warps``,
    ``.metadata.shared``. Layout scalars stay runtime arguments, so one PTX serves every H, W;
    heads, head_dim, scale and the block sizes are baked in. Software-pipelining stages are reduced
    until the kernel needs at most ``max_shared`` bytes of shared memory: above 48 KiB a launcher must
    opt in (cuFuncSetAttribute), which Triton's launcher does and TensorRT's AOT launcher may not.
    The PTX ISA is ``aot_ptx_version(arch)``. Triton's hidden trailing parameters are still declared:
    ``ptx.trim_to_abi`` removes them for TensorRT.
    """
    _require_triton()
    fn = grouped_attention_kernel
    if not isinstance(fn, triton.runtime.JITFunction):  # interpreter mode wraps it; AOT needs the JIT form
        fn = triton.runtime.JITFunction(fn.fn)
    ptr = "*" + _TRITON_DTYPE[qkv_dtype]
    signature = {"qkv_ptr": ptr, "table_ptr": "*" + _TRITON_DTYPE[table_dtype]}
    signature.update({name: "i32" for name in SCALAR_ARGS})
    signature["out_ptr"] = ptr
    constexprs = dict(NUM_HEADS=num_heads, HEAD_DIM=head_dim, SCALE=float(scale), BLOCK_M=block_m, BLOCK_N=block_n,
                      BLOCK_D=builtins.max(16, triton.next_power_of_2(head_dim)))
    src = _ast_source(fn, signature, constexprs)
    if target is None:
        target = triton.runtime.driver.active.get_current_target()
    options = {"num_warps": num_warps, "ptx_version": aot_ptx_version(int(target.arch))}
    for num_stages in (3, 2, 1):
        kernel = triton.compile(src, target=target, options={**options, "num_stages": num_stages})
        if kernel.metadata.shared <= max_shared:
            break
    return kernel
