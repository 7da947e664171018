"""OpenVINO's per-layer counters of two of the bench's graphs in one process (issue [P]): where the time goes.

    python benchmarks/ov_layer_profiles.py --batch 8 --official /tmp/crossformer-official/crossformer_cls.py \\
        --calib CALIB [--graphs peer,int8-openvino-hybrid] [--json profiles.json]

The graphs are the bench's (bench/graphs.py keys: ``peer`` = the authors' static export, their model from
``--official`` with our trained-like weights, seed 5; ``int8-openvino-hybrid`` = our bf16-hybrid INT8 graph
calibrated on ``--calib``), run by the bench's OpenVINORunner (bf16 hint, latency, 2 threads) with its per-layer
counters (bench/profile.ov_op_times sums them by layer type; this script keeps each node too), one after the other.
Prints, per graph, the wall median and the counters' sum by (layer type, kernel).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time

import numpy as np


def s_case_graphs(tmp: str, batch: int, calib: str, official: str | None = None):
    """The bench's graphs (bench/graphs.CaseGraphs) of trained-like CrossFormer-S (seed 5) at 224 x 224, made in
    ``tmp``; the peer is the authors' model from ``official``, else ours stands in for it."""
    import torch

    from crossformer_deploy.base.model_info import ModelInfo
    from crossformer_deploy.bench.graphs import CaseGraphs
    from crossformer_deploy.bench.official import load_official
    from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
    from crossformer_deploy.model.factory import build_model
    from crossformer_deploy.model.synthetic import trained_like

    torch.set_num_threads(2)
    model = trained_like(build_model("s", None, seed=0), seed=5)
    info = ModelInfo(variant="s", mode="classifier", num_classes=model.num_classes, weights="perturbed")
    peer = load_official(official, model.cfg, model.state_dict(), model.num_classes) if official else None
    plain = os.path.join(tmp, "plain.onnx")
    if not os.path.exists(plain):  # the dynamic export serves every batch
        save_onnx(to_onnx(model, info), plain)
    return CaseGraphs(model, info, (224, 224), batch, tmp, lambda: plain, calib, peer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--official", help="the authors' models/crossformer.py (else our model stands in for theirs)")
    p.add_argument("--calib", default=os.path.join(os.path.dirname(__file__), "..", "samples"))
    p.add_argument("--graphs", default="peer,int8-openvino-hybrid")
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--json")
    a = p.parse_args()

    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    x = np.random.default_rng(0).standard_normal((a.batch, 3, 224, 224), dtype=np.float32)
    out = {}
    with tempfile.TemporaryDirectory(prefix="ov-profiles-") as tmp:
        graphs = s_case_graphs(tmp, a.batch, a.calib, a.official)
        for key in a.graphs.split(","):
            kinds, nodes, wall = collections.defaultdict(float), collections.defaultdict(float), []
            with OpenVINORunner(graphs.get(key)[0], 2, "bf16", static_shape=x.shape, perf_count=True) as r:
                feed = {r.inputs[0].name: x}
                for _ in range(3):
                    r.run(feed)
                for _ in range(a.runs):
                    t = time.perf_counter()
                    r.run(feed)
                    wall.append(time.perf_counter() - t)
                    for node, layer, kernel, ms in r.profile():
                        kinds[f"{layer}|{kernel}"] += ms / a.runs
                        nodes[f"{node}|{layer}|{kernel}"] += ms / a.runs
            print(f"{key}: wall median {np.median(wall) * 1e3:.2f} ms, counters {sum(kinds.values()):.2f} ms")
            for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]):
                if v >= 0.005:
                    print(f"   {k.split('|')[0]:30s} {k.split('|')[1]:28s} {v:7.2f}")
            out[key] = {"wall_median_ms": float(np.median(wall) * 1e3), "kinds": kinds,
                        "nodes": {k: round(v, 4) for k, v in nodes.items() if v >= 0.001}}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=0)


if __name__ == "__main__":
    main()
