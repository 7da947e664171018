"""Shared test helpers: exports made once per session, perturbed random weights."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import torch

from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.synthetic import perturb, strong_position_bias, trained_like

__all__ = ["perturb", "strong_position_bias", "trained_like"]  # re-exported for the tests


def cli(cmd: str, *args: str, env_extra: dict | None = None, cwd: str | None = None,
        prefix: tuple = ()) -> subprocess.CompletedProcess:
    """``crossformer-<cmd> args`` in a subprocess (``prefix``: e.g. a setpriv wrapper), with a test cache."""
    env = {**os.environ, "CROSSFORMER_DEPLOY_CACHE": os.environ.get("CROSSFORMER_TEST_CACHE", "/tmp/cf-test-cache"),
           **(env_extra or {})}
    return subprocess.run([*prefix, sys.executable, "-m", f"crossformer_deploy.cli.{cmd}_cmd", *args],
                          capture_output=True, text=True, env=env, timeout=600, cwd=cwd)


def error_lines(r: subprocess.CompletedProcess) -> list[str]:
    """stderr's lines but warnings; there must be no traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    return [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]


def assert_one_line_error(r: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one error line (warnings allowed beside it) holding every fragment."""
    lines = error_lines(r)
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def parity_model(mode: str = "classifier") -> CrossFormer:
    """CrossFormer-S for parity bounds: perturbed (logits span tens of units) with a trained-size position bias."""
    from crossformer_deploy.model.factory import build_model

    return trained_like(build_model("s", None, mode, 1000, seed=0))


# Faults a parity bound must catch (injected into a copy of the model, then exported and run).

def zero_position_bias(model: CrossFormer) -> CrossFormer:
    with torch.no_grad():
        for block in _blocks(model):
            block.attn.pos.pos3[2].weight.zero_()
            block.attn.pos.pos3[2].bias.zero_()
    return model


def lda_as_sda(model: CrossFormer) -> CrossFormer:
    for block in _blocks(model):
        block.lda = False
    return model


def _blocks(model: CrossFormer):
    from crossformer_deploy.model.crossformer import CrossFormerBlock

    return [m for m in model.modules() if isinstance(m, CrossFormerBlock)]


def torch_out(model: CrossFormer, x: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        y = model(torch.from_numpy(x))
    return [t.numpy() for t in ((y,) if isinstance(y, torch.Tensor) else y)]


def ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def per_size_constants(proto: onnx.ModelProto) -> list[tuple[str, tuple[int, ...]]]:
    """Constants shaped like something derived from one input size: a DPB bias [heads, N, N] (weights are
    rank 2 or 4) or an int64 index table (group / offset indices) — a dynamic graph must have none."""
    found = []
    tensors = [(t.name, tuple(t.dims), t.data_type) for t in proto.graph.initializer]
    for n in proto.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    tensors.append((n.output[0], tuple(a.t.dims), a.t.data_type))
    for name, dims, dtype in tensors:
        square = len(dims) == 3 and dims[-1] == dims[-2] >= 4
        index_table = dtype == onnx.TensorProto.INT64 and len(dims) >= 2 and min(dims) > 1
        if square or index_table:
            found.append((name, dims))
    return found
