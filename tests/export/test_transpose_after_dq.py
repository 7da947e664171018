"""transpose_after_dq: per-tensor Q/DQ pairs behind a Transpose move in front of it; outputs bit-identical, the
pattern gone, per-channel pairs and graph outputs left alone; and the openvino target's INT8 recipe runs it."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from crossformer_deploy.export.passes.transpose_after_dq import transpose_after_dq


def _graph(scale: np.ndarray, zero: np.ndarray, axis: int | None = None) -> onnx.ModelProto:
    """scores = q @ transpose(Q/DQ(k)): the form quantize_static leaves before an attention's scores matmul."""
    q = helper.make_tensor_value_info("q", TensorProto.FLOAT, [2, 3, 5, 4])
    k = helper.make_tensor_value_info("k", TensorProto.FLOAT, [2, 3, 5, 4])
    out = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 3, 5, 5])
    attrs = {} if axis is None else {"axis": axis}
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("QuantizeLinear", ["kt", "s", "z"], ["kq"], **attrs),
             helper.make_node("DequantizeLinear", ["kq", "s", "z"], ["kd"], **attrs),
             helper.make_node("MatMul", ["q", "kd"], ["scores"])]
    inits = [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero, "z")]
    model = helper.make_model(helper.make_graph(nodes, "g", [q, k], [out], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {"crossformer.precision": "int8"})
    return model


def _run(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _transpose_feeds_quantize(model: onnx.ModelProto) -> int:
    producer = {o: n for n in model.graph.node for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in producer
               and producer[n.input[0]].op_type == "Transpose")


def test_moves_per_tensor_pairs_bit_exact():
    model = _graph(np.array(0.02, np.float32), np.array(0, np.int8))
    out = transpose_after_dq(model)
    onnx.checker.check_model(out)
    assert _transpose_feeds_quantize(model) == 1 and _transpose_feeds_quantize(out) == 0
    ops = [n.op_type for n in out.graph.node]
    assert ops.index("DequantizeLinear") < ops.index("Transpose") < ops.index("MatMul")
    rng = np.random.default_rng(0)
    feeds = {"q": rng.standard_normal((2, 3, 5, 4)).astype(np.float32),
             "k": rng.standard_normal((2, 3, 5, 4)).astype(np.float32)}
    assert np.array_equal(_run(model, feeds), _run(out, feeds))
    assert {p.key: p.value for p in out.metadata_props} == {"crossformer.precision": "int8"}


def test_leaves_per_channel_pairs():
    # per-channel along the transposed axis: quantizing after the move would pair values with other scales
    model = _graph(np.full(5, 0.02, np.float32), np.zeros(5, np.int8), axis=3)
    assert _transpose_feeds_quantize(transpose_after_dq(model)) == 1


def test_leaves_pairs_that_feed_a_conv():
    """A channels-last view into a Conv (Transpose(0, 3, 1, 2) -> Q -> DQ -> Conv): moving the pair in front of
    that Transpose made OpenVINO compute wrong values, so the pass leaves it where it is."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])
    nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 3, 1, 2]),
             helper.make_node("QuantizeLinear", ["xt", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("Conv", ["xd", "w"], ["y"], kernel_shape=[1, 1])]
    inits = [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    assert _transpose_feeds_quantize(transpose_after_dq(model)) == 1


def test_openvino_int8_recipe_runs_it(tmp_path):
    """The openvino target's INT8 graph of a real model has no Transpose feeding a QuantizeLinear (the keys'
    transpose of every block had one before the pass)."""
    import os

    import torch

    from crossformer_deploy.base.model_info import ModelInfo
    from crossformer_deploy.export.recipe import Int8Options, Recipe, build
    from crossformer_deploy.model.factory import build_model
    from tests.helpers import ROOT

    model = build_model("tiny", None, "classifier", 10, seed=0).eval()
    info = ModelInfo(variant="tiny", mode="classifier", num_classes=10, weights="seeded", input_size=(64, 64),
                     dynamic=False, batch=1)
    int8 = Int8Options(os.path.join(ROOT, "samples"), count=3, progress=False, cache_path=str(tmp_path / "c.json"))
    with torch.no_grad():
        ov = build(model, info, Recipe("openvino", "int8", int8=int8))
        plain = build(model, info, Recipe("onnxruntime", "int8", int8=int8))
    assert _transpose_feeds_quantize(plain) > 0  # the pattern is there without the pass
    assert _transpose_feeds_quantize(ov) == 0
