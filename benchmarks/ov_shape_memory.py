"""What a dynamic graph costs on OpenVINO's CPU plugin, and what compiling it per input shape gives back.

    python benchmarks/ov_shape_memory.py --model mask_rcnn_s.onnx --sizes 800x1216,672x1344,1088x800 \\
        --batch 1,2 --threads 2 --repeats 3 --json benchmarks/ov_shape_memory_zen4.json --json-key mask_rcnn_s

For each mode, in a fresh process (so that its peak resident memory is its own): ONNX Runtime (reference), OpenVINO
compiling the dynamic graph once (``per_shape=0``, what OpenVINO does by default), and OpenVINO compiling one static
model per input shape, keeping the K most recent (``ov-per-shape:K``, ``OpenVINORunner(per_shape=K)``; what
``crossformer-infer --provider openvino`` does, with K from ``--openvino-shapes``). Each
process runs the cases in order (every size at every batch), then the first case again:

- ``load_s``: reading (and for the dynamic compile, compiling) the model;
- per case: ``first_s`` (the first call: for per-shape, its compile), ``median_s`` over ``--repeats`` more calls,
  and the process's resident memory after the case (``rss_gb``);
- ``peak_rss_gb``: the process's peak resident memory (``ru_maxrss``), ``total_s``: load and every call.

Inputs are random normal images (the work does not depend on the values but for a detector's NMS candidates); a
detector's ``image_size`` is the full input, a segmenter's ``output_size`` the input's size. Outputs of the
OpenVINO modes are compared with ONNX Runtime's (``max_abs_vs_ort`` over the first output of the first case).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

MODES = ("ort", "ov-dynamic", "ov-per-shape:1", "ov-per-shape:2", "ov-per-shape:4")


def _feeds(runner, batch: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
    x = np.random.default_rng(0).standard_normal((batch, 3, *size), dtype=np.float32)
    feeds = {"image": x}
    names = {s.name for s in runner.inputs}
    if "image_size" in names:  # a detector: the whole input is the image
        feeds["image_size"] = np.asarray([[*size, *size]] * batch, np.int64)
    if "output_size" in names:  # a segmenter: logits resized back to the input's size
        feeds["output_size"] = np.asarray(size, np.int64)
    return feeds


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def child(mode: str, model: str, cases: list[tuple[int, tuple[int, int]]], threads: int, repeats: int) -> dict:
    from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    t0 = time.perf_counter()
    runner = (OnnxRuntimeRunner(model, threads=threads) if mode == "ort" else
              OpenVINORunner(model, threads, "f32", per_shape=int(mode.split(":")[1]) if ":" in mode else 0)).load()
    out: dict = {"mode": mode, "load_s": time.perf_counter() - t0, "cases": []}
    first_out = None
    for batch, size in [*cases, cases[0]]:
        feeds = _feeds(runner, batch, size)
        t = time.perf_counter()
        res = runner.run(feeds)
        first = time.perf_counter() - t
        if first_out is None:
            first_out = next(iter(res.values()))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            runner.run(feeds)
            times.append(time.perf_counter() - t)
        out["cases"].append({"batch": batch, "size": f"{size[0]}x{size[1]}", "first_s": first,
                             "median_s": float(np.median(times)) if times else None, "rss_gb": _rss_gb()})
    out["total_s"] = time.perf_counter() - t0
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    np.save(os.environ["OV_SHAPE_MEMORY_OUT"], first_out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a dynamic ONNX graph (classifier, segmenter or detector)")
    ap.add_argument("--sizes", default="800x1216", help="HxW[,HxW...]")
    ap.add_argument("--batch", default="1", help="B[,B...]")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json")
    ap.add_argument("--json-key")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    cases = [(int(b), s) for b in args.batch.split(",") for s in sizes]
    if args.child:
        print(json.dumps(child(args.child, args.model, cases, args.threads, args.repeats)))
        return
    report = {"model": os.path.basename(args.model), "threads": args.threads, "repeats": args.repeats,
              "command": "python benchmarks/ov_shape_memory.py " + " ".join(sys.argv[1:]), "modes": {}}
    outs = {}
    for mode in args.modes.split(","):
        path = f"/tmp/ov_shape_memory_{os.getpid()}_{mode}.npy"
        r = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--child", mode], capture_output=True, text=True,
                           env={**os.environ, "OV_SHAPE_MEMORY_OUT": path})
        if r.returncode:
            print(f"{mode}: failed (rc {r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
            report["modes"][mode] = {"failed": r.returncode}
            continue
        res = report["modes"][mode] = json.loads(r.stdout.strip().splitlines()[-1])
        outs[mode] = np.load(path)
        os.unlink(path)
        if "ort" in outs and mode != "ort":
            res["max_abs_vs_ort"] = float(np.abs(outs[mode] - outs["ort"]).max())
        steps = "  ".join(f"b{c['batch']} {c['size']}: {c['first_s']:.2f}/{c['median_s'] or 0:.2f}s {c['rss_gb']:.1f}GB"
                          for c in res["cases"])
        print(f"{mode:15s} load {res['load_s']:.1f}s  peak {res['peak_rss_gb']:.2f} GB  total {res['total_s']:.1f}s"
              f"  | first/median, rss after: {steps}", flush=True)
    if args.json:
        from det_vs_mmdet import save  # the same --json / --json-key rule (atomic, the file's other keys kept)

        save(args, report)

if __name__ == "__main__":
    main()
