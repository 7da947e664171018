"""Sizes while tracing: graph values in a dynamic export, Python ints otherwise.

The model computes every size it needs from its inputs' shapes. In a dynamic export those shapes must stay graph
values (``Shape`` -> arithmetic), or the traced graph would be right at the export size only; in a fixed-size
export (``fixed_size_tracing``) and in eager mode they are Python ints, which also selects the reshape-based
grouping of ``model.grouping.group_by_reshape``.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

from crossformer_deploy.model.grouping import Size

_TRACE_SIZES = contextvars.ContextVar("crossformer_trace_sizes", default=True)


@contextlib.contextmanager
def fixed_size_tracing() -> Iterator[None]:
    """While tracing, take map sizes as constants (a fixed-size export) instead of graph values."""
    token = _TRACE_SIZES.set(False)
    try:
        yield
    finally:
        _TRACE_SIZES.reset(token)


def spatial_size(x: Tensor, dims: tuple[int, int] = (2, 3)) -> tuple[Size, Size]:
    """Sizes of two axes (default: H, W of an NCHW map): 0-d tensors while the ONNX exporter traces a dynamic
    graph, so every size computed from them stays a graph op instead of a constant baked for one input."""
    if torch.jit.is_tracing() and _TRACE_SIZES.get():
        shape = torch._shape_as_tensor(x)
        return shape[dims[0]], shape[dims[1]]
    return int(x.shape[dims[0]]), int(x.shape[dims[1]])
