"""cleanup: constant folding, shape inference and dead-node removal, with the libraries' own tools.

Polygraphy's ``fold_constants`` (ONNX Runtime evaluates every constant subgraph, onnx-graphsurgeon
removes what is dead, ONNX shape inference runs in between). It runs in a scratch directory:
when ONNX Runtime's symbolic shape inference fails inside it, it leaves a ``sym_shape_infer_temp.onnx``
in the working directory.
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile

import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
from polygraphy.backend.onnx import fold_constants
from polygraphy.logger import G_LOGGER


@contextlib.contextmanager
def _in_scratch_dir():
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="crossformer-fold-") as d:
        os.chdir(d)
        try:
            yield
        finally:
            os.chdir(cwd)


def fold_model(model: onnx.ModelProto) -> onnx.ModelProto:
    G_LOGGER.module_severity = G_LOGGER.ERROR
    ort.set_default_logger_severity(3)  # its graph optimiser warns about every Unsqueeze it keeps
    # Polygraphy prints its notes ("large outputs", "colored not installed") on stdout, which is the
    # commands' output channel (tables, JSON): keep them out of it.
    with _in_scratch_dir(), contextlib.redirect_stdout(io.StringIO()):
        return fold_constants(model, num_passes=4, fold_shapes=True, error_ok=False)


def cleanup(graph: gs.Graph) -> gs.Graph:
    """Fold every constant subgraph (shape arithmetic of static sizes, folded DPB tables) and drop
    dead nodes. Numerics are unchanged: folding evaluates the same ops ahead of time."""
    opset = graph.opset
    model = fold_model(gs.export_onnx(graph.cleanup().toposort()))
    out = gs.import_onnx(model)
    out.opset = opset
    return out.cleanup().toposort()
