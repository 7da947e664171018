"""tokens_around_convs: the patch mergings' layout changes rewritten channels-last; outputs bit-identical, both
patterns gone, at a fixed batch, a free batch and a dynamic size; the openvino target runs it, onnxruntime not."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import pytest
import torch

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import to_onnx
from crossformer_deploy.export.passes.cleanup import cleanup
from crossformer_deploy.export.passes.tokens_around_convs import tokens_around_convs
from crossformer_deploy.export.pipeline import run_pipeline
from crossformer_deploy.model.factory import build_model
from tests.helpers import ort_session


@pytest.fixture(scope="module")
def tiny():
    return build_model("tiny", None, "classifier", 10, seed=0).eval()


def _export(model, size: tuple[int, int] | None, batch: int | None) -> onnx.ModelProto:
    info = ModelInfo(variant="tiny", mode="classifier", num_classes=10, weights="seeded",
                     input_size=size or (64, 64), dynamic=size is None, batch=batch)
    with torch.no_grad():
        return to_onnx(model, info)


def _patterns(proto: onnx.ModelProto) -> tuple[int, int]:
    """(Transpose(0,2,1) -> Reshape -> Conv, Concat(axis 1) of Convs -> Reshape -> Transpose): what the pass removes."""
    g = proto.graph
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def perm(n):
        return next(list(a.ints) for a in n.attribute if a.name == "perm")

    into = sum(1 for n in g.node if n.op_type == "Reshape" and n.input[0] in producer
               and producer[n.input[0]].op_type == "Transpose" and perm(producer[n.input[0]]) == [0, 2, 1]
               and any(u.op_type == "Conv" for u in users.get(n.output[0], [])))
    out = sum(1 for n in g.node if n.op_type == "Transpose" and n.input[0] in producer
              and producer[n.input[0]].op_type == "Reshape" and producer[producer[n.input[0]].input[0]].op_type
              == "Concat" and all(producer[i].op_type == "Conv" for i in producer[producer[n.input[0]].input[0]].input))
    return into, out


def _rewrite(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, onnx.ModelProto, int]:
    base = cleanup(gs.import_onnx(proto))
    before = gs.export_onnx(base.copy())
    after = tokens_around_convs(base)
    return before, gs.export_onnx(after), after.tokens_around_convs_count


def _run(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return ort_session(proto.SerializeToString()).run(None, {"image": x})[0]


@pytest.mark.parametrize("size,batch", [((64, 96), 2), ((64, 96), None), (None, None)],
                         ids=["static", "free-batch", "dynamic"])
def test_patterns_gone_outputs_bit_identical(tiny, size, batch):
    before, after, count = _rewrite(_export(tiny, size, batch))
    onnx.checker.check_model(after)
    into, out = _patterns(before)
    assert into == 3 and out == 4  # three mergings; their three outputs and the patch embedding's
    if size is None:  # a dynamic size: H, W of the image view are run-time values, only the flatten is rewritten
        assert count == 4 and _patterns(after) == (3, 0)
    else:
        assert count == 7 and _patterns(after) == (0, 0)
    rng = np.random.default_rng(0)
    for shape in ([2, 3, 64, 96], [1, 3, 64, 96]) if size else ([2, 3, 64, 96], [1, 3, 96, 128]):
        if batch is not None and shape[0] != batch:
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        assert np.array_equal(_run(before, x), _run(after, x))


def test_openvino_target_runs_it_onnxruntime_not(tiny):
    proto = _export(tiny, (64, 64), 1)
    assert _patterns(run_pipeline(proto, "openvino")) == (0, 0)
    assert _patterns(run_pipeline(proto, "onnxruntime")) == (3, 4)
