"""CrossFormer++-S against CrossFormer-S on the CPU: ONNX Runtime and OpenVINO, interleaved in one run.

    python benchmarks/pp_vs_s_latency.py [--batch 1] [--repeats 30] [--threads 2]

Exports both (random weights: latency does not depend on them) as the deployment would, the plain dynamic
graph and the onnxruntime target with the DPB folded for 224 (``--static 224x224 --target onnxruntime``), and
times each on ONNX Runtime and on OpenVINO (f32) at 224, candidates interleaved round by round
(crossformer_deploy.bench.timing). Prints the table and the CPU's flags; writes benchmarks/cpu/pp_vs_s_<cpu>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile

import numpy as np

from crossformer_deploy.bench.machine import CPU_FLAGS, cpu_model_and_flags
from crossformer_deploy.bench.timing import interleaved
from crossformer_deploy.engines.open_model import open_runner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    name, have = cpu_model_and_flags()
    flags = [f for f in CPU_FLAGS if f in have]
    x = np.random.default_rng(0).standard_normal((args.batch, 3, 224, 224), dtype=np.float32)
    fns, runners = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in ("s", "pp-s"):
            for graph, extra in (("plain", []), ("ort-target", ["--static", "224x224", "--target", "onnxruntime"])):
                path = os.path.join(tmp, f"{variant}_{graph}.onnx")
                subprocess.run(["crossformer-export", "--variant", variant, "-o", path, *extra], check=True,
                               capture_output=True)
                for provider in ("cpu", "openvino"):
                    r = open_runner(path, provider, threads=args.threads).load()
                    runners.append(r)
                    feed = {r.inputs[0].name: x}
                    fns[f"{variant} {graph} {'ORT' if provider == 'cpu' else 'OpenVINO'}"] = (
                        lambda r=r, feed=feed: r.run(feed))
        t = interleaved(fns, repeats=args.repeats, warmup=3, pause=0.05)
        for r in runners:
            r.close()
    rows = []
    print(f"CPU: {name}; flags: {', '.join(flags) or 'none of ' + ', '.join(CPU_FLAGS)}; {args.threads} threads, "
          f"batch {args.batch}, 224x224, {args.repeats} interleaved rounds")
    print(f"{'candidate':<32} {'median ms':>10} {'p90 ms':>8} {'pp-S / S time':>14}")
    for key, timing in t.items():
        variant, rest = key.split(" ", 1)
        base = t[f"s {rest}"]
        ratio = timing.median_ms / base.median_ms
        rows.append({"candidate": key, "median_ms": timing.median_ms, "p90_ms": timing.p90_ms,
                     "time_vs_s": ratio})
        print(f"{key:<32} {timing.median_ms:>10.1f} {timing.p90_ms:>8.1f} {ratio:>14.2f}")
    out = args.out or os.path.join(os.path.dirname(__file__), "cpu",
                                   "pp_vs_s_" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"cpu": name, "flags": flags, "threads": args.threads, "batch": args.batch,
                   "command": f"python benchmarks/pp_vs_s_latency.py --batch {args.batch} --repeats {args.repeats}",
                   "rows": rows}, f, indent=1)
    print("wrote", out)


if __name__ == "__main__":
    main()
