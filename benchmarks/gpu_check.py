"""GPU checks for a lent H100/H200: one command, a table on stdout, JSON in benchmarks/gpu/<gpu-name>.json.

    python benchmarks/gpu_check.py                 # all six sections, about 8-10 minutes with max-autotune compiles

Needs PyTorch with CUDA, Triton and CuPy; not TensorRT, not ONNX Runtime, not an install of this package
(the checkout is imported as is). Sections, each recorded even if another fails:
  1. kernel:  the Triton kernel (Triton's own launcher) vs the PyTorch reference, fp32 and fp16, every layout kind
              of both families (CrossFormer and CrossFormer++, gpu_cases.LAYOUT_CASES);
  2. aot_abi: the PTX exactly as the TensorRT plugin builds it (trimmed to TensorRT's ABI), loaded with CuPy
              and launched with exactly TensorRT's arguments, grid, block and shared memory, vs the reference;
  3. blocks:  fused kernel vs PyTorch eager attention and vs SDPA with the bias as a float mask, for every
              attention block of CrossFormer-S at 224, batch 1, 8, 64, fp16; sums weighted by block counts;
              the same for CrossFormer++-S (reported beside, not a goal);
  4. model:   CrossFormer-S (perturbed random weights), torch-cuda fp16 vs eager fp32 on CUDA: cosine, top-1
              agreement, batch-1 latency with CUDA graphs, batch-64 throughput;
  5. model_pp: the same for CrossFormer++-S (fp16 accuracy held to the same bars; latency reported);
  6. peers:   our path vs fp16 eager, eager + CUDA graphs and torch.compile (reduce-overhead, max-autotune), and
              our fused model compiled the same ways; S and CrossFormer++-S, batch 1, 64, 8, 256 (gpu_peers.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import sys
import tempfile
import time
import traceback

import gpu_cases as gc
import gpu_peers as gp

BARS = {"fp32": 1e-5, "fp16": 2e-3}  # max abs diff vs the fp32 reference (plugins/README.md)
GOALS = {"blocks_speedup_b8": 2.0, "latency_b1_ms": 1.0, "cosine": 0.9995, "top1": 0.995}


def gpu_file_name(gpu: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") + ".json"


def check_kernel(torch) -> list[dict]:
    from crossformer_deploy.plugins.triton_kernel import grouped_attention_triton

    rows = []
    for case in gc.LAYOUT_CASES:
        for dt, tdt in (("fp32", "fp32"), ("fp16", "fp32"), ("fp16", "fp16")):
            qkv, table, ref = gc.inputs(case, getattr(torch, _TORCH[dt]), getattr(torch, _TORCH[tdt]))
            out = grouped_attention_triton(qkv, table, case.heads, case.mode, case.group_size, case.interval,
                                           case.head_dim ** -0.5, case.family)
            d = (out.float() - ref).abs().max().item()
            rows.append({"case": case.name, "qkv": dt, "table": tdt, "max_abs": d, "ok": d <= BARS[dt]})
    return rows


def check_aot_abi(torch) -> list[dict]:
    import cupy as cp
    import numpy as np

    rows = []
    for case in gc.LAYOUT_CASES:
        for dt, tdt in (("fp32", "fp32"), ("fp16", "fp32"), ("fp16", "fp16")):
            for tactic in (1, 2):
                plan = gc.launch_plan(case, getattr(torch, _TORCH[dt]), getattr(torch, _TORCH[tdt]), tactic)
                qkv, table, ref = gc.inputs(case, getattr(torch, _TORCH[dt]), getattr(torch, _TORCH[tdt]))
                out = torch.full(ref.shape, float("nan"), dtype=qkv.dtype, device="cuda")  # unwritten shows
                tensors = {"qkv": qkv, "table": table, "out": out}
                with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
                    f.write(plan.ptx)
                try:
                    fn = cp.RawModule(path=f.name).get_function(plan.name)
                finally:
                    os.unlink(f.name)
                args = tuple(cp.asarray(tensors[v]) if kind == "ptr" else np.int32(v) for kind, v in plan.args)
                torch.cuda.synchronize()
                fn(plan.grid, plan.block, args, shared_mem=plan.shared_mem)
                cp.cuda.Device().synchronize()
                d = (out.float() - ref).abs().max().item()
                rows.append({"case": case.name, "qkv": dt, "table": tdt, "tactic": tactic, "n_args": len(plan.args),
                             "grid": list(plan.grid), "block": plan.block[0], "shared": plan.shared_mem,
                             "max_abs": d, "ok": d <= BARS[dt]})
    return rows


def bench_blocks(torch, batches=(1, 8, 64)) -> dict:
    """Every attention block of S (``sums``, the goal) and of CrossFormer++-S (``pp_s_sums``) at 224, fp16."""
    rows, sums = [], {"s": {}, "pp-s": {}}
    for model, blocks in (("s", gc.s_blocks(224)), ("pp-s", gc.pp_s_blocks(224))):
        for b in batches:
            total = {"fused": 0.0, "eager": 0.0, "sdpa": 0.0}
            for case, count in blocks:
                ms, d = _time_block(torch, dataclasses.replace(case, B=b))
                for k in total:
                    total[k] += count * ms[k]
                rows.append({"model": model, "batch": b, "block": case.name, "count": count,
                             **{f"{k}_ms": v for k, v in ms.items()}, "max_abs_vs_fp32": d})
            sums[model][b] = {**{f"{k}_ms": v for k, v in total.items()}, "vs_eager": total["eager"] / total["fused"],
                              "vs_sdpa": total["sdpa"] / total["fused"]}
    return {"rows": rows, "sums": sums["s"], "pp_s_sums": sums["pp-s"]}


def _time_block(torch, case: gc.Case) -> tuple[dict, float]:
    """({fused, eager, sdpa}: median ms, max|fused - fp32 eager|) for one block's attention call."""
    from crossformer_deploy.model.attention import grouped_attention
    from crossformer_deploy.plugins.reference import crop_table
    from crossformer_deploy.plugins.triton_kernel import grouped_attention_triton

    qkv, table, _ = gc.inputs(case, torch.float16, torch.float32)
    lay, scale = gc.layout(case), case.head_dim ** -0.5
    flat = crop_table(table, lay.gh, lay.gw)
    fns = {"fused": lambda: grouped_attention_triton(qkv, table, case.heads, case.mode, case.group_size,
                                                     case.interval, scale, case.family),
           "eager": lambda: gc.eager_attention(qkv, flat, lay, case.heads, scale),
           "sdpa": lambda: grouped_attention(qkv, flat, lay, case.heads, scale)}
    ref = gc.eager_attention(qkv.float(), flat, lay, case.heads, scale)
    d = (fns["fused"]().float() - ref).abs().max().item()
    return {k: gc.cuda_ms(fn) for k, fn in fns.items()}, d


def bench_model(torch, n_images: int = 64, variant: str = "s") -> dict:

    import numpy as np

    from crossformer_deploy.model.factory import build_model
    from crossformer_deploy.model.synthetic import perturb
    from crossformer_deploy.runtime.parity import cosine_rows
    from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner

    model = perturb(build_model(variant, None, "classifier", 1000, seed=0)).eval()
    runner = TorchCudaRunner(model).load()  # fuses and casts a copy
    ref = model.cuda()
    x = torch.randn(n_images, 3, 224, 224, generator=torch.Generator().manual_seed(0)).cuda()
    with torch.inference_mode():
        want = ref(x).float().cpu().numpy()
        got = np.concatenate([runner.forward(x[i:i + 8].half()).float().cpu().numpy() for i in range(0, n_images, 8)])
        cos = cosine_rows(got, want)
        x1, x64 = x[:1].half(), x[:64].half()
        out = {"cosine_min": float(cos.min()), "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean()),
               "logit_range": float(want.max() - want.min()),
               "latency_b1_ms": gc.cuda_ms(lambda: runner.forward(x1), warmup=20, iters=200),
               "eager_fp32_latency_b1_ms": gc.cuda_ms(lambda: ref(x[:1]), warmup=5, iters=50)}
        t64 = gc.cuda_ms(lambda: runner.forward(x64), warmup=3, iters=20)
        e64 = gc.cuda_ms(lambda: ref(x[:64]), warmup=2, iters=10)
    out.update({"throughput_b64_img_s": 64e3 / t64, "eager_fp32_throughput_b64_img_s": 64e3 / e64})
    return out


_TORCH = {"fp32": "float32", "fp16": "float16"}
SECTIONS = {"kernel": check_kernel, "aot_abi": check_aot_abi, "blocks": bench_blocks, "model": bench_model,
            "model_pp": lambda torch: bench_model(torch, variant="pp-s"), "peers": None}  # peers: in main


def format_table(report: dict) -> str:
    lines = [f"GPU check on {report['machine'].get('gpu', '?')} ({report['machine'].get('torch', '?')}, "
             f"triton {report['machine'].get('triton', '?')})"]
    for name in ("kernel", "aot_abi"):
        sec = report["sections"].get(name, {})
        if "error" in sec:
            lines.append(f"{name}: ERROR {sec['error']}")
            continue
        rows = sec.get("rows", [])
        worst = {dt: max((r["max_abs"] for r in rows if r["qkv"] == dt), default=float("nan")) for dt in BARS}
        ok = sum(r["ok"] for r in rows)
        lines.append(f"{name}: {ok}/{len(rows)} within bars; worst max|diff| fp32 {worst['fp32']:.2e}, "
                     f"fp16 {worst['fp16']:.2e}")
    blocks = report["sections"].get("blocks", {})
    if "error" in blocks:
        lines.append(f"blocks: ERROR {blocks['error']}")
    for key, label in (("sums", "S"), ("pp_s_sums", "CrossFormer++-S")):
        for b, s in blocks.get(key, {}).items():
            lines.append(f"blocks b{b} fp16 (sum over {label}'s blocks): fused {s['fused_ms']:.3f} ms, eager "
                         f"{s['eager_ms']:.3f} ms ({s['vs_eager']:.2f}x), SDPA {s['sdpa_ms']:.3f} ms "
                         f"({s['vs_sdpa']:.2f}x)")
    for key, label in (("model", "S"), ("model_pp", "CrossFormer++-S")):
        model = report["sections"].get(key, {})
        if "error" in model:
            lines.append(f"{key}: ERROR {model['error']}")
        elif model:
            lines.append(f"model {label} fp16 torch-cuda vs fp32 eager: cosine {model['cosine_min']:.6f}, top-1 "
                         f"{model['top1_agreement'] * 100:.1f} %, b1 {model['latency_b1_ms']:.3f} ms (eager fp32 "
                         f"{model['eager_fp32_latency_b1_ms']:.3f} ms), b64 {model['throughput_b64_img_s']:.0f} "
                         f"img/s (eager fp32 {model['eager_fp32_throughput_b64_img_s']:.0f} img/s)")
    peers = report["sections"].get("peers", {})
    if peers.get("rows"):
        lines += gp.format_rows(peers)
    for goal, (value, bar, ok) in report.get("goals", {}).items():
        lines.append(f"goal {goal}: {value:.4g} vs {bar} -> {'MET' if ok else 'NOT MET'}")
    return "\n".join(lines)


def goals(report: dict) -> dict:
    out = {}
    sums = report["sections"].get("blocks", {}).get("sums", {})
    if 8 in sums:
        v = sums[8]["vs_eager"]
        out["fused_vs_eager_b8"] = (v, f">= {GOALS['blocks_speedup_b8']}", v >= GOALS["blocks_speedup_b8"])
    m = report["sections"].get("model", {})
    if "latency_b1_ms" in m:
        out["s_b1_latency_ms"] = (m["latency_b1_ms"], f"<= {GOALS['latency_b1_ms']}",
                                  m["latency_b1_ms"] <= GOALS["latency_b1_ms"])
        out["fp16_cosine"] = (m["cosine_min"], f">= {GOALS['cosine']}", m["cosine_min"] >= GOALS["cosine"])
        out["fp16_top1"] = (m["top1_agreement"], f">= {GOALS['top1']}", m["top1_agreement"] >= GOALS["top1"])
    pp = report["sections"].get("model_pp", {})
    if "cosine_min" in pp:  # CrossFormer++-S is held to the same fp16 accuracy; its latency is reported only
        out["pp_s_fp16_cosine"] = (pp["cosine_min"], f">= {GOALS['cosine']}", pp["cosine_min"] >= GOALS["cosine"])
        out["pp_s_fp16_top1"] = (pp["top1_agreement"], f">= {GOALS['top1']}", pp["top1_agreement"] >= GOALS["top1"])
    out.update({f"peers_{k}": v for k, v in gp.goals(report["sections"].get("peers", {}).get("rows", [])).items()})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma list (default: all)")
    ap.add_argument("--out", default=os.path.join(gc.ROOT, "benchmarks", "gpu"), help="folder for the JSON")
    ap.add_argument("--peers-budget", type=float, default=300.0,
                    help="seconds after which the peers section starts no more torch.compile rows (default 300)")
    ap.add_argument("--peers", default=",".join(f"{v}:{b}" for v, b in gp.ORDER),
                    help="the peers section's model:batch list, in order (default: %(default)s). One max-autotune "
                         "compile of S took over 7 minutes on an H200: give a call of its own to s:1,s:64")
    ap.add_argument("--peers-paths", default=",".join(gp.PATHS),
                    help="the peers section's paths (default: %(default)s); the max-autotune ones run last")
    args = ap.parse_args(argv)
    gc.bootstrap()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check.py: error: needs a CUDA GPU (torch.cuda.is_available() is False)", file=sys.stderr)
        return 2
    import triton

    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 references must be fp32
    torch.backends.cudnn.allow_tf32 = False
    props = torch.cuda.get_device_properties(0)
    machine = {"gpu": props.name, "capability": f"{props.major}.{props.minor}", "torch": torch.__version__,
               "cuda": torch.version.cuda, "triton": triton.__version__, "python": platform.python_version(),
               "env": {k: v for k, v in os.environ.items() if k.startswith(("TORCHINDUCTOR_", "TRITON_"))}}
    report = {"machine": machine,
              "command": "python benchmarks/gpu_check.py " + " ".join(argv or sys.argv[1:]), "sections": {}}
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, gpu_file_name(props.name))

    def save() -> None:
        with open(path, "w") as f:
            json.dump({**report, "goals": goals(report)}, f, indent=1, default=str)

    for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
        t0 = time.perf_counter()
        try:
            if name == "peers":  # fills its section row by row: a timeout keeps the rows measured
                report["sections"]["peers"] = {}
                result = gp.bench_peers(torch, report["sections"]["peers"], save, budget_s=args.peers_budget,
                                        order=tuple((v, int(b)) for v, _, b in
                                                    (p.partition(":") for p in args.peers.split(","))),
                                        paths=tuple(p.strip() for p in args.peers_paths.split(",") if p.strip()))
            else:
                result = SECTIONS[name](torch)
            report["sections"][name] = result if isinstance(result, dict) else {"rows": result}
        except Exception as e:  # one section failing must not lose the others' numbers
            report["sections"][name] = {"error": f"{type(e).__name__}: {e}",
                                        "traceback": traceback.format_exc()[-3000:]}
        report["sections"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {report['sections'][name]['seconds']} s", file=sys.stderr, flush=True)
        save()  # after every section: a timeout keeps what was measured
    report["goals"] = goals(report)
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print(format_table(report))
    print(f"wrote {path}", file=sys.stderr)
    failed = [r for s in ("kernel", "aot_abi") for r in report["sections"].get(s, {}).get("rows", []) if not r["ok"]]
    return 1 if failed or any("error" in s for s in report["sections"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
