"""Two OpenVINO levers for CrossFormer-S at batch 8 (issue [P]), screened in one process, interleaved rounds.

    python benchmarks/ov_attention_levers.py sdpa [--batch 8] [--hint bf16]
    python benchmarks/ov_attention_levers.py settings [--batch 8,1] [--calib samples]

``sdpa``: one grouped attention of each stage (49 tokens, head dim 32, a position bias added before the softmax) as
OpenVINO builds it from our graph's ops (MatMul, Add, Softmax, MatMul) against OpenVINO's ScaledDotProductAttention
op, which an ONNX ``Attention`` (opset 23) becomes in OpenVINO's reader. Both pay the same input copies, so the
difference of the two is the attention's.

``settings``: CPU plugin properties that could shorten the gaps between small nodes (the wall time above the
per-layer counters' sum at batch 8), on the peer (a plain static export run in bf16; our model stands in for the
authors', which compiles to the same graph: benchmarks/README.md) and on ours (the bf16-hybrid INT8 graph).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

# (groups per image, heads) of CrossFormer-S's four stages at 224 with G = 7
S_STAGES = ((64, 3), (16, 6), (4, 12), (1, 24))
SETTINGS = {"base": {}, "denormals": {"CPU_DENORMALS_OPTIMIZATION": True}, "tbb-static": {"TBB_PARTITIONER": "STATIC"},
            "pinning": {"ENABLE_CPU_PINNING": True}}


def _config(hint: str, **extra: object) -> dict:
    return {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": 2, "INFERENCE_PRECISION_HINT": hint, **extra}


def _time(requests: dict, feeds: dict, rounds: int, inner: int = 1) -> dict[str, float]:
    """Median ms a call of each request, rounds interleaved so that drift hits all alike."""
    for key, r in requests.items():
        for _ in range(3):
            r.infer(feeds[key])
    times: dict = {k: [] for k in requests}
    for _ in range(rounds):
        for key, r in requests.items():
            t = time.perf_counter()
            for _ in range(inner):
                r.infer(feeds[key])
            times[key].append((time.perf_counter() - t) / inner)
    return {k: float(np.median(v)) * 1e3 for k, v in times.items()}


def sdpa(batch: int, hint: str) -> None:
    import openvino as ov
    from openvino import opset13 as ops

    core = ov.Core()
    for groups, heads in S_STAGES:
        n = batch * groups
        bias = np.random.default_rng(heads).standard_normal((1, heads, 49, 49)).astype(np.float32) * 2
        models = {}
        for kind in ("matmuls", "sdpa"):
            q, k, v = (ops.parameter([n, heads, 49, 32], np.float32, name=x) for x in "qkv")
            scale = np.float32(32 ** -0.5)
            if kind == "sdpa":
                out = ops.scaled_dot_product_attention(q, k, v, ops.constant(bias), ops.constant(scale))
            else:
                s = ops.matmul(ops.multiply(q, ops.constant(scale)), k, False, True)
                out = ops.matmul(ops.softmax(ops.add(s, ops.constant(bias)), -1), v, False, False)
            models[kind] = core.compile_model(ov.Model([out], [q, k, v]), "CPU", _config(hint)).create_infer_request()
        rng = np.random.default_rng(0)
        x = [rng.standard_normal((n, heads, 49, 32), dtype=np.float32) for _ in range(3)]
        diff = np.abs(models["sdpa"].infer(x)[0] - models["matmuls"].infer(x)[0]).max()
        med = _time(models, {k: x for k in models}, rounds=30)
        print(f"b{batch} {hint} {n:4d} groups x {heads:2d} heads: matmuls {med['matmuls']:.3f} ms, "
              f"SDPA {med['sdpa']:.3f} ms (SDPA {med['matmuls'] / med['sdpa']:.2f}x), max|diff| {diff:.1e}", flush=True)


def settings(batches: list[int], calib: str) -> None:
    import openvino as ov
    from ov_layer_profiles import s_case_graphs

    core = ov.Core()
    with tempfile.TemporaryDirectory(prefix="ov-levers-") as tmp:
        for batch in batches:
            graphs = s_case_graphs(tmp, batch, calib)
            requests = {}
            for name, key in (("peer bf16", "peer"), ("ours hybrid", "int8-openvino-hybrid")):
                m = core.read_model(graphs.get(key)[0])
                m.reshape({m.inputs[0].get_any_name(): [batch, 3, 224, 224]})
                for setting, extra in SETTINGS.items():
                    compiled = core.compile_model(m, "CPU", _config("bf16", **extra))
                    requests[(name, setting)] = compiled.create_infer_request()
            x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
            med = _time(requests, {k: [x] for k in requests}, rounds=12 if batch > 1 else 30,
                        inner=5 if batch == 1 else 1)
            for setting in SETTINGS:
                p, o = med[("peer bf16", setting)], med[("ours hybrid", setting)]
                p0, o0 = med[("peer bf16", "base")], med[("ours hybrid", "base")]
                print(f"b{batch} {setting:>10}: peer bf16 {p:7.2f} ms, ours hybrid {o:7.2f} ms, ours {p / o:.3f}x the "
                      f"peer (against base: peer {p0 / p:.3f}x, ours {o0 / o:.3f}x)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["sdpa", "settings"])
    p.add_argument("--batch", default="8", help="sdpa: one batch; settings: a comma list")
    p.add_argument("--hint", default="bf16", help="(sdpa) OpenVINO inference precision")
    p.add_argument("--calib", default=os.path.join(os.path.dirname(__file__), "..", "samples"),
                   help="(settings) calibration images of the INT8 graph (timing only)")
    a = p.parse_args()
    if a.what == "sdpa":
        sdpa(int(a.batch), a.hint)
    else:
        settings([int(b) for b in a.batch.split(",")], a.calib)


if __name__ == "__main__":
    main()
