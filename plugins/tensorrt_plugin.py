"""TensorRT registration of ``crossformer::GroupedAttention`` (``tensorrt.plugin``, TensorRT >= 10.9).

The plugin has an ahead-of-time implementation only: ``aot_impl`` compiles the Triton kernel to PTX,
trims Triton's hidden parameters to TensorRT's launch ABI (``ptx.trim_to_abi``) and returns it with the
launch grid and the layout scalars as symbolic expressions of B, H, W. The PTX is embedded in the engine,
so running the plan needs neither Python nor this module.

Verified without TensorRT's libraries (tests/plugins/test_tensorrt_plugin.py): these functions run through the
real ``tensorrt.plugin`` package of several ``tensorrt-cu12-bindings`` releases on a fake of the compiled
core, fed plugin fields exactly as TensorRT's ONNX parser builds them. How the parser hands attributes over
(onnx-tensorrt ``loadFields``) shapes the declarations below:
- INT arrives as int32[1], FLOAT as float32[1]. Releases 10.9-10.16 of ``tensorrt.plugin`` convert a field
  declared ``int`` with ``int(array)``, which NumPy >= 2.4 refuses; a field declared as a NumPy array is
  converted with ``astype`` in every release. So numbers are declared as 1-element arrays.
- STRING arrives with its C terminator counted in the length: ``mode`` is ``"lda\\x00"``. Stripped here,
  or ``mode == "lda"`` would be False and every LDA block would run the SDA layout.

Importing this module needs neither TensorRT nor Triton; ``register()`` needs both (at engine build
time) and says which one is missing.
"""
# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations of the
# decorated functions as real classes (issubclass), not strings.
import importlib
import importlib.util
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from crossformer_deploy.plugins import op
from crossformer_deploy.plugins.op import OpAttrs

PLUGIN_ID = op.OP_ID
PLUGIN_NAMESPACE, PLUGIN_NAME = op.DOMAIN, op.NAME
FIELDS = op.FIELDS
# tensorrt.plugin.aot_impl, KernelLaunchParams and SymIntExprs first ship in TensorRT 10.9.
MIN_TENSORRT = "10.9"

# Tactics TensorRT may time at build time: (BLOCK_M, BLOCK_N) of the kernel.
TACTIC_BLOCKS = {1: (64, 64), 2: (32, 32)}
# (qkv, table, output) dtypes the op accepts; the table is fp32 or qkv's dtype.
IO_TYPES = ("FP32, FP32, FP32", "FP16, FP32, FP16", "FP16, FP16, FP16")

# GPU target of the AOT compile; None = the GPU of the building process (a TensorRT engine is built on
# the GPU it is for). Tests set a triton GPUTarget to compile without a GPU.
aot_target: Any = None

IntAttr = npt.NDArray[np.int32]
FloatAttr = npt.NDArray[np.float32]


def missing_requirements() -> list[str]:
    """What ``register()`` would complain about: [] when TensorRT (with tensorrt.plugin) and Triton import."""
    missing = [name for name in ("tensorrt", "triton") if importlib.util.find_spec(name) is None]
    if "tensorrt" not in missing and importlib.util.find_spec("tensorrt.plugin") is None:
        missing.append(f"tensorrt.plugin (TensorRT >= {MIN_TENSORRT})")
    return missing


def register() -> None:
    """Register the plugin in TensorRT's plugin registry (idempotent). Call before parsing/building."""
    missing = missing_requirements()
    if missing:
        raise RuntimeError(f"{PLUGIN_ID} needs {', '.join(missing)} to register (engine build time); "
                           f"install TensorRT >= {MIN_TENSORRT} (`pip install 'tensorrt>=10.9'`) and "
                           "`pip install 'triton>=3.3'`")
    import tensorrt.plugin as trtp

    if not hasattr(trtp, "aot_impl"):
        version = getattr(importlib.import_module("tensorrt"), "__version__", "?")
        raise RuntimeError(f"{PLUGIN_ID} needs TensorRT >= {MIN_TENSORRT} (tensorrt.plugin.aot_impl); "
                           f"this is TensorRT {version}")
    if _defined(trtp):
        return
    _define(trtp)


def _defined(trtp: Any) -> bool:
    # tensorrt.plugin.op.<namespace>.<name> exists once registered; it raises AttributeError otherwise
    return hasattr(trtp.op, PLUGIN_NAMESPACE) and hasattr(getattr(trtp.op, PLUGIN_NAMESPACE), PLUGIN_NAME)


def _define(trtp: Any) -> None:
    import tensorrt as trt  # register() checked it is here


    torch_dtype = {trt.float32: torch.float32, trt.float16: torch.float16}
    sym_ops = SimpleNamespace(min=trtp.min, max=trtp.max, cdiv=trtp.cdiv)

    @trtp.register(PLUGIN_ID)
    def describe(qkv: trtp.TensorDesc, table: trtp.TensorDesc, num_heads: IntAttr, mode: str, group_size: IntAttr,
                 interval: IntAttr, scale: FloatAttr, family: IntAttr) -> trtp.TensorDesc:
        # [B, H, W, 3C] -> [B, H, W, C], qkv's dtype
        OpAttrs.of(num_heads, mode, group_size, interval, scale, family)
        s = qkv.shape_expr
        return trtp.from_shape_expr((s[0], s[1], s[2], s[3] // 3), dtype=qkv.dtype)

    @trtp.autotune(PLUGIN_ID)
    def autotune(qkv: trtp.TensorDesc, table: trtp.TensorDesc,
                 outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(types, "LINEAR", list(TACTIC_BLOCKS)) for types in IO_TYPES]

    @trtp.aot_impl(PLUGIN_ID)
    def aot_impl(qkv: trtp.TensorDesc, table: trtp.TensorDesc, num_heads: IntAttr, mode: str, group_size: IntAttr,
                 interval: IntAttr, scale: FloatAttr, family: IntAttr, outputs: tuple[trtp.TensorDesc],
                 tactic: int) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        a = OpAttrs.of(num_heads, mode, group_size, interval, scale, family)
        B, H, W, C3 = qkv.shape_expr
        # heads and head_dim are compile-time constants of the kernel: the channel dim must be static
        if not C3.is_constant:
            raise ValueError(f"{PLUGIN_ID}: the last dim of qkv (3C) must be static in the engine profile")
        kernel = aot_kernel(a, torch_dtype[qkv.dtype], torch_dtype[table.dtype], C3.constant_value(), tactic)
        _, TH, TW = table.shape_expr
        # symbolic expressions of B, H, W: TensorRT evaluates them at each enqueue
        grid, extra = launch_args(kernel, a, B, H, W, TH, TW, ops=sym_ops)
        launch = trtp.KernelLaunchParams()
        launch.grid_x, launch.grid_y, launch.grid_z = grid
        launch.block_x = kernel.block_x
        launch.shared_mem = kernel.shared_mem
        return kernel.name, kernel.ptx, launch, trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in extra])


@dataclass(frozen=True)
class AotKernel:
    """What ``aot_impl`` hands TensorRT besides the launch grid: PTX trimmed to TensorRT's ABI."""

    name: str
    ptx: str
    block_x: int  # threads per block
    shared_mem: int  # bytes of dynamic shared memory
    block_m: int  # queries per program (the grid's z extent divides by it)


def aot_kernel(a: OpAttrs, qkv_dtype: Any, table_dtype: Any, c3: int, tactic: int) -> AotKernel:
    """Compile the kernel for one (dtypes, heads, head_dim, scale, tactic) and trim its PTX to the parameters
    TensorRT passes. ``benchmarks/gpu_check.py`` launches exactly this on a GPU."""
    # here, not at the top: the kernel module imports Triton, which only an engine build needs
    from crossformer_deploy.plugins import ptx as ptx_abi
    from crossformer_deploy.plugins import triton_kernel as tk

    if c3 % 3 or (c3 // 3) % a.num_heads:
        raise ValueError(f"{PLUGIN_ID}: last dim of qkv {c3} is not 3 * num_heads * head_dim (num_heads={a.num_heads})")
    block_m, block_n = TACTIC_BLOCKS.get(tactic, TACTIC_BLOCKS[1])
    k = tk.compile_aot(qkv_dtype, table_dtype, a.num_heads, c3 // 3 // a.num_heads, a.scale, block_m=block_m,
                       block_n=block_n, target=aot_target)
    name = k.metadata.name
    ptx = ptx_abi.trim_to_abi(k.asm["ptx"], name, op.NUM_INPUTS + len(tk.SCALAR_ARGS) + op.NUM_OUTPUTS)
    return AotKernel(name, ptx, k.metadata.num_warps * 32, k.metadata.shared, block_m)


def launch_args(kernel: AotKernel, a: OpAttrs, B: Any, H: Any, W: Any, TH: Any, TW: Any,
                ops: SimpleNamespace | None = None) -> tuple[tuple, list]:
    """((grid_x, grid_y, grid_z), extra args in the kernel's order) for a B x H x W input and a TH x TW table.

    Python ints with the default ``ops``; TensorRT shape expressions with ``trtp``'s min/max/cdiv (the same
    arithmetic, evaluated by TensorRT at enqueue).
    """
    from crossformer_deploy.plugins import triton_kernel as tk  # Triton: see aot_kernel

    ops = ops or tk.INT_OPS
    lay = tk.layout_scalars(H, W, a.group_size, a.interval, a.lda, a.family, ops=ops)
    scalars = dict(lay, H=H, W=W, TH=TH, TW=TW)
    grid = (B * lay["nh"] * lay["nw"], a.num_heads, ops.cdiv(lay["gh"] * lay["gw"], kernel.block_m))
    return grid, [scalars[n] for n in tk.SCALAR_ARGS]
