"""Time per op type of one backend, after the timing: ONNX Runtime's profiler, OpenVINO's per-layer counters."""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.bench.config import BACKENDS
from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

if TYPE_CHECKING:
    from crossformer_deploy.bench.backends import Context

PROFILABLE = tuple(k for k, b in BACKENDS.items() if b.runtime in ("ort", "ov"))


def profile_backend(name: str, ctx: Context, x: np.ndarray, runs: int) -> dict:
    spec = BACKENDS.get(name)
    if spec is not None and spec.runtime == "ort":
        ops = ort_op_times(ctx.graphs.get(spec.graph)[0], x, ctx.threads, runs)
    elif spec is not None and spec.runtime == "ov":
        ops = ov_op_times(ctx.graphs.get(spec.graph)[0], x, ctx.threads, spec.hint, runs)
    else:
        raise UsageError(f"--profile works on ort-* and ov-* backends, not {name!r}")
    total = sum(ops.values())
    return {"backend": name, "runs": runs, "total_ms": total,
            "ops_ms": dict(sorted(ops.items(), key=lambda kv: -kv[1]))}


def ort_op_times(path: str, x: np.ndarray, threads: int, runs: int) -> dict[str, float]:
    """ms per run by op type, from the "Node" events of ORT's trace (the first run, a warm-up, left out)."""
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
    ops: dict[str, float] = {}
    with OpenVINORunner(path, threads, hint, static_shape=x.shape, perf_count=True) as r:
        r.run({r.inputs[0].name: x})  # warm-up
        for _ in range(runs):
            r.run({r.inputs[0].name: x})
            for _, layer, kernel, ms in r.profile():
                key = f"{layer} [{kernel}]"
                ops[key] = ops.get(key, 0.0) + ms / runs
    return ops
