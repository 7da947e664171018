"""What this CPU's int8 GEMMs can do under OpenVINO: the physical side of "where the time goes".

    python benchmarks/int8_peak.py [--batch 8] [--threads 2] [--repeats 20] [--json out.json]

Times one Q/DQ MatMul per CrossFormer-S MLP shape (fc1: C -> 4C and fc2: 4C -> C of each stage at 224, M = batch x
tokens) as OpenVINO's int8 FullyConnected, alone in a graph, and prints the MACs per second each reaches. The
best of them is the ceiling a whole-model int8 graph can approach; S is 4.9 GMAC an image, so ``4.9e9 * batch /
best`` is the time the MACs alone would take. A synthetic ceiling: no epilogue of a real layer (bias, GELU,
requantisation) and the activations in cache as often as the shape allows.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

S_DIMS, S_TOKENS, S_GMAC = (96, 192, 384, 768), (3136, 784, 196, 49), 4.9


def qdq_matmul(m: int, k: int, n: int) -> onnx.ModelProto:
    """x [m, k] f32 -> Q/DQ (u8) -> MatMul with DQ(int8 weight [k, n]) -> [m, n] f32: OpenVINO's int8 FC."""
    rng = np.random.default_rng(0)
    w = rng.integers(-63, 64, (k, n), dtype=np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.float32(0.01), "w_s"),
             numpy_helper.from_array(np.int8(0), "w_z"), numpy_helper.from_array(np.float32(0.05), "x_s"),
             numpy_helper.from_array(np.uint8(128), "x_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_dq"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_dq"]),
             helper.make_node("MatMul", ["x_dq", "w_dq"], ["y"])]
    graph = helper.make_graph(nodes, "qdq_matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def time_ov(path: str, m: int, k: int, threads: int, repeats: int) -> tuple[float, str]:
    """Median seconds per run and the layer's implementation as OpenVINO's counters name it."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                                "PERF_COUNT": True})
    req = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((m, k), dtype=np.float32)
    for _ in range(3):
        req.infer({0: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        req.infer({0: x})
        times.append(time.perf_counter() - t0)
    impl = next((f"{p.node_type} [{p.exec_type}]" for p in req.profiling_info
                 if p.node_type.startswith("FullyConnected")), "no FullyConnected")
    return float(np.median(times)), impl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from crossformer_deploy.bench.machine import CPU_FLAGS, cpu_model_and_flags

    cpu, flags = cpu_model_and_flags()
    print(f"CPU: {cpu}; flags: {', '.join(f for f in CPU_FLAGS if f in flags)}; threads {args.threads}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="int8-peak-") as d:
        for stage, (c, t) in enumerate(zip(S_DIMS, S_TOKENS)):
            for layer, (k, n) in (("fc1", (c, 4 * c)), ("fc2", (4 * c, c))):
                m = args.batch * t
                path = os.path.join(d, f"{stage}_{layer}.onnx")
                onnx.save(qdq_matmul(m, k, n), path)
                sec, impl = time_ov(path, m, k, args.threads, args.repeats)
                gmacs = m * k * n / sec / 1e9
                rows.append({"stage": stage, "layer": layer, "m": m, "k": k, "n": n, "ms": sec * 1e3,
                             "gmac_per_s": gmacs, "impl": impl})
                print(f"stage {stage} {layer}: [{m} x {k}] @ [{k} x {n}]  {sec * 1e3:8.3f} ms  {gmacs:7.1f} GMAC/s  "
                      f"{impl}", flush=True)
    best = max(r["gmac_per_s"] for r in rows)
    floor = S_GMAC * args.batch / best * 1e3
    print(f"best {best:.1f} GMAC/s: CrossFormer-S's {S_GMAC * args.batch:.1f} GMAC at b{args.batch} need at least "
          f"{floor:.1f} ms of int8 MACs on this CPU")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "flags": [f for f in CPU_FLAGS if f in flags], "threads": args.threads,
                       "batch": args.batch, "rows": rows, "best_gmac_per_s": best, "floor_ms": floor}, f, indent=1)


if __name__ == "__main__":
    main()
