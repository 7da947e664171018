"""classify_openvino against the Python OpenVINO runner: same model, same images; logits and latency.

    python examples/cpp/compare_python.py build/classify_openvino crossformer_t.onnx samples/chelsea.jpg

Both sides compile the graph reshaped to the one input shape, with PERFORMANCE_HINT=LATENCY, f32 and
OpenVINO's own thread count, and time --repeat inferences after a warm-up inside their own process (the
C++ host: ``--repeat``; Python: ``OpenVINORunner.run``, and the bare infer request beneath it). Rounds
alternate between the two so that a machine's drift hits both. Prints the max abs logit difference (C++
from the images vs Python from ``load_batch`` of the same images) and the median and best latency per round (on a
shared machine the best of N is the steadier number).
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx

from crossformer_deploy.base.images import load_batch
from crossformer_deploy.runtime.openvino_runner import OpenVINORunner


def cpp_side(exe: str, model: str, images: list[str], size: str, repeat: int,
             threads: int | None) -> tuple[np.ndarray, tuple[float, float]]:
    extra = ["--threads", str(threads)] if threads else []
    r = subprocess.run([exe, model, *images, "--size", size, "--json", "--repeat", str(repeat), *extra],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        sys.exit(f"compare_python.py: {exe} failed: {r.stderr.strip()}")
    times = re.search(r"median ([0-9.]+) ms, mean [0-9.]+ ms, min ([0-9.]+) ms", r.stderr)
    return np.array([p["logits"] for p in json.loads(r.stdout)], np.float32), (float(times[1]), float(times[2]))


def python_side(model: str, x: np.ndarray, repeat: int,
                threads: int | None) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    with OpenVINORunner(model, threads=threads, static_shape=x.shape) as runner:
        logits = next(iter(runner.run({"image": x}).values()))  # also the warm-up
        def timed(fn) -> tuple[float, float]:
            ms = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t0) * 1e3)
            return statistics.median(ms), min(ms)

        run_ms = timed(lambda: runner.run({"image": x}))
        request_ms = timed(lambda: runner.request.infer({0: x}))
    return logits, run_ms, request_ms


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("exe", help="the built classify_openvino")
    p.add_argument("model", help="an .onnx from crossformer-export")
    p.add_argument("images", nargs="+", help="one batch")
    p.add_argument("--size", help="N or HxW (default: the model's)")
    p.add_argument("--repeat", type=int, default=50, help="timed inferences per round (default 50)")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    p.add_argument("--threads", type=int, help="inference threads, both sides (default: OpenVINO's choice)")
    args = p.parse_args()
    meta = {p.key: json.loads(p.value) for p in onnx.load(args.model, load_external_data=False).metadata_props
            if p.key in ("input_size", "crop_ratio", "mean", "std")}
    text = args.size.lower() if args.size else "x".join(map(str, meta["input_size"]))
    size = (int(text.split("x")[0]), int(text.split("x")[-1]))
    x = load_batch(args.images, size, meta["crop_ratio"], meta["mean"], meta["std"])
    shape = "x".join(map(str, x.shape))
    for k in range(args.rounds):
        cpp, cpp_ms = cpp_side(args.exe, args.model, args.images, f"{size[0]}x{size[1]}", args.repeat,
                               args.threads)
        py, run_ms, request_ms = python_side(args.model, x, args.repeat, args.threads)
        print(f"round {k + 1}: input {shape}, max abs logits C++ - Python {np.abs(cpp - py).max():.3g} "
              f"(logits up to {np.abs(py).max():.3g}); median / min of {args.repeat} in ms: "
              f"C++ {cpp_ms[0]:.2f} / {cpp_ms[1]:.2f}, Python runner.run {run_ms[0]:.2f} / {run_ms[1]:.2f}, "
              f"Python infer request {request_ms[0]:.2f} / {request_ms[1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
