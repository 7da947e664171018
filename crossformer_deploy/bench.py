"""CPU benchmark of every path from a CrossFormer to an answer: PyTorch, ONNX Runtime, OpenVINO.

Per (size, batch) case: graphs are exported once into a temp dir, every backend is built (a backend
that cannot be built is skipped with one line of note, never the whole run), its outputs are compared
with PyTorch eager on the same input (the accuracy cost), then all are timed together by
``timing.interleaved``, round-robin, so that load or clock drift on the machine hits all alike.
The bar (DESIGN.md §4): the best path >= 1.2x faster than OpenVINO bf16 on the plain export.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from .errors import UsageError, first_line
from .export.metadata import ModelInfo
from .export.onnx_export import export, output_names, save_onnx, to_onnx
from .model.factory import build_model, weights_label
from .runtime.parity import TOLERANCES, Tolerance, cosine_rows
from .timing import interleaved

# Order = table order. precision decides the tolerance an accuracy check is held to.
BACKENDS: dict[str, str] = {
    "torch": "fp32", "torch-compile": "fp32", "torch-bf16": "bf16",
    "ort": "fp32", "ort-static": "fp32", "ort-target": "fp32", "ort-fp16": "fp16", "ort-int8": "int8",
    "ov-f32": "fp32", "ov-bf16": "bf16", "ov-target-bf16": "bf16", "ov-int8": "int8",
    "tensorrt": "fp32", "torch-cuda": "fp16",
}
BASELINE, GOAL_REF, GOAL_RATIO = "torch", "ov-bf16", 1.2
# DESIGN.md §4 has no bf16 row: bf16 paths are held to the INT8 cosine bar (a looser one would hide a bug,
# a tighter one fails on rounding alone).
BAR = {**TOLERANCES, "bf16": Tolerance(min_cosine=TOLERANCES["int8"].min_cosine)}
CPU_FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx2")


@dataclass
class BenchConfig:
    variant: str | None = "s"
    weights: str | None = None
    sizes: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)])
    batches: list[int] = field(default_factory=lambda: [1])
    backends: list[str] = field(default_factory=lambda: list(BACKENDS))
    threads: int = 2
    repeats: int = 20
    warmup: int = 3
    block: int = 3  # consecutive timed runs per backend and round
    pause: float = 0.3  # seconds before each backend's turn: the previous one's thread pool goes idle
    seed: int = 0
    calib: str | None = None  # image folder for INT8 calibration (default: seeded noise images)
    profile_backend: str | None = None  # ort-* or ov-*: per-op-type times after the timing


@dataclass
class Candidate:
    """A built backend: ``fn`` maps the input image to outputs by name."""

    fn: Callable[[np.ndarray], dict[str, np.ndarray]]
    graph: str  # what it runs, for the report
    precision: str  # what it really computes in (e.g. OpenVINO's resolved hint)
    runner: object = None  # kept alive for the run; closed at the end


@dataclass
class Result:
    size: str
    batch: int
    backend: str
    status: str  # ok | skipped | failed
    note: str = ""
    graph: str = ""
    precision: str = ""
    build_s: float | None = None
    median_ms: float | None = None
    p90_ms: float | None = None
    images_per_s: float | None = None
    vs_torch: float | None = None
    vs_ov_bf16: float | None = None
    max_abs: float | None = None
    cosine: float | None = None
    within_tolerance: bool | None = None


def check_backends(names: list[str]) -> list[str]:
    bad = [n for n in names if n not in BACKENDS]
    if bad:
        raise UsageError(f"unknown backend {bad[0]!r}; choose from {', '.join(BACKENDS)}")
    return list(dict.fromkeys(names))


# -- optional parts of the project (other engineers' work): guarded, so a missing one skips its rows

def optional(module: str, attr: str) -> Callable:
    """The function ``module.attr``, or a UsageError saying it is not there (which becomes a skip note)."""
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UsageError(f"{module}.{attr} is not available ({type(e).__name__}: {e})") from None


def run_pipeline(proto: onnx.ModelProto, target: str) -> onnx.ModelProto:
    return optional("crossformer_deploy.export.pipeline", "run_pipeline")(proto, target)


def has_pipeline() -> bool:
    try:
        optional("crossformer_deploy.export.pipeline", "run_pipeline")
    except UsageError:
        return False
    return True


def _missing_pipeline() -> list:
    optional("crossformer_deploy.export.pipeline", "run_pipeline")  # raises the note
    return []


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    return optional("crossformer_deploy.export.precision.fp16", "to_fp16")(proto)


def quantize_int8(proto: onnx.ModelProto, calib_dir: str, size: tuple[int, int], cache_path: str) -> onnx.ModelProto:
    fn = optional("crossformer_deploy.export.precision.int8", "quantize_int8")
    return fn(proto, None, calib_dir, count=64, size=size, cache_path=cache_path, progress=False)


# -- graphs of one case, made on first use and shared by the backends that run them

class CaseGraphs:
    """ONNX files of one (size, batch) case in ``tmpdir``; each made once, its failure remembered."""

    def __init__(self, model, info: ModelInfo, size: tuple[int, int], batch: int, tmpdir: str,
                 plain_path: Callable[[], str], calib_dir: str | None = None):
        self.model, self.info, self.size, self.batch, self.tmpdir = model, info, size, batch, tmpdir
        self.calib_dir = calib_dir
        self.plain = plain_path  # the dynamic export is size-independent: one per run
        self._memo: dict[str, tuple[str, str] | Exception] = {}

    def get(self, key: str) -> tuple[str, str]:
        """(path, description) of graph ``key``; raises the error that made it fail, every time."""
        if key not in self._memo:
            try:
                # Graph tools (Polygraphy, graphsurgeon) print warnings on stdout: keep stdout for the table.
                with contextlib.redirect_stdout(sys.stderr):
                    self._memo[key] = getattr(self, "_" + key.replace("-", "_"))()
            except Exception as e:  # becomes the skip note of every backend needing it
                self._memo[key] = e
        got = self._memo[key]
        if isinstance(got, Exception):
            raise got
        return got

    def _path(self, key: str) -> str:
        return os.path.join(self.tmpdir, f"{key}_{self.size[0]}x{self.size[1]}_b{self.batch}.onnx")

    def _static(self, batch: int | None = -1) -> tuple[str, str]:
        batch = self.batch if batch == -1 else batch
        info = ModelInfo(**{**asdict(self.info), "input_size": self.size, "dynamic": False, "batch": batch})
        path = self._path("static" if batch else "static_anybatch")
        export(self.model, path, info)
        return path, f"plain static {batch or 'B'}x3x{self.size[0]}x{self.size[1]}"

    def _static_anybatch(self) -> tuple[str, str]:
        # INT8 calibration feeds batches of its own size, which a fixed-batch graph refuses.
        return self._static(batch=None)

    def _derived(self, key: str, base: str, steps: list[tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]]]
                 ) -> tuple[str, str]:
        path, desc = self.get(base)
        proto = onnx.load(path)
        for what, make in steps:
            proto = make(proto)
            desc += f" -> {what}"
        path = self._path(key)
        save_onnx(proto, path, check=False)  # the passes check their own output; the runtime is the test here
        return path, desc

    def _passes(self, target: str) -> list[tuple[str, Callable]]:
        """Precision is applied to our target graph when the passes exist, else to the plain static one."""
        if not has_pipeline():
            return []
        return [(f"run_pipeline({target})", lambda p: run_pipeline(p, target))]

    def _target_onnxruntime(self) -> tuple[str, str]:
        return self._derived("target_onnxruntime", "static", self._passes("onnxruntime") or _missing_pipeline())

    def _target_openvino(self) -> tuple[str, str]:
        return self._derived("target_openvino", "static", self._passes("openvino") or _missing_pipeline())

    def _fp16(self) -> tuple[str, str]:
        return self._derived("fp16", "static", [*self._passes("onnxruntime"), ("to_fp16", to_fp16)])

    def _calibration(self) -> str:
        """--calib, else a few seeded noise images: ranges for timing, not for accuracy (see README)."""
        if self.calib_dir:
            return self.calib_dir
        folder = os.path.join(self.tmpdir, "calib")
        if not os.path.isdir(folder):
            from PIL import Image

            os.makedirs(folder)
            rng = np.random.default_rng(1)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (*self.size, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
        return folder

    def _int8(self, target: str) -> tuple[str, str]:
        # One range cache per run: the openvino and onnxruntime target graphs are the same graph today,
        # so the second quantization reuses the first one's calibration.
        cache = os.path.join(self.tmpdir, "int8_ranges.json")
        quantize = ("quantize_int8", lambda p: quantize_int8(p, self._calibration(), self.size, cache))
        return self._derived(f"int8_{target}", "static-anybatch", [*self._passes(target), quantize])

    def _int8_onnxruntime(self) -> tuple[str, str]:
        return self._int8("onnxruntime")

    def _int8_openvino(self) -> tuple[str, str]:
        return self._int8("openvino")


# -- backends: name -> builder(ctx) -> Candidate

@dataclass
class Context:
    model: object
    graphs: CaseGraphs
    threads: int
    shape: tuple[int, int, int, int]


def _torch(ctx: Context, compiled: bool = False, bf16: bool = False) -> Candidate:
    import torch

    module = torch.compile(ctx.model) if compiled else ctx.model
    names = output_names(ctx.model)

    def fn(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = module(torch.from_numpy(x))
        ys = (y,) if isinstance(y, torch.Tensor) else y
        return {n: t.float().numpy() for n, t in zip(names, ys)}

    what = "torch.compile (inductor)" if compiled else "eager"
    return Candidate(fn, f"PyTorch {what}" + (" + autocast bf16" if bf16 else ""), "bf16" if bf16 else "fp32")


def _runner_candidate(runner, graph: str, precision: str) -> Candidate:
    runner.load()
    name = runner.inputs[0].name
    return Candidate(lambda x: runner.run({name: x}), graph, precision, runner)


def _ort(ctx: Context, key: str, precision: str, provider: str = "cpu") -> Candidate:
    from .runtime.onnxruntime_runner import OnnxRuntimeRunner

    path, desc = (ctx.graphs.plain(), "plain dynamic") if key == "plain" else ctx.graphs.get(key)
    return _runner_candidate(OnnxRuntimeRunner(path, provider, ctx.threads), f"ORT {provider}: {desc}", precision)


def _ov(ctx: Context, key: str, hint: str | None) -> Candidate:
    from .runtime.openvino_runner import OpenVINORunner

    path, desc = (ctx.graphs.plain(), "plain dynamic") if key == "plain" else ctx.graphs.get(key)
    # Reshaped to the case's static shape: the baseline gets OpenVINO's fast path too, so the 1.2x bar
    # is measured against the best a user gets from OpenVINO on the plain export.
    runner = OpenVINORunner(path, ctx.threads, hint, static_shape=ctx.shape)
    runner.load()
    return _runner_candidate(runner, f"OpenVINO CPU: {desc}, reshaped static", runner.effective_precision)


def _tensorrt(ctx: Context) -> Candidate:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise UsageError("TensorRT is not installed (pip install tensorrt; needs an NVIDIA GPU)") from None
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        raise UsageError("ONNX Runtime has no TensorrtExecutionProvider here (install onnxruntime-gpu)")
    return _ort(ctx, "static", "fp32", provider="tensorrt")


def _torch_cuda(ctx: Context) -> Candidate:
    from .runtime.torch_cuda_runner import TorchCudaRunner

    runner = TorchCudaRunner(ctx.model)
    return _runner_candidate(runner, "PyTorch fp16 on CUDA: fused Triton attention, CUDA graphs", "fp16")


BUILDERS: dict[str, Callable[[Context], Candidate]] = {
    "torch": _torch,
    "torch-compile": lambda c: _torch(c, compiled=True),
    "torch-bf16": lambda c: _torch(c, bf16=True),
    "ort": lambda c: _ort(c, "plain", "fp32"),
    "ort-static": lambda c: _ort(c, "static", "fp32"),
    "ort-target": lambda c: _ort(c, "target-onnxruntime", "fp32"),
    "ort-fp16": lambda c: _ort(c, "fp16", "fp16"),
    "ort-int8": lambda c: _ort(c, "int8-onnxruntime", "int8"),
    "ov-f32": lambda c: _ov(c, "plain", "f32"),
    "ov-bf16": lambda c: _ov(c, "plain", "bf16"),
    "ov-target-bf16": lambda c: _ov(c, "target-openvino", "bf16"),
    "ov-int8": lambda c: _ov(c, "int8-openvino", None),  # Q/DQ layers in int8, the rest in OpenVINO's default
    "tensorrt": _tensorrt,
    "torch-cuda": _torch_cuda,
}


def one_line(e: BaseException) -> str:
    """A backend's failure for the table's note column (our own errors need no type name)."""
    return first_line(e, 240) if isinstance(e, UsageError) else f"{type(e).__name__}: {first_line(e, 200)}"


# -- one case

def bench_case(cfg: BenchConfig, model, info: ModelInfo, size: tuple[int, int], batch: int, tmpdir: str,
               plain_path: Callable[[], str], log: Callable[[str], None]) -> tuple[list[Result], dict | None]:
    label = f"{size[0]}x{size[1]}"
    graphs = CaseGraphs(model, info, size, batch, tmpdir, plain_path, cfg.calib)
    ctx = Context(model, graphs, cfg.threads, (batch, 3, *size))
    x = np.random.default_rng(cfg.seed).standard_normal((batch, 3, *size), dtype=np.float32)
    reference = _torch(ctx).fn(x)  # eager fp32 on the same input: what every backend is checked against
    results: dict[str, Result] = {}
    cands: dict[str, Candidate] = {}
    for name in cfg.backends:
        r = results[name] = Result(label, batch, name, "ok")
        t0 = time.perf_counter()
        try:
            cand = BUILDERS[name](ctx)
            got = cand.fn(x)  # first run inside the build time: torch.compile compiles here
        except Exception as e:  # one backend failing must not end the run
            r.status, r.note = "skipped", one_line(e)
            log(f"{label} b{batch} {name}: skipped: {r.note}")
            continue
        r.build_s = time.perf_counter() - t0
        r.graph, r.precision = cand.graph, cand.precision
        _accuracy(r, reference, got, BAR[BACKENDS[name]])
        cands[name] = cand
    _time(cfg, cands, results, x, batch, f"{label} b{batch}")
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
    from tqdm import tqdm

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
    bar = tqdm(total=cfg.repeats, desc=desc, file=sys.stderr, disable=None, leave=False, unit="round")
    try:
        timings = interleaved(fns, cfg.repeats, cfg.warmup, on_round=lambda _: bar.update(1), block=cfg.block,
                              pause=cfg.pause)
    finally:
        bar.close()
    for name, t in timings.items():
        r = results[name]
        if name in errors:
            r.status, r.note = "failed", f"while timing: {one_line(errors[name])}"
            continue
        r.median_ms, r.p90_ms, r.images_per_s = t.median_ms, t.p90_ms, batch / t.median_ms * 1e3
    for ref_name, attr in ((BASELINE, "vs_torch"), (GOAL_REF, "vs_ov_bf16")):
        ref = results.get(ref_name)
        if ref is None or ref.median_ms is None:
            continue
        for r in results.values():
            if r.median_ms:
                setattr(r, attr, ref.median_ms / r.median_ms)


def goal(results: list[Result]) -> dict | None:
    """The fastest path within its tolerance, other than the reference itself, against the 1.2x bar."""
    ref = next((r for r in results if r.backend == GOAL_REF and r.median_ms), None)
    pool = [r for r in results if r.median_ms and r.backend != GOAL_REF and r.within_tolerance]
    if ref is None or not pool:
        return None
    best = min(pool, key=lambda r: r.median_ms)
    return {"size": best.size, "batch": best.batch, "best": best.backend, "vs_ov_bf16": best.vs_ov_bf16,
            "bar": GOAL_RATIO, "met": bool(best.vs_ov_bf16 >= GOAL_RATIO)}


# -- profiling (one backend, after the timing)

def profile_backend(name: str, ctx: Context, x: np.ndarray, runs: int) -> dict:
    """Time per op type: ONNX Runtime's profiler for ort-*, OpenVINO's PERF_COUNT for ov-*."""
    if name.startswith("ort"):
        key = {"ort": "plain", "ort-static": "static", "ort-target": "target-onnxruntime", "ort-fp16": "fp16",
               "ort-int8": "int8-onnxruntime"}[name]
        path = ctx.graphs.plain() if key == "plain" else ctx.graphs.get(key)[0]
        ops = ort_op_times(path, x, ctx.threads, runs)
    elif name.startswith("ov"):
        key, hint = {"ov-f32": ("plain", "f32"), "ov-bf16": ("plain", "bf16"),
                     "ov-target-bf16": ("target-openvino", "bf16"), "ov-int8": ("int8-openvino", None)}[name]
        path = ctx.graphs.plain() if key == "plain" else ctx.graphs.get(key)[0]
        ops = ov_op_times(path, x, ctx.threads, hint, runs)
    else:
        raise UsageError(f"--profile works on ort-* and ov-* backends, not {name!r}")
    total = sum(ops.values())
    return {"backend": name, "runs": runs, "total_ms": total,
            "ops_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}


def ort_op_times(path: str, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """ms per run by op type, from the "Node" events of ORT's trace (the first run, a warm-up, left out)."""
    import json

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(os.path.dirname(path), "ort_profile")
    opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = threads, 1, 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: x}
    for _ in range(runs + 1):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    after = starts[1] if len(starts) > 1 else 0
    ops: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= after:
            op = e.get("args", {}).get("op_name", "?")
            ops[op] = ops.get(op, 0.0) + e["dur"] / 1e3 / runs
    return ops


def ov_op_times(path: str, x: np.ndarray, threads: int, hint: str | None, runs: int) -> dict[str, float]:
    """ms per run by layer type (and kernel), from OpenVINO's per-layer counters, averaged over runs."""
    from .runtime.openvino_runner import OpenVINORunner

    ops: dict[str, float] = {}
    with OpenVINORunner(path, threads, hint, static_shape=x.shape, perf_count=True) as r:
        r.run({r.inputs[0].name: x})  # warm-up
        for _ in range(runs):
            r.run({r.inputs[0].name: x})
            for layer, kernel, ms in r.profile():
                key = f"{layer} [{kernel}]"
                ops[key] = ops.get(key, 0.0) + ms / runs
    return ops


# -- the whole run

def machine_info() -> dict:
    cpu, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k.strip() == "model name" and cpu is None:
                    cpu = v.strip()
                elif k.strip() == "flags":
                    flags = set(v.split())
    except OSError:  # not Linux: the platform's own (vaguer) name
        pass
    cpu = cpu or platform.processor() or "?"
    import onnxruntime
    import torch

    from .runtime.openvino_runner import openvino_version

    return {"cpu": cpu, "flags": {f: f in flags for f in CPU_FLAGS}, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino_version(), "numpy": np.__version__}


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Every case of ``cfg``; returns the report (what --json writes)."""
    import torch

    torch.set_num_threads(cfg.threads)
    model = build_model(cfg.variant, cfg.weights, seed=0)
    info = ModelInfo(variant=cfg.variant or model.cfg.name, mode="classifier", num_classes=model.num_classes,
                     weights=weights_label(cfg.weights))
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
                rows, prof = bench_case(cfg, model, info, size, batch, tmp, plain_path, log)
                results += rows
                if prof:
                    profiles.append({"size": f"{size[0]}x{size[1]}", "batch": batch, **prof})
                if g := goal(rows):
                    goals.append(g)
    config = {**asdict(cfg), "sizes": [f"{h}x{w}" for h, w in cfg.sizes]}
    return {"model": info.variant, "machine": machine_info(), "config": config,
            "results": [asdict(r) for r in results], "goal": goals, "profiles": profiles}


# -- output

COLUMNS = (("median_ms", "median ms", 10, ".2f"), ("p90_ms", "p90 ms", 9, ".2f"), ("images_per_s", "img/s", 8, ".1f"),
           ("vs_torch", "x torch", 8, ".2f"), ("vs_ov_bf16", "x ov-bf16", 9, ".2f"), ("max_abs", "max|abs|", 9, ".1e"),
           ("cosine", "cosine", 9, ".6f"))


def format_table(report: dict) -> str:
    head = f"{'size':>9} {'batch':>5} {'backend':<15} " + " ".join(f"{t:>{w}}" for _, t, w, _ in COLUMNS) + "  note"
    lines = [head]
    for r in report["results"]:
        cells = " ".join(f"{'-' if r[k] is None else format(r[k], f):>{w}}" for k, _, w, f in COLUMNS)
        note = r["note"] or ("outside tolerance" if r["within_tolerance"] is False else "")
        if r["status"] != "ok":
            note = f"{r['status']}: {note}"
        lines.append(f"{r['size']:>9} {r['batch']:>5} {r['backend']:<15} {cells}  {note}".rstrip())
    for g in report["goal"]:
        lines.append(f"{g['size']} b{g['batch']}: best {g['best']} is {g['vs_ov_bf16']:.2f}x OpenVINO bf16 "
                     f"(bar {g['bar']}x): {'met' if g['met'] else 'NOT met'}")
    for p in report["profiles"]:
        lines.append(f"profile {p['backend']} {p['size']} b{p['batch']} ({p['total_ms']:.2f} ms of ops per run):")
        for op, ms in list(p["ops_ms"].items())[:20]:
            lines.append(f"  {op:<48} {ms:9.3f} ms {100 * ms / max(p['total_ms'], 1e-12):6.1f} %")
    return "\n".join(lines)


def check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'crossformer-deploy[plot]'") from None


def plot(report: dict, path: str) -> None:
    """One panel per case: images/s per backend, the OpenVINO bf16 reference and the 1.2x bar as lines."""
    check_plot_available()
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    cases = list(dict.fromkeys((r["size"], r["batch"]) for r in report["results"]))
    fig, axes = plt.subplots(len(cases), 1, figsize=(8, 0.4 + 3.2 * len(cases)), squeeze=False)
    for ax, (size, batch) in zip(axes[:, 0], cases):
        rows = [r for r in report["results"] if (r["size"], r["batch"]) == (size, batch) and r["images_per_s"]]
        ax.barh([r["backend"] for r in rows], [r["images_per_s"] for r in rows], color="tab:blue")
        for i, r in enumerate(rows):
            if r["vs_ov_bf16"]:
                ax.text(r["images_per_s"], i, f" {r['vs_ov_bf16']:.2f}x", va="center", fontsize=8)
        ref = next((r for r in rows if r["backend"] == GOAL_REF), None)
        if ref:
            ax.axvline(ref["images_per_s"], color="gray", ls="--", lw=1, label="OpenVINO bf16")
            ax.axvline(GOAL_RATIO * ref["images_per_s"], color="tab:red", ls=":", lw=1, label=f"{GOAL_RATIO}x bar")
            ax.legend(loc="upper right", fontsize=8)  # the first rows (PyTorch) are the short bars
        ax.set_xlim(0, 1.15 * max((r["images_per_s"] for r in rows), default=1))  # room for the labels
        ax.invert_yaxis()
        ax.set_title(f"{size}, batch {batch}: images/s (ratio vs OpenVINO bf16)", fontsize=10)
    fig.suptitle(f"CrossFormer-{report['model'].upper()} on {report['machine']['cpu']}, "
                 f"{report['config']['threads']} threads", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
