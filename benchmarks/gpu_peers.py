"""gpu_check's ``peers`` section: our GPU path against what a PyTorch user gets without us, one process, one GPU,
the same weights.

Paths, each fp16 on the same perturbed-random CrossFormer (S and CrossFormer++-S):
  eager             the plain model, ``.half()``
  eager_graphs      the same, captured in one CUDA graph per shape
  ours              the ``torch-cuda`` runner as shipped: fused Triton attention, one CUDA graph per shape
  compile_ro        ``torch.compile(mode="reduce-overhead")`` of the plain model: inductor's defaults, CUDA graphs
  ours_compiled_ro  the fused model (attention as the custom op of plugins/torch_op.py) compiled the same way:
                    inductor fuses what surrounds the attention
  compile_ma        ``torch.compile(mode="max-autotune")`` of the plain model (GEMM autotuning, coordinate-descent
                    tuning of the fused kernels, CUDA graphs)
  ours_compiled_ma  the fused model under the same max-autotune

Per row: latency (median of CUDA-event-timed calls), images/s, kernels per forward (the profiler's CUDA kernels
in one call; graph replays are traced by CUPTI too), % of the GPU's dense fp16 peak (FLOPs counted by
``torch.utils.flop_counter`` on the plain model), cosine (minimum over images) and top-1 agreement vs the fp32
eager model; the first call's seconds (the compile) separately. Rows run cheapest first: every model:batch's
eager, graphed, ours and reduce-overhead rows, then the max-autotune rows (one max-autotune compile of S took
over 7 minutes on an H200), which start only while ``budget_s`` lasts.

On a machine without CUDA (``device="cpu"``, Triton's interpreter on) the same code runs on tiny shapes
without graphs, profiler or peak: that is how the tests check its plumbing.
"""
from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Callable

PATHS = ("eager", "eager_graphs", "ours", "compile_ro", "ours_compiled_ro", "compile_ma", "ours_compiled_ma")
MODES = {"ro": "reduce-overhead", "ma": "max-autotune"}  # a compiled path's suffix -> torch.compile mode
SLOW = ("compile_ma", "ours_compiled_ma")  # after every cheap row, and only while the budget lasts
DENSE_FP16_TFLOPS = {"H200": 989.0, "H100": 989.0}  # SXM, dense (no sparsity)
ORDER = (("s", 1), ("s", 64), ("pp-s", 1), ("pp-s", 64), ("s", 8), ("s", 256), ("pp-s", 8), ("pp-s", 256))
GOALS = {"s_b1_ms": 0.5, "s_b64_img_s": 12000.0, "vs_compile": 1.3, "cosine": 0.9995, "top1": 0.995}


def peak_tflops(gpu_name: str) -> float | None:
    return next((v for k, v in DENSE_FP16_TFLOPS.items() if k in gpu_name), None)


def _timer(torch, device: str) -> Callable[[Callable, int, int], float]:
    def cpu_ms(fn, warmup, iters):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    if device == "cpu":
        return cpu_ms
    import gpu_cases as gc

    return lambda fn, warmup, iters: gc.cuda_ms(fn, warmup=warmup, iters=iters)


def count_kernels(torch, fn) -> int:
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events()
               if e.device_type == DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset")))


class _Model:
    """One variant's paths, built once; compiled paths compile (per batch) on first call."""

    def __init__(self, torch, variant: str, device: str, size: int, n_images: int, backend: str):
        from crossformer_deploy.model.factory import build_model
        from crossformer_deploy.model.synthetic import perturb
        from crossformer_deploy.runtime.torch_cuda_runner import TorchCudaRunner

        self.torch, self.device, self.backend = torch, device, backend
        model = perturb(build_model(variant, None, "classifier", 1000 if variant != "tiny" else 10, seed=0)).eval()
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n_images, 3, size, size, generator=gen).to(device)
        ref = copy.deepcopy(model).to(device)
        with torch.inference_mode():
            self.want = torch.cat([ref(self.x[i:i + 64]).float().cpu() for i in range(0, n_images, 64)])
        del ref
        self.dtype = torch.float16 if device == "cuda" else torch.float32  # the interpreter's CPU dots: fp32
        self.plain = copy.deepcopy(model).to(device, self.dtype)
        self.runner = TorchCudaRunner(model, dtype=self.dtype).load()
        self._compiled: dict[str, Callable] = {}
        from torch.utils.flop_counter import FlopCounterMode

        with torch.inference_mode(), FlopCounterMode(display=False) as fc:
            self.plain(self.x[:1].to(self.dtype))
        self.flops_per_image = fc.get_total_flops()

    def path(self, name: str, xb) -> Callable:
        torch = self.torch
        if name == "eager":
            return self.plain
        if name == "eager_graphs":
            if self.device != "cuda":
                return self.plain
            from crossformer_deploy.runtime.torch_cuda_runner import _Graphed

            return _Graphed(self.plain, xb)
        if name == "ours":
            return self.runner.forward
        if name not in self._compiled:
            ours = name.startswith("ours_")
            module = self.runner.module if ours else self.plain
            with torch.inference_mode():
                module(xb)  # the fused model's DPB tables are built here, outside the traced graph
            kw = {"mode": MODES[name.rsplit("_", 1)[1]]} if self.backend == "inductor" else {"backend": self.backend}
            self._compiled[name] = torch.compile(module, dynamic=False, fullgraph=ours, **kw)
        fn = self._compiled[name]

        def call(x):
            if self.device == "cuda":
                torch.compiler.cudagraph_mark_step_begin()
            return fn(x)

        return call

    def row(self, name: str, batch: int, ms_fn, iters: int) -> dict:
        torch = self.torch
        xb = self.x[:batch].to(self.dtype)
        with torch.inference_mode():
            fn = self.path(name, xb)
            t0 = time.perf_counter()
            fn(xb)
            if self.device == "cuda":
                torch.cuda.synchronize()
            first_s = time.perf_counter() - t0
            n = max(batch, min(64, len(self.x)))
            got = torch.cat([fn(self.x[i:i + batch].to(self.dtype)).float().cpu().clone()
                             for i in range(0, n, batch)])
            ms = ms_fn(lambda: fn(xb), max(1, iters // 10), iters)
            kernels = count_kernels(torch, lambda: fn(xb)) if self.device == "cuda" else None
        want = self.want[:n]
        cos = torch.nn.functional.cosine_similarity(got.double(), want.double(), dim=1)
        return {"ms": ms, "img_s": batch * 1e3 / ms, "kernels": kernels, "first_call_s": round(first_s, 2),
                "cosine_min": float(cos.min()), "top1": float((got.argmax(1) == want.argmax(1)).float().mean())}


def plan(order, paths=PATHS) -> list[tuple[str, int, str]]:
    """(variant, batch, path) in the order run: the cheap paths of every model:batch, then the slow ones."""
    cheap = [p for p in PATHS if p in paths and p not in SLOW]
    slow = [p for p in PATHS if p in paths and p in SLOW]
    return [(v, b, p) for group in (cheap, slow) for v, b in order for p in group]


def bench_peers(torch, out: dict, save: Callable[[], None] = lambda: None, device: str = "cuda",
                order=ORDER, size: int = 224, n_images: int = 256, budget_s: float = 300.0,
                paths=PATHS, backend: str = "inductor", iters: int | None = None) -> dict:
    """Fill ``out["rows"]`` row by row (``save()`` after each, so that a timeout keeps what was measured)."""
    t_start = time.perf_counter()
    for name in ("recompile_limit", "cache_size_limit"):  # 2 models x 4 batches x 2 modes of one forward
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    ms_fn = _timer(torch, device)
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = peak_tflops(gpu)
    out.update({"rows": [], "gpu": gpu, "peak_fp16_tflops": peak, "budget_s": budget_s,
                "compile_modes": dict(MODES) if backend == "inductor" else backend})
    models: dict[str, _Model] = {}
    for variant, batch, name in plan(order, paths):
        if variant not in models:
            models[variant] = _Model(torch, variant, device, size, n_images, backend)
            out.setdefault("flops_per_image", {})[variant] = models[variant].flops_per_image
        m = models[variant]
        row = {"variant": variant, "batch": batch, "path": name}
        if name in SLOW and time.perf_counter() - t_start > budget_s:
            row["skipped"] = f"time budget of {budget_s:.0f} s spent before this compile"
        else:
            # a call cut off by its time limit leaves this in the JSON: what was running, since when
            out["running"] = {**row, "since_peers_start_s": round(time.perf_counter() - t_start, 1)}
            save()
            try:
                n_iter = iters or (200 if batch == 1 else 100 if batch <= 8 else 20)
                row.update(m.row(name, batch, ms_fn, iters=n_iter))
                if peak:
                    row["pct_peak"] = 100 * m.flops_per_image * row["img_s"] / (peak * 1e12)
            except Exception as e:  # one path failing must not lose the others
                row["error"] = f"{type(e).__name__}: {str(e)[:500]}"
        out.pop("running", None)
        out["rows"].append(row)
        print(f"[peers] {variant} b{batch} {name}: " + ", ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            if k not in ("variant", "batch", "path")), file=sys.stderr, flush=True)
        save()
    out["goals"] = goals(out["rows"])
    return out


def goals(rows: list[dict]) -> dict:
    """[M]'s bars, from whatever rows were measured. Ours = the fastest of our paths; the bar's peer is
    max-autotune; the ratio to reduce-overhead is reported beside it (a weaker peer: necessary, not enough)."""
    by = {(r["variant"], r["batch"], r["path"]): r for r in rows if "ms" in r}
    ours_paths = [p for p in PATHS if p.startswith("ours")]
    res = {}
    for variant in ("s", "pp-s"):
        for batch in (1, 64):
            ours = [by[(variant, batch, p)] for p in ours_paths if (variant, batch, p) in by]
            if not ours:
                continue
            best = min(ours, key=lambda r: r["ms"])
            for peer_path, key in (("compile_ma", "vs_compile"), ("compile_ro", "vs_compile_ro")):
                peer = by.get((variant, batch, peer_path))
                if peer:
                    v = peer["ms"] / best["ms"]
                    res[f"{variant}_b{batch}_{key}"] = (v, f">= {GOALS['vs_compile']}", v >= GOALS["vs_compile"])
            if variant == "s" and batch == 1:
                res["s_b1_ms"] = (best["ms"], f"<= {GOALS['s_b1_ms']}", best["ms"] <= GOALS["s_b1_ms"])
            if variant == "s" and batch == 64:
                bar = GOALS["s_b64_img_s"]
                res["s_b64_img_s"] = (best["img_s"], f">= {bar}", best["img_s"] >= bar)
            for r in ours:
                res[f"{variant}_b{batch}_{r['path']}_cosine"] = (r["cosine_min"], f">= {GOALS['cosine']}",
                                                                 r["cosine_min"] >= GOALS["cosine"])
                res[f"{variant}_b{batch}_{r['path']}_top1"] = (r["top1"], f">= {GOALS['top1']}",
                                                               r["top1"] >= GOALS["top1"])
    return res


def format_rows(out: dict) -> list[str]:
    lines = [f"peers ({out.get('gpu')}, torch.compile modes {out.get('compile_modes')}; FLOPs/img "
             + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in out.get("flops_per_image", {}).items()) + ")",
             f"{'model':6} {'b':>4} {'path':16} {'ms':>9} {'img/s':>9} {'kernels':>8} {'%peak':>6} {'cosine':>9} "
             f"{'top1':>6} {'1st call s':>10}"]
    for r in out.get("rows", []):
        head = f"{r['variant']:6} {r['batch']:>4} {r['path']:16}"
        if "ms" not in r:
            lines.append(f"{head} {r.get('skipped') or r.get('error') or r.get('incomplete')}")
            continue
        pct = f"{r['pct_peak']:.1f}" if r.get("pct_peak") is not None else "-"
        kernels = r.get("kernels") if r.get("kernels") is not None else "-"
        lines.append(f"{head} {r['ms']:9.3f} {r['img_s']:9.0f} {kernels:>8} {pct:>6} {r['cosine_min']:9.6f} "
                     f"{r['top1'] * 100:5.1f}% {r.get('first_call_s', 0):10.1f}")
    return lines
