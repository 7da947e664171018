"""What ``gpu_check.py`` runs: the layout cases (CrossFormer and CrossFormer++), CrossFormer-S's and CrossFormer++-S's
attention blocks, the AOT launch plan, timing.

Everything here that needs no GPU (cases, launch plans, the PTX parameter list) is tested on the CPU by
tests/benchmarks/test_gpu_check.py.
"""
from __future__ import annotations

import configparser
import os
import statistics
import sys
import tempfile
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bootstrap() -> None:
    """Make ``crossformer_deploy`` importable from this checkout without installing it: the GPU machine has
    PyTorch, Triton and CuPy, not our other dependencies. The package is laid out as a wheel installs it
    (export/, plugins/ and engines/ linked into crossformer_deploy/, as setup.cfg's package_dir maps them) in a
    temporary folder put first on sys.path."""
    try:
        import crossformer_deploy.plugins  # noqa: F401  (installed, editable or not)
        return
    except ImportError:
        for name in [m for m in sys.modules if m == "crossformer_deploy" or m.startswith("crossformer_deploy.")]:
            del sys.modules[name]
    site = tempfile.mkdtemp(prefix="crossformer-layout-")
    pkg = os.path.join(site, "crossformer_deploy")
    os.mkdir(pkg)
    own = os.path.join(ROOT, "crossformer_deploy")
    for name in os.listdir(own):
        os.symlink(os.path.join(own, name), os.path.join(pkg, name))
    for sub, folder in package_dir().items():
        os.symlink(os.path.join(ROOT, folder), os.path.join(pkg, sub))
    sys.path.insert(0, site)


def package_dir() -> dict[str, str]:
    """setup.cfg's package_dir below crossformer_deploy: {"export": "export", ...}."""
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    out = {}
    for line in cfg["options"]["package_dir"].strip().splitlines():
        name, _, folder = (p.strip() for p in line.partition("="))
        if name.startswith("crossformer_deploy."):
            out[name.removeprefix("crossformer_deploy.")] = folder
    return out


@dataclass(frozen=True)
class Case:
    """One grouped-attention call: qkv [B, H, W, 3 * heads * head_dim], centred table for the group shape.
    ``family``: the op's attribute, 0 CrossFormer, 1 CrossFormer++ (its layout rule)."""

    name: str
    B: int
    H: int
    W: int
    heads: int
    head_dim: int
    mode: str
    interval: int
    group_size: int = 7
    table_pad: int = 1  # extra NaN rows/cols around the exact table: a read outside the window poisons the output
    family: int = 0


# Every layout kind of the op (plugins/README.md "Semantics").
LAYOUT_CASES = [
    Case("sda_exact_14x14", 2, 14, 14, 3, 32, "sda", 8),
    Case("sda_padded_13x19", 1, 13, 19, 2, 32, "sda", 8),
    Case("lda_padded_rect_13x19_i4", 2, 13, 19, 2, 32, "lda", 4),
    Case("lda_stride8_32x40", 1, 32, 40, 3, 32, "lda", 8),
    Case("lda_small_map_7x9", 2, 7, 9, 4, 32, "lda", 1),
    Case("sda_small_map_4x6", 1, 4, 6, 2, 32, "sda", 4),
    Case("lda_full_8x10_i1_two_key_blocks", 1, 8, 10, 2, 32, "lda", 1, table_pad=0),
    # CrossFormer++ (family 1): G x G groups, LDA padded to a multiple of G * I, a small map is one H x W group
    Case("pp_lda_padded_13x19_g4_i2", 2, 13, 19, 2, 32, "lda", 2, group_size=4, family=1),
    Case("pp_lda_all_padding_groups_17x9_g4_i4", 2, 17, 9, 3, 32, "lda", 4, group_size=4, family=1),
    Case("pp_sda_padded_13x19_g4", 1, 13, 19, 2, 32, "sda", 4, group_size=4, family=1),
    Case("pp_lda_small_map_6x10_g14_one_group", 2, 6, 10, 4, 32, "lda", 1, group_size=14, family=1),
    Case("pp_sda_small_map_5x7_g7_one_group", 1, 5, 7, 2, 32, "sda", 1, group_size=7, family=1),
    Case("pp_lda_small_map_14x26_g14_n364_key_blocks", 1, 14, 26, 3, 32, "lda", 1, group_size=14, family=1,
         table_pad=0),
]

def s_blocks(size: int = 224) -> list[tuple[Case, int]]:
    """(attention call, how many blocks of S make it) for an image of ``size`` x ``size``, batch 1."""
    return _blocks("s", "s", size)


def pp_s_blocks(size: int = 224) -> list[tuple[Case, int]]:
    """The same for CrossFormer++-S: at 224 stage 1-2 LDA pad (56 -> 64, 28 -> 32) and stages 3-4 meet the
    small-map rule (14 <= 14, 7 <= 7: one group of the whole map)."""
    return _blocks("pp_s", "pp-s", size)


def _blocks(prefix: str, variant: str, size: int) -> list[tuple[Case, int]]:
    """One SDA and one LDA call per stage, read off the model's own config (width, heads, G, I, depth)."""
    from crossformer_deploy.model.config import get_config

    cfg = get_config(variant)
    out = []
    for i in range(cfg.num_stages):
        side = size // (4 * 2**i)
        heads = cfg.num_heads[i]
        for mode in ("sda", "lda"):
            out.append((Case(f"{prefix}{i + 1}_{mode}_{side}x{side}", 1, side, side, heads, cfg.stage_dim(i) // heads,
                             mode, cfg.intervals[i], group_size=cfg.group_sizes[i], table_pad=0,
                             family=cfg.family.attr), cfg.depths[i] // 2))
    return out


def layout(case: Case):
    from crossformer_deploy.model.config import Family
    from crossformer_deploy.model.grouping import group_layout

    lda = case.mode == "lda"
    return group_layout(case.H, case.W, case.group_size, case.interval, lda, Family.from_attr(case.family))


def table_shape(case: Case) -> tuple[int, int, int]:
    lay = layout(case)
    return case.heads, 2 * lay.gh - 1 + 2 * case.table_pad, 2 * lay.gw - 1 + 2 * case.table_pad


@dataclass
class LaunchPlan:
    """The kernel TensorRT would load and the launch it would make, as plain numbers."""

    name: str
    ptx: str
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    args: list[tuple[str, object]]  # ("ptr", tensor name) or ("i32", value), in launch order


def launch_plan(case: Case, qkv_dtype, table_dtype, tactic: int) -> LaunchPlan:
    """Exactly what the plugin's ``aot_impl`` gives TensorRT (``tensorrt_plugin.aot_kernel`` and
    ``launch_args``, the same functions), evaluated at this case's B, H, W: TensorRT passes the input
    pointers, the extra arguments, the output pointer."""
    from crossformer_deploy.plugins import tensorrt_plugin as tp
    from crossformer_deploy.plugins.op import OpAttrs

    a = OpAttrs.of(case.heads, case.mode, case.group_size, case.interval, case.head_dim ** -0.5, case.family)
    kernel = tp.aot_kernel(a, qkv_dtype, table_dtype, 3 * case.heads * case.head_dim, tactic)
    _, th, tw = table_shape(case)
    grid, extra = tp.launch_args(kernel, a, case.B, case.H, case.W, th, tw)
    args = [("ptr", "qkv"), ("ptr", "table"), *[("i32", int(v)) for v in extra], ("ptr", "out")]
    return LaunchPlan(kernel.name, kernel.ptx, tuple(int(g) for g in grid), (kernel.block_x, 1, 1),
                      kernel.shared_mem, args)


def inputs(case: Case, dtype, table_dtype, device: str = "cuda", seed: int = 0):
    """(qkv, centred table with NaN padding, the reference's fp32 output on the same rounded inputs)."""
    import torch

    from crossformer_deploy.plugins.reference import grouped_attention_reference, pad_table

    lay = layout(case)
    g = torch.Generator().manual_seed(seed + case.H * 100 + case.W)
    qkv = torch.randn(case.B, case.H, case.W, 3 * case.heads * case.head_dim, generator=g).to(dtype)
    # a bias of the magnitude a trained DPB gives (a few units), so a misplaced bias shows
    exact = 2.0 * torch.randn(case.heads, 2 * lay.gh - 1, 2 * lay.gw - 1, generator=g)
    _, th, tw = table_shape(case)
    table = pad_table(exact, th, tw).to(table_dtype)
    ref = grouped_attention_reference(qkv.float(), table.float(), case.heads, case.mode, case.group_size,
                                      case.interval, case.head_dim ** -0.5, case.family)
    return qkv.to(device), table.to(device), ref.to(device)


def eager_attention(qkv, flat_table, lay, heads: int, scale: float):
    """PyTorch eager attention of one block, written out: gather groups, q k^T, + bias + key mask, softmax,
    x v, ungroup (the model's own helpers for the index work)."""
    import torch

    from crossformer_deploy.model.attention import layout_indices
    from crossformer_deploy.model.grouping import group, ungroup
    from crossformer_deploy.model.position_bias import gather_bias

    B, C = qkv.shape[0], qkv.shape[-1] // 3
    index, valid, inverse, offsets = layout_indices(lay, qkv.device)
    g = group(qkv, index)
    nG, N = g.shape[1], g.shape[2]
    q, k, v = g.reshape(B, nG, N, 3, heads, C // heads).permute(3, 0, 1, 4, 2, 5)
    bias = gather_bias(flat_table, offsets).unsqueeze(0) + torch.where(valid, 0.0, -1e4)[:, None, None, :]
    attn = torch.softmax((q @ k.transpose(-1, -2)) * scale + bias.to(q.dtype), dim=-1)
    return ungroup((attn @ v).transpose(2, 3).reshape(B, nG, N, C), inverse)


def cuda_ms(fn, warmup: int = 10, iters: int = 50) -> float:
    """Median time of ``fn`` in ms, each call between two CUDA events."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)
