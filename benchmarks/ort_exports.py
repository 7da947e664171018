"""ONNX Runtime CPU on our exports vs PyTorch eager, CrossFormer-S at 224, measured side by side.

    python benchmarks/ort_exports.py [--batch 1] [--rounds 4] [--runs 10]

Each path runs in its own process, the processes taking turns round by round (``--rounds``), each turn
timing ``--runs`` consecutive runs after a warm-up. On these 2-core machines, PyTorch's OpenMP pool and
ONNX Runtime's pool in one process slow each other down (measured: ORT 67 ms with
OMP_WAIT_POLICY=PASSIVE vs 89 ms without, same graph), so one process per path is the fair setup.

Paths: PyTorch eager fp32; ORT on the plain dynamic export; the plain export at a fixed size; our
onnxruntime target, dynamic (DPB folded for sizes up to 384) and static; the INT8 Q/DQ graph of the
static onnxruntime target (calibrated on the three shipped samples: a speed number, not an accuracy one).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "samples")
PATHS = ["torch eager", "ort plain dynamic", "ort plain static", "ort target dynamic", "ort target static",
         "ort int8 target static"]


def export_all(d: str, batch: int) -> None:
    from crossformer_deploy.base.model_info import ModelInfo
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.export.pipeline import run_pipeline
    from crossformer_deploy.export.precision.int8 import quantize_int8
    from crossformer_deploy.model.factory import build_model

    model = build_model("s")
    dyn = ModelInfo("s", "classifier", 1000, "random-init seed=0")
    static = ModelInfo("s", "classifier", 1000, "random-init seed=0", dynamic=False, batch=batch)
    static_b = ModelInfo("s", "classifier", 1000, "random-init seed=0", dynamic=False)  # INT8 calibrates in batches
    graphs = {
        "ort plain dynamic": run_pipeline(to_onnx(model, dyn), "plain"),
        "ort plain static": run_pipeline(to_onnx(model, static), "plain"),
        "ort target dynamic": run_pipeline(to_onnx(model, dyn), "onnxruntime", max_size=(384, 384)),
        "ort target static": run_pipeline(to_onnx(model, static), "onnxruntime"),
        "ort int8 target static": quantize_int8(run_pipeline(to_onnx(model, static_b), "onnxruntime"), None, SAMPLES,
                                                count=3, progress=False),
    }
    for name, proto in graphs.items():
        save_onnx(proto, os.path.join(d, name.replace(" ", "_") + ".onnx"), check=False)


def child(name: str, d: str, batch: int, runs: int, threads: int) -> None:
    import numpy as np

    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    if name == "torch eager":
        import torch

        from crossformer_deploy.model.factory import build_model

        torch.set_num_threads(threads)
        model, xt = build_model("s"), torch.from_numpy(x)

        def fn():
            with torch.no_grad():
                return model(xt).numpy()
    else:
        from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(os.path.join(d, name.replace(" ", "_") + ".onnx"), threads=threads).load()

        def fn():
            return runner.run({"image": x})["logits"]
    out = fn()
    for _ in range(2):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    np.save(os.path.join(d, name.replace(" ", "_") + ".npy"), out)
    print(json.dumps(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.dir, args.batch, args.runs, args.threads)
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        export_all(d, args.batch)
        samples: dict[str, list[float]] = {p: [] for p in PATHS}
        for _ in range(args.rounds):
            for name in PATHS:
                r = subprocess.run([sys.executable, __file__, "--child", name, "--dir", d, "--batch", str(args.batch),
                                    "--runs", str(args.runs), "--threads", str(args.threads)],
                                   capture_output=True, text=True, check=True)
                samples[name] += json.loads(r.stdout.strip().splitlines()[-1])
        ref = np.load(os.path.join(d, "torch_eager.npy"))
        diffs = {p: float(np.abs(np.load(os.path.join(d, p.replace(" ", "_") + ".npy")) - ref).max()) for p in PATHS}
    med = {p: statistics.median(s) for p, s in samples.items()}
    print(f"CrossFormer-S b{args.batch} 224, {args.threads} threads, one process per path, "
          f"{args.rounds} rounds x {args.runs} runs; command: python benchmarks/ort_exports.py --batch {args.batch} "
          f"--rounds {args.rounds} --runs {args.runs}")
    print(f"{'path':>24} {'median ms':>10} {'x eager':>8} {'x ort plain dynamic':>20} {'max|diff| vs eager':>19}")
    for p in PATHS:
        print(f"{p:>24} {med[p]:10.1f} {med['torch eager'] / med[p]:8.2f} "
              f"{med['ort plain dynamic'] / med[p]:20.3f} {diffs[p]:19.1e}")


if __name__ == "__main__":
    main()
