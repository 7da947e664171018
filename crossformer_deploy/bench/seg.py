"""crossformer-bench --task seg: a whole segmenter's graphs timed side by side and checked against PyTorch.

Backends: ``torch`` (eager fp32, the baseline), our one dynamic graph with the plain passes on ONNX Runtime
(``ort``) and OpenVINO in f32 / bf16 (``ov-f32``, ``ov-bf16``), and the graphs of the onnxruntime / openvino
targets (``ort-target``, ``ov-target-f32``, ``ov-target-bf16``), and INT8 graphs of those targets (``ort-int8``,
``ov-int8``: the export's default placement for segmenters, ``mlp-fc1``; ``ov-int8-all``: every layer int8, fast on
OpenVINO and below its bar in our tests), calibrated on ``--calib`` (default: a few noise images, enough to time
them, not to judge them). No peers: the authors' segmenters need
MMSegmentation, which this package does not depend on (benchmarks/seg_vs_mmseg.py compares their graphs with
ours). Accuracy is what a segmentation user sees: the pixels of the class map equal to PyTorch's, beside the
logits' max abs difference; the bars are the ones of docs/segmentation.md (fp32 99.99 % of pixels, bf16 99.5 %,
INT8 98 %).
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
from crossformer_deploy.base.model_info import SEGMENTER
from crossformer_deploy.bench.backends import dense_runner, one_line, refuse_emulated
from crossformer_deploy.bench.graphs import noise_images
from crossformer_deploy.bench.machine import cpu_model_and_flags, machine_info
from crossformer_deploy.bench.timing import interleaved_with_progress
from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
from crossformer_deploy.export.precision.placement import default_placement
from crossformer_deploy.export.recipe import Int8Options, Recipe, apply
from crossformer_deploy.model.factory import weights_label
from crossformer_deploy.model.seg import build_segmenter
from crossformer_deploy.model.seg.factory import segmenter_info
from crossformer_deploy.model.seg.synthetic import fit_head, trained_like_segmenter
from crossformer_deploy.runtime.parity import pixel_agreement


@dataclass(frozen=True)
class SegBackend:
    runtime: str  # torch | ort | ov
    target: str = "plain"  # the graph's pass pipeline
    precision: str = "fp32"  # fp32 | bf16 (OpenVINO's inference precision) | int8 (a Q/DQ graph); the bar
    placement: str | None = None  # int8: which layers are int8 (placement.py); None: the segmenters' default


SEG_BACKENDS = {
    "torch": SegBackend("torch"),
    "ort": SegBackend("ort"),
    "ort-target": SegBackend("ort", "onnxruntime"),
    "ov-f32": SegBackend("ov"),
    "ov-bf16": SegBackend("ov", precision="bf16"),
    "ov-target-f32": SegBackend("ov", "openvino"),
    "ov-target-bf16": SegBackend("ov", "openvino", "bf16"),
    "ort-int8": SegBackend("ort", "onnxruntime", "int8"),
    "ov-int8": SegBackend("ov", "openvino", "int8"),
    "ov-int8-all": SegBackend("ov", "openvino", "int8", placement="all"),
}
PIXEL_BARS = {"fp32": 0.9999, "bf16": 0.995, "int8": 0.98}
# an INT8 graph's float layers run in f32 on OpenVINO, as in the accuracy measurements of docs/segmentation.md
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
NOISE_CALIB_IMAGES = 4


@dataclass(frozen=True)
class SegBenchConfig:
    variant: str
    head: str | None = None  # None: read off --weights, else upernet
    weights: str | None = None
    sizes: tuple[tuple[int, int], ...] = ((512, 512),)
    batches: Sequence[int] = (1,)
    backends: tuple[str, ...] = tuple(SEG_BACKENDS)
    threads: int = 2
    repeats: int = 10
    warmup: int = 2
    block: int = 1
    pause: float = 0.3
    seed: int = 0
    weights_seed: int = 0
    run_emulated: bool = False
    calib: str | None = None  # images the INT8 backends calibrate on; None: a few noise images


@dataclass
class SegResult:
    size: str
    batch: int
    backend: str
    status: str = "ok"
    note: str = ""
    graph: str = ""
    precision: str = "fp32"
    build_s: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    vs_torch: float | None = None
    pixels: float | None = None  # share of class-map pixels equal to PyTorch's
    max_abs: float | None = None  # logits
    within_bar: bool | None = None


def check_seg_backends(names: list[str]) -> tuple[str, ...]:
    unknown = [n for n in names if n not in SEG_BACKENDS]
    if unknown:
        raise UsageError(f"unknown segmentation backend(s) {', '.join(unknown)}; choose from "
                         f"{', '.join(SEG_BACKENDS)}")
    return tuple(dict.fromkeys(names))


def run_seg_bench(cfg: SegBenchConfig, log: Callable[[str], None] = print) -> dict:
    """Every (size, batch) of ``cfg``; returns the report (what --json writes). Without weights the segmenter is
    made trained-like and its ``conv_seg`` refitted to a trained classifier's margins (model/seg/synthetic.py:
    a random head leaves most pixels near a tie, where any precision flips them), so that the pixel column
    means something."""
    torch.set_num_threads(cfg.threads)
    model = build_segmenter(cfg.variant, cfg.weights, head=cfg.head, return_logits=True, seed=0)
    if cfg.weights is None:
        x = torch.randn(2, 3, 128, 160, generator=torch.Generator().manual_seed(cfg.weights_seed))
        model = fit_head(trained_like_segmenter(model, cfg.weights_seed, x), x, seed=cfg.weights_seed)
    label = weights_label(cfg.weights) if cfg.weights else f"trained-like seed {cfg.weights_seed}, conv_seg fitted"
    flags = cpu_model_and_flags()[1]
    results: list[SegResult] = []
    with tempfile.TemporaryDirectory(prefix="crossformer-bench-seg-") as tmp:
        traced: list = []  # one trace; each target's passes on it (apply does not modify its input)
        graphs: dict[tuple, str] = {}

        def graph(spec: SegBackend) -> str:  # one dynamic graph per target and precision serves every case
            key = (spec.target, spec.precision == "int8", spec.placement)
            if key not in graphs:
                if not traced:
                    traced.append(to_onnx(model, segmenter_info(model, label, cfg.sizes[0], variant=cfg.variant)))
                int8 = None
                if spec.precision == "int8":
                    name = spec.placement or "default"
                    calib = cfg.calib or noise_images(tmp, cfg.sizes[0], NOISE_CALIB_IMAGES)
                    int8 = Int8Options(calib, size=cfg.sizes[0], cache_path=os.path.join(tmp, f"ranges_{name}.json"),
                                       progress=False, placement=spec.placement)
                path = os.path.join(tmp, "_".join(str(k) for k in key) + ".onnx")
                save_onnx(apply(traced[0], Recipe(spec.target, "int8" if int8 else "fp32", int8=int8)), path,
                          check=False)
                graphs[key] = path
            return graphs[key]

        for size in cfg.sizes:
            for batch in cfg.batches:
                results += _case(cfg, model, graph, size, batch, flags, log)
    config = {**asdict(cfg), "sizes": [f"{h}x{w}" for h, w in cfg.sizes]}
    return {"task": "seg", "model": f"{model.seg_cfg.head}-{cfg.variant}", "weights": label,
            "machine": machine_info(), "config": config, "results": [asdict(r) for r in results]}


def _case(cfg: SegBenchConfig, model, graph: Callable[[SegBackend], str], size: tuple[int, int], batch: int,
          flags: frozenset[str], log: Callable[[str], None]) -> list[SegResult]:
    label = f"{size[0]}x{size[1]}"
    x = np.random.default_rng(cfg.seed).standard_normal((batch, 3, *size), dtype=np.float32)
    feeds = {"image": x, "output_size": np.asarray(size, np.int64)}
    torch_fn = _torch_fn(model, size)
    ref = torch_fn(feeds)
    results, fns, runners = {}, {}, []
    for name in cfg.backends:
        spec = SEG_BACKENDS[name]
        r = results[name] = SegResult(label, batch, name, precision=spec.precision)
        t0 = time.perf_counter()
        try:
            refuse_emulated(spec.precision, flags, cfg.run_emulated)
            if spec.runtime == "torch":
                fn, r.graph = torch_fn, "PyTorch eager"
            else:
                runner, engine = dense_runner(spec.runtime, graph(spec), cfg.threads, OV_PRECISION[spec.precision])
                runners.append(runner)
                fn = runner.run
                r.graph = f"{engine}, {spec.target} passes"
                if spec.precision == "int8":
                    r.graph += f", INT8 ({spec.placement or default_placement(SEGMENTER)} placement)"
            got = fn(feeds)
        except Exception as e:  # one backend failing must not end the run
            r.status, r.note = "skipped", one_line(e)
            log(f"{label} b{batch} {name}: skipped: {r.note}")
            continue
        r.build_s = time.perf_counter() - t0
        r.pixels = pixel_agreement(ref["class_map"], got["class_map"])
        r.max_abs = float(np.abs(got["logits"].astype(np.float64) - ref["logits"]).max())
        r.within_bar = r.pixels >= PIXEL_BARS[spec.precision]
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


def _torch_fn(model, size: tuple[int, int]) -> Callable[[dict], dict[str, np.ndarray]]:
    def fn(feeds: dict) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            cm, logits = model(torch.from_numpy(feeds["image"]), size)
        return {"class_map": cm.numpy(), "logits": logits.numpy()}

    return fn


def format_seg_table(report: dict) -> str:
    lines = [f"{report['model']} ({report['weights']}); class map pixels and logits vs PyTorch eager fp32",
             f"{'size':>9} {'batch':>5} {'backend':16} {'median ms':>10} {'p90 ms':>9} {'img/s':>7} {'x torch':>8} "
             f"{'pixels':>9} {'max|abs|':>9}  note"]
    for r in report["results"]:
        head = f"{r['size']:>9} {r['batch']:>5} {r['backend']:16}"
        if r["status"] != "ok":
            lines.append(f"{head} {r['status']}: {r['note']}")
            continue
        vs = f"{r['vs_torch']:.2f}" if r["vs_torch"] else "-"
        bar = "" if r["within_bar"] else f"below the {PIXEL_BARS[r['precision']]:.2%} pixel bar"
        lines.append(f"{head} {r['median_ms']:10.1f} {r['p90_ms']:9.1f} {r['images_per_s']:7.2f} {vs:>8} "
                     f"{r['pixels']:9.4%} {r['max_abs']:9.1e}  {bar}")
    return "\n".join(lines)
