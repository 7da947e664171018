"""Shared test helpers: exports made once per session, perturbed random weights."""
from __future__ import annotations

import numpy as np
import onnx
import torch

from crossformer_deploy.model.crossformer import CrossFormer


def perturb(model: CrossFormer, seed: int = 0, scale: float = 0.05) -> CrossFormer:
    """Random init leaves LayerNorm at (1, 0) and biases at 0: move them so that a slip shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(scale * torch.randn(p.shape, generator=g))
        if model.mode == "classifier":
            model.head.weight.mul_(20.0)  # logits of order 1, like a trained model's
    return model


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
