"""Time the fused Triton grouped attention against PyTorch eager on CrossFormer-S attention shapes.

Needs a CUDA GPU with PyTorch and Triton (not run in CI). For every stage (dims 96/192/384/768,
heads 3/6/12/24, LDA intervals 8/4/2/1) and both block kinds (SDA, LDA) at each image size:

  eager:  crossformer_deploy.model.attention.grouped_attention (the model's path: gather-based
          grouping + padding, SDPA with the bias + key mask, ungroup + crop)
  triton: crossformer_deploy.plugins.triton_kernel.grouped_attention_triton (one fused kernel)

Both get the same qkv projection output [B, H, W, 3C]; the DPB table is precomputed (not timed).
Each case also checks the Triton output against the fp32 reference. Prints a table and writes JSON.

    python benchmarks/gpu_attention.py --sizes 224 384 --dtypes fp16 fp32 --batch 1 8 --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from dataclasses import asdict, dataclass

import torch

from crossformer_deploy.model.attention import grouped_attention
from crossformer_deploy.model.grouping import group_layout
from crossformer_deploy.plugins.reference import centred_table

# CrossFormer-S (DESIGN.md §1): per stage (dim, heads, LDA interval); group size 7; head dim 32
STAGES = [(96, 3, 8), (192, 6, 4), (384, 12, 2), (768, 24, 1)]
STRIDES = [4, 8, 16, 32]
GROUP_SIZE = 7
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
TOLERANCE = {"fp16": 2e-3, "fp32": 1e-4}


@dataclass
class Row:
    size: int
    batch: int
    dtype: str
    stage: int
    mode: str
    H: int
    W: int
    heads: int
    group: str
    eager_ms: float
    triton_ms: float
    speedup: float
    max_abs_diff: float
    ok: bool


def cuda_time_ms(fn, warmup: int, iters: int) -> float:
    """Median of per-call times measured with CUDA events."""
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


def run_case(size: int, batch: int, dtype: str, stage: int, mode: str, warmup: int, iters: int) -> Row:
    from crossformer_deploy.plugins.triton_kernel import grouped_attention_triton

    dim, heads, interval = STAGES[stage]
    H = W = size // STRIDES[stage]
    lay = group_layout(H, W, GROUP_SIZE, interval, mode == "lda")
    scale = (dim // heads) ** -0.5
    gen = torch.Generator(device="cuda").manual_seed(size * 10 + stage)
    qkv = torch.randn(batch, H, W, 3 * dim, device="cuda", generator=gen).to(DTYPES[dtype])
    # a table of the magnitude a trained DPB produces (a few units); the op takes the centred form
    flat = torch.randn((2 * lay.gh - 1) * (2 * lay.gw - 1), heads, device="cuda", generator=gen)
    table = centred_table(flat, lay.gh, lay.gw)

    def eager():
        return grouped_attention(qkv, flat, lay, heads, scale)

    def fused():
        return grouped_attention_triton(qkv, table, heads, mode, GROUP_SIZE, interval, scale)

    ref = grouped_attention(qkv.float(), flat, lay, heads, scale)
    diff = (fused().float() - ref).abs().max().item()
    eager_ms = cuda_time_ms(eager, warmup, iters)
    triton_ms = cuda_time_ms(fused, warmup, iters)
    return Row(size, batch, dtype, stage + 1, mode, H, W, heads, f"{lay.gh}x{lay.gw}", eager_ms, triton_ms,
               eager_ms / triton_ms, diff, diff <= TOLERANCE[dtype])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 384], help="square image sizes")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes")
    ap.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=["fp16", "fp32"])
    ap.add_argument("--modes", nargs="+", choices=["sda", "lda"], default=["sda", "lda"])
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--json", default="gpu_attention.json", help="where to write the results")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("gpu_attention.py needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    import triton

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 eager must really be fp32
    rows = []
    header = (f"{'size':>4} {'B':>3} {'dtype':>5} {'st':>2} {'mode':>4} {'map':>7} {'group':>6} "
              f"{'eager ms':>9} {'triton ms':>9} {'speedup':>7} {'max|d|':>9}")
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        for batch in args.batch:
            for dtype in args.dtypes:
                for stage in range(len(STAGES)):
                    for mode in args.modes:
                        r = run_case(size, batch, dtype, stage, mode, args.warmup, args.iters)
                        rows.append(r)
                        print(f"{r.size:>4} {r.batch:>3} {r.dtype:>5} {r.stage:>2} {r.mode:>4} "
                              f"{f'{r.H}x{r.W}':>7} {r.group:>6} {r.eager_ms:>9.3f} {r.triton_ms:>9.3f} "
                              f"{r.speedup:>6.2f}x {r.max_abs_diff:>9.2e}{'' if r.ok else '  MISMATCH'}")
    meta = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "triton": triton.__version__,
            "python": platform.python_version(), "warmup": args.warmup, "iters": args.iters,
            "tolerance": TOLERANCE}
    with open(args.json, "w") as f:
        json.dump({"meta": meta, "rows": [asdict(r) for r in rows]}, f, indent=1)
    print(f"wrote {args.json}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
