"""A bench run: per (size, batch) case, build every backend, check it against PyTorch, time all interleaved.

Graphs are exported once per case into a temp dir; a backend that cannot be built (a missing package, a
path this CPU would only emulate) is skipped with one line of note, never the whole run; outputs are
compared with PyTorch eager fp32 on the same input and held to their precision's bar (config.BAR); then
everything is timed by ``timing.interleaved``, round-robin, so that load or clock drift hits all alike.
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import torch

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.bench.backends import Context, _torch, build, one_line
from crossformer_deploy.bench.config import BACKENDS, BAR, BASELINE, GOAL_RATIO, BenchConfig, Candidate, Result, role
from crossformer_deploy.bench.graphs import CaseGraphs
from crossformer_deploy.bench.machine import cpu_model_and_flags, machine_info
from crossformer_deploy.bench.official import PeerFactory, load_official
from crossformer_deploy.bench.profile import profile_backend
from crossformer_deploy.bench.timing import interleaved_with_progress
from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
from crossformer_deploy.model.factory import build_model, weights_label
from crossformer_deploy.model.synthetic import trained_like
from crossformer_deploy.runtime.parity import Tolerance, cosine_rows


def bench_case(cfg: BenchConfig, model, info: ModelInfo, size: tuple[int, int], batch: int, tmpdir: str,
               plain_path: Callable[[], str], log: Callable[[str], None],
               peer: PeerFactory | None = None) -> tuple[list[Result], dict | None]:
    label = f"{size[0]}x{size[1]}"
    graphs = CaseGraphs(model, info, size, batch, tmpdir, plain_path, cfg.calib, peer)
    ctx = Context(model, graphs, cfg.threads, (batch, 3, *size), cpu_model_and_flags()[1], cfg.run_emulated)
    x = np.random.default_rng(cfg.seed).standard_normal((batch, 3, *size), dtype=np.float32)
    reference = _torch(ctx).fn(x)  # eager fp32 on the same input: what every backend is checked against
    results: dict[str, Result] = {}
    cands: dict[str, Candidate] = {}
    for name in cfg.backends:
        r = results[name] = Result(label, batch, name, "ok")
        t0 = time.perf_counter()
        try:
            cand = build(name, ctx)
            got = cand.fn(x)  # first run inside the build time: torch.compile compiles here
        except Exception as e:  # one backend failing must not end the run
            r.status, r.note = "skipped", one_line(e)
            log(f"{label} b{batch} {name}: skipped: {r.note}")
            continue
        r.build_s = time.perf_counter() - t0
        r.graph, r.precision = cand.graph, cand.precision
        _accuracy(r, reference, got, BAR[BACKENDS[name].bar])
        cands[name] = cand
    _time(cfg, cands, results, x, batch, f"{label} b{batch}")
    _ratios(list(results.values()))
    profile = None
    if cfg.profile_backend:
        try:
            profile = profile_backend(cfg.profile_backend, ctx, x, max(cfg.repeats, 5))
        except Exception as e:  # profiling is extra; report why and keep the timings
            log(f"{label} b{batch} profile {cfg.profile_backend}: skipped: {one_line(e)}")
    for c in cands.values():
        if hasattr(c.runner, "close"):
            c.runner.close()
    return list(results.values()), profile


def _accuracy(r: Result, ref: dict[str, np.ndarray], got: dict[str, np.ndarray], tol: Tolerance) -> None:
    # Over all outputs: the worst one. Missing or misshapen outputs are a failed backend, not a crash.
    if set(got) != set(ref) or any(got[k].shape != ref[k].shape for k in ref):
        r.status, r.note = "failed", f"outputs {sorted((k, v.shape) for k, v in got.items())} differ from PyTorch's"
        return
    r.max_abs = max(float(np.abs(got[k].astype(np.float64) - ref[k]).max()) for k in ref)
    r.cosine = min(float(cosine_rows(got[k], ref[k]).min()) for k in ref)
    r.within_tolerance = ((tol.max_abs is None or r.max_abs <= tol.max_abs)
                          and (tol.min_cosine is None or r.cosine >= tol.min_cosine))


def _time(cfg: BenchConfig, cands: dict[str, Candidate], results: dict[str, Result], x: np.ndarray, batch: int,
          desc: str) -> None:
    errors: dict[str, BaseException] = {}

    def guarded(name: str, fn: Callable) -> Callable[[], object]:
        def call() -> object:
            if name not in errors:
                try:
                    return fn(x)
                except Exception as e:  # recorded, the others keep running
                    errors[name] = e
            return None
        return call

    fns = {n: guarded(n, c.fn) for n, c in cands.items() if results[n].status == "ok"}
    if not fns:
        return
    timings = interleaved_with_progress(fns, desc, cfg.repeats, cfg.warmup, cfg.block, cfg.pause)
    for name, t in timings.items():
        r = results[name]
        if name in errors:
            r.status, r.note = "failed", f"while timing: {one_line(errors[name])}"
            continue
        r.median_ms, r.p90_ms, r.images_per_s = t.median_ms, t.p90_ms, batch / t.median_ms * 1e3


def best_peer(results: list[Result]) -> Result | None:
    """The fastest peer within its precision's bar: what ours is measured against."""
    pool = [r for r in results if role(r.backend) == "peer" and r.median_ms and r.within_tolerance]
    return min(pool, key=lambda r: r.median_ms) if pool else None


def _ratios(results: list[Result]) -> None:
    refs = {"vs_torch": next((r for r in results if r.backend == BASELINE and r.median_ms), None),
            "vs_peer": best_peer(results)}
    for attr, ref in refs.items():
        for r in results:
            if ref is not None and r.median_ms:
                setattr(r, attr, ref.median_ms / r.median_ms)


def goal(results: list[Result]) -> dict | None:
    """Issue [J]'s bars for one case: our fastest faithful path >= 1.2x the fastest faithful peer, and the
    onnxruntime target never slower than the plain export on ONNX Runtime (>= 0.95x)."""
    peer = best_peer(results)
    ours = [r for r in results if role(r.backend) == "ours" and r.median_ms and r.within_tolerance]
    if peer is None or not ours:
        return None
    best = min(ours, key=lambda r: r.median_ms)
    out = {"size": best.size, "batch": best.batch, "best": best.backend, "best_peer": peer.backend,
           "vs_peer": peer.median_ms / best.median_ms, "bar": GOAL_RATIO,
           "met": bool(peer.median_ms / best.median_ms >= GOAL_RATIO)}
    by_name = {r.backend: r for r in results}
    # (key, ours, other): other's time over ours. ONNX Runtime users: ours against ORT on the plain export (fp32)
    # and against ORT's own INT8 of it; the dynamic graph's cost: how much slower it runs than our static one
    for key, ours, other in (("ort_target_vs_plain", "ort-target", "ort"),
                             ("ort_int8_vs_ort_qdq", "ort-int8", "ort-qdq-int8"),
                             ("ort_dynamic_cost", "ort-target", "ort-dynamic"),
                             ("ov_dynamic_cost", "ov-target-f32", "ov-dynamic")):
        a, b = by_name.get(ours), by_name.get(other)
        if a and b and a.median_ms and b.median_ms:
            out[key] = b.median_ms / a.median_ms
    if "ort_target_vs_plain" in out:
        out["ort_target_not_slower"] = bool(out["ort_target_vs_plain"] >= 0.95)
    return out


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Every case of ``cfg``; returns the report (what --json writes). Without weights the model is made
    trained-like (model/synthetic.py) so that the accuracy column can tell a faithful path from one that is not."""

    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.variant, cfg.weights, seed=0)
    if cfg.weights is None:
        model = trained_like(model, seed=cfg.weights_seed)
    peer = load_official(cfg.official, model.cfg, model.state_dict(), model.num_classes) if cfg.official else None
    info = ModelInfo(variant=cfg.variant or model.cfg.name, mode="classifier", num_classes=model.num_classes,
                     weights=weights_label(cfg.weights) + ("" if cfg.weights else " perturbed"))
    results: list[Result] = []
    profiles, goals = [], []
    with tempfile.TemporaryDirectory(prefix="crossformer-bench-") as tmp:
        plain: list[str] = []

        def plain_path() -> str:
            if not plain:
                path = os.path.join(tmp, "plain_dynamic.onnx")
                save_onnx(to_onnx(model, info), path)
                plain.append(path)
            return plain[0]

        for size in cfg.sizes:
            for batch in cfg.batches:
                rows, prof = bench_case(cfg, model, info, size, batch, tmp, plain_path, log, peer)
                results += rows
                if prof:
                    profiles.append({"size": f"{size[0]}x{size[1]}", "batch": batch, **prof})
                if g := goal(rows):
                    goals.append(g)
    config = {**asdict(cfg), "sizes": [f"{h}x{w}" for h, w in cfg.sizes]}
    return {"model": info.variant, "machine": machine_info(), "config": config,
            "results": [asdict(r) for r in results], "goal": goals, "profiles": profiles}
