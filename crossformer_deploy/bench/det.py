"""crossformer-bench --task det: a whole detector's graph timed side by side and checked against PyTorch.

Backends: ``torch`` (eager fp32, the baseline), our one dynamic graph with the plain passes on ONNX Runtime
(``ort``) and OpenVINO f32 (``ov-f32``), and the graphs of the onnxruntime / openvino targets (``ort-target``,
``ov-target-f32``). fp32 only: FP16 / INT8 detector graphs are not built yet. Accuracy is what a detection user
sees: the share of PyTorch's detections answered one-to-one (same label, IoU >= 0.99, score within 1e-4;
runtime/parity.py), counting every detection the graph keeps (score >= 0.05, not only validate's >= 0.3: the
input is random, one image per batch row filling the whole input, on which a trained detector scores low; the
default 800x1216 is a COCO photo's input at mmdet's (1333, 800) scale). Without --weights the detector is
untrained (seed 0).
"""
from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.bench.backends import dense_runner, one_line
from crossformer_deploy.bench.machine import machine_info
from crossformer_deploy.bench.timing import interleaved_with_progress
from crossformer_deploy.export.det_info import DET_INPUT_SIZE, detector_info
from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
from crossformer_deploy.export.recipe import Recipe, apply
from crossformer_deploy.model.det import build_detector
from crossformer_deploy.model.factory import weights_label
from crossformer_deploy.runtime.parity import DET_MATCH, match_detections

BENCH_SCORE_MIN = 0.05  # every detection the graph keeps (mmdet's test score_thr)


@dataclass(frozen=True)
class DetBackend:
    runtime: str  # torch | ort | ov
    target: str = "plain"  # the graph's pass pipeline


DET_BACKENDS = {
    "torch": DetBackend("torch"),
    "ort": DetBackend("ort"),
    "ort-target": DetBackend("ort", "onnxruntime"),
    "ov-f32": DetBackend("ov"),
    "ov-target-f32": DetBackend("ov", "openvino"),
}


@dataclass(frozen=True)
class DetBenchConfig:
    variant: str | None
    weights: str | None = None
    sizes: tuple[tuple[int, int], ...] = (DET_INPUT_SIZE,)
    batches: Sequence[int] = (1,)
    backends: tuple[str, ...] = tuple(DET_BACKENDS)
    threads: int = 2
    repeats: int = 10
    warmup: int = 2
    block: int = 1
    pause: float = 0.3
    seed: int = 0
    weights_seed: int = 0  # the untrained detector's seed
    run_emulated: bool = False  # (shared option; every detector path is fp32)


@dataclass
class DetResult:
    size: str
    batch: int
    backend: str
    status: str = "ok"
    note: str = ""
    graph: str = ""
    build_s: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    vs_torch: float | None = None
    reference: int | None = None  # PyTorch's detections with score >= BENCH_SCORE_MIN
    matched: float | None = None  # the share of them this backend answers (None: none to match)
    within_bar: bool | None = None


def check_det_backends(names: list[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in DET_BACKENDS]
    if unknown:
        raise UsageError(f"unknown detection backend(s) {', '.join(unknown)}; choose from {', '.join(DET_BACKENDS)}")
    return tuple(dict.fromkeys(names))


def run_det_bench(cfg: DetBenchConfig, log: Callable[[str], None] = print) -> dict:
    """Every (size, batch) of ``cfg``; returns the report (what --json writes)."""
    torch.set_num_threads(cfg.threads)
    model = build_detector(cfg.variant, cfg.weights, seed=cfg.weights_seed)
    label = weights_label(cfg.weights, cfg.weights_seed)
    variant = cfg.variant or model.cfg.name
    results: list[DetResult] = []
    with tempfile.TemporaryDirectory(prefix="crossformer-bench-det-") as tmp:
        traced: list = []  # one trace; each target's passes on it (apply does not modify its input)
        graphs: dict[str, str] = {}

        def graph(target: str) -> str:  # one dynamic graph per target serves every case
            if target not in graphs:
                if not traced:
                    traced.append(to_onnx(model, detector_info(model, label, variant=variant)))
                path = os.path.join(tmp, f"{target}.onnx")
                save_onnx(apply(traced[0], Recipe(target)), path, check=False)
                graphs[target] = path
            return graphs[target]

        for size in cfg.sizes:
            for batch in cfg.batches:
                results += _case(cfg, model, graph, size, batch, log)
    config = {**{k: v for k, v in asdict(cfg).items() if k != "run_emulated"},
              "sizes": [f"{h}x{w}" for h, w in cfg.sizes]}
    return {"task": "det", "model": f"{detector_info(model, label).head}-{variant}", "weights": label,
            "machine": machine_info(), "config": config, "results": [asdict(r) for r in results]}


def _case(cfg: DetBenchConfig, model, graph: Callable[[str], str], size: tuple[int, int], batch: int,
          log: Callable[[str], None]) -> list[DetResult]:
    label = f"{size[0]}x{size[1]}"
    x = np.random.default_rng(cfg.seed).standard_normal((batch, 3, *size), dtype=np.float32)
    feeds = {"image": x, "image_size": np.asarray([[*size, *size]] * batch, np.int64)}
    torch_fn = _torch_fn(model)
    ref = torch_fn(feeds)
    results, fns, runners = {}, {}, []
    for name in cfg.backends:
        spec = DET_BACKENDS[name]
        r = results[name] = DetResult(label, batch, name)
        t0 = time.perf_counter()
        try:
            if spec.runtime == "torch":
                fn, r.graph = torch_fn, "PyTorch eager"
            else:
                runner, engine = dense_runner(spec.runtime, graph(spec.target), cfg.threads, "f32")
                runners.append(runner)
                fn = runner.run
                r.graph = f"{engine}, {spec.target} passes"
            got = fn(feeds)
        except Exception as e:  # one backend failing must not end the run
            r.status, r.note = "skipped", one_line(e)
            log(f"{label} b{batch} {name}: skipped: {r.note}")
            continue
        r.build_s = time.perf_counter() - t0
        pairs = [match_detections(ref["dets"][i], ref["labels"][i], got["dets"][i], got["labels"][i],
                                  score_min=BENCH_SCORE_MIN) for i in range(batch)]
        matched, counted = sum(m for m, _ in pairs), sum(c for _, c in pairs)
        r.reference = counted
        r.matched = matched / counted if counted else None
        r.within_bar = r.matched is None or r.matched >= DET_MATCH["fp32"]
        fns[name] = (lambda f: lambda: f(feeds))(fn)
    if fns:
        timings = interleaved_with_progress(fns, f"{label} b{batch}", cfg.repeats, cfg.warmup, cfg.block,
                                            cfg.pause)
        for name, t in timings.items():
            r = results[name]
            r.median_ms, r.p90_ms, r.images_per_s = t.median_ms, t.p90_ms, batch / t.median_ms * 1e3
    base = results.get("torch")
    for r in results.values():
        if base is not None and base.median_ms and r.median_ms:
            r.vs_torch = base.median_ms / r.median_ms
    for runner in runners:
        runner.close()
    return list(results.values())


def _torch_fn(model) -> Callable[[dict], dict[str, np.ndarray]]:
    names = model.output_names

    def fn(feeds: dict) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(feeds["image"]), torch.from_numpy(feeds["image_size"]))
        return {n: t.numpy() for n, t in zip(names, out)}

    return fn


def format_det_table(report: dict) -> str:
    bar = DET_MATCH["fp32"]
    lines = [f"{report['model']} ({report['weights']}); detections (score >= {BENCH_SCORE_MIN}) matched vs PyTorch "
             "eager fp32 on random input",
             f"{'size':>9} {'batch':>5} {'backend':14} {'median ms':>10} {'p90 ms':>9} {'img/s':>7} {'x torch':>8} "
             f"{'matched':>16}  note"]
    for r in report["results"]:
        head = f"{r['size']:>9} {r['batch']:>5} {r['backend']:14}"
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']}: {r['note']}")
            continue
        vs = f"{r['vs_torch']:.2f}" if r["vs_torch"] else "-"
        matched = f"{r['matched']:.2%} of {r['reference']}" if r["matched"] is not None else "none to match"
        note = "" if r["within_bar"] else f"below the {bar:.0%} bar"
        lines.append(f"{head} {r['median_ms']:10.1f} {r['p90_ms']:9.1f} {r['images_per_s']:7.2f} {vs:>8} "
                     f"{matched:>16}  {note}")
    return "\n".join(lines)
