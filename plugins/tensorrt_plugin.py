"""TensorRT registration of ``crossformer::GroupedAttention`` (``tensorrt.plugin``, TensorRT >= 10.6).

UNTESTED HERE: TensorRT cannot be installed on the development machines. This module is written
against the documented ``tensorrt.plugin`` API (``register`` / ``autotune`` / ``aot_impl`` / ``impl``,
``KernelLaunchParams``, ``SymInt32``, ``SymIntExprs``) and NVIDIA's quickly-deployable-plugin samples;
the only part exercised here is the Triton ahead-of-time compilation it calls
(``triton_kernel.compile_aot``). See README.md ("TensorRT") for what is and is not verified.

Importing this module needs neither TensorRT nor Triton; ``register()`` needs both (at engine build
time) and says which one is missing. With the ahead-of-time implementation the PTX is embedded in
the serialized engine, so running the plan needs neither Python nor this module.
"""
# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations of the
# decorated functions as real classes (issubclass), not strings.
import importlib.util
from types import SimpleNamespace
from typing import Any

PLUGIN_ID = "crossformer::GroupedAttention"
PLUGIN_NAMESPACE, PLUGIN_NAME = PLUGIN_ID.split("::")

# Tactics TensorRT may time at build time: (BLOCK_M, BLOCK_N) of the kernel.
TACTIC_BLOCKS = {1: (64, 64), 2: (32, 32)}
# (qkv, table, output) dtypes the op accepts; the table is fp32 or qkv's dtype.
IO_TYPES = ("FP32, FP32, FP32", "FP16, FP32, FP16", "FP16, FP16, FP16")

_registered = False


def missing_requirements() -> list[str]:
    """What ``register()`` would complain about: [] when TensorRT (with tensorrt.plugin) and Triton import."""
    missing = [name for name in ("tensorrt", "triton") if importlib.util.find_spec(name) is None]
    if "tensorrt" not in missing and importlib.util.find_spec("tensorrt.plugin") is None:
        missing.append("tensorrt.plugin (TensorRT >= 10.6)")
    return missing


def register(jit: bool = False) -> None:
    """Register the plugin in TensorRT's plugin registry (idempotent). Call before parsing/building.

    Always defines the ahead-of-time implementation (Triton PTX embedded in the engine). ``jit=True``
    also defines a Python ``impl`` (runs through PyTorch at inference, so the plan then needs Python);
    with both defined, TensorRT needs a preference: the ONNX node attribute ``aot=1`` or the network
    flag ``PREFER_AOT_PYTHON_PLUGINS``.
    """
    global _registered
    if _registered:
        return
    missing = missing_requirements()
    if missing:
        raise RuntimeError(f"{PLUGIN_ID} needs {', '.join(missing)} to register (engine build time); "
                           "install TensorRT >= 10.6 (`pip install tensorrt`) and `pip install triton`")
    import tensorrt.plugin as trtp

    if not hasattr(trtp, "aot_impl"):
        raise RuntimeError(f"{PLUGIN_ID}: this TensorRT has no tensorrt.plugin.aot_impl (needs TensorRT >= 10.6)")
    _define(trtp, jit)
    _registered = True


def _check_attrs(num_heads: int, mode: str, group_size: int, interval: int) -> None:
    if mode not in ("sda", "lda"):
        raise ValueError(f"{PLUGIN_ID}: mode must be 'sda' or 'lda', got {mode!r}")
    if min(num_heads, group_size, interval) < 1:
        raise ValueError(f"{PLUGIN_ID}: num_heads, group_size and interval must be >= 1")


def _define(trtp: Any, jit: bool) -> None:
    import tensorrt as trt
    import torch

    from . import triton_kernel as tk

    torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16}
    sym_ops = SimpleNamespace(min=trtp.min, max=trtp.max, cdiv=trtp.cdiv)

    @trtp.register(PLUGIN_ID)
    def describe(qkv: trtp.TensorDesc, table: trtp.TensorDesc, num_heads: int, mode: str, group_size: int,
                 interval: int, scale: float) -> trtp.TensorDesc:
        # [B, H, W, 3C] -> [B, H, W, C], qkv's dtype
        _check_attrs(num_heads, mode, group_size, interval)
        s = qkv.shape_expr
        return trtp.from_shape_expr((s[0], s[1], s[2], s[3] // 3), dtype=qkv.dtype)

    @trtp.autotune(PLUGIN_ID)
    def autotune(qkv: trtp.TensorDesc, table: trtp.TensorDesc,
                 outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(types, "LINEAR", list(TACTIC_BLOCKS)) for types in IO_TYPES]

    @trtp.aot_impl(PLUGIN_ID)
    def aot_impl(qkv: trtp.TensorDesc, table: trtp.TensorDesc, num_heads: int, mode: str, group_size: int,
                 interval: int, scale: float, outputs: tuple[trtp.TensorDesc],
                 tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        _check_attrs(num_heads, mode, group_size, interval)
        B, H, W, C3 = qkv.shape_expr
        # heads and head_dim are compile-time constants of the kernel: the channel dim must be static
        if not C3.is_constant:
            raise ValueError(f"{PLUGIN_ID}: the last dim of qkv (3C) must be static in the engine profile")
        head_dim = C3.constant_value() // 3 // num_heads
        block_m, block_n = TACTIC_BLOCKS.get(tactic, TACTIC_BLOCKS[1])
        kernel = tk.compile_aot(torch_dtype[qkv.dtype], torch_dtype[table.dtype], num_heads, head_dim, scale,
                                block_m=block_m, block_n=block_n)
        # the layout as symbolic expressions of H, W: evaluated by TensorRT at each enqueue
        lay = tk.layout_scalars(H, W, group_size, interval, mode == "lda", ops=sym_ops)
        _, TH, TW = table.shape_expr
        scalars = dict(lay, H=H, W=W, TH=TH, TW=TW)
        extra_args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(scalars[n]) for n in tk.SCALAR_ARGS])
        launch = trtp.KernelLaunchParams()
        launch.grid_x = B * lay["nh"] * lay["nw"]
        launch.grid_y = num_heads
        launch.grid_z = trtp.cdiv(lay["gh"] * lay["gw"], block_m)
        launch.block_x = kernel.metadata.num_warps * 32
        launch.shared_mem = kernel.metadata.shared
        return kernel.metadata.name, kernel.asm["ptx"], launch, extra_args

    if not jit:
        return

    @trtp.impl(PLUGIN_ID)
    def impl(qkv: trtp.Tensor, table: trtp.Tensor, num_heads: int, mode: str, group_size: int, interval: int,
             scale: float, outputs: tuple[trtp.Tensor], stream: int, tactic: int) -> None:
        block_m, block_n = TACTIC_BLOCKS.get(tactic, TACTIC_BLOCKS[1])
        q = torch.as_tensor(qkv, device="cuda")
        t = torch.as_tensor(table, device="cuda")
        out = torch.as_tensor(outputs[0], device="cuda")
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            tk.grouped_attention_triton(q, t, num_heads, mode, group_size, interval, scale,
                                        block_m=block_m, block_n=block_n, out=out)
