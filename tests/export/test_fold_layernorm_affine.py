"""fold_layernorm_affine: a LayerNorm's scale and shift move into the Linear it feeds through token regrouping;
outputs unchanged to fp32 rounding, the pattern gone (unit scale, zero shift), channel-moving ops and shared
LayerNorms left alone; the openvino target runs it on static graphs only."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from crossformer_deploy.export.passes.fold_layernorm_affine import fold_layernorm_affine

C, N = 8, 6


def _graph(perm: list[int] = (0, 2, 1, 3), second_reader: bool = False) -> onnx.ModelProto:
    """x [2, 4, 3, C] -> LayerNorm -> Reshape [2, 3, 4, C]... -> Transpose(perm) -> MatMul(W) -> Add(b)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3, C])
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    nodes = [helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1, epsilon=1e-5),
             helper.make_node("Reshape", ["n", "shape"], ["r"]),
             helper.make_node("Transpose", ["r"], ["t"], perm=list(perm)),
             helper.make_node("MatMul", ["t", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    if second_reader:  # a residual that reads the normalized values too
        nodes.append(helper.make_node("Relu", ["n"], ["z"]))
        outs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, None))
    inits = {"gamma": rng.uniform(0.2, 3.0, C), "beta": rng.standard_normal(C), "w": rng.standard_normal((C, N)),
             "b": rng.standard_normal(N)}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()]
    inits.append(numpy_helper.from_array(np.array([2, 3, 4, C], np.int64), "shape"))
    return helper.make_model(helper.make_graph(nodes, "g", [x], outs, inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def _fold(model: onnx.ModelProto) -> onnx.ModelProto:
    return gs.export_onnx(fold_layernorm_affine(gs.import_onnx(model)))


def _run(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})


def _unit_affine(model: onnx.ModelProto, part: str = "") -> list[bool]:
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return [bool(np.all(inits[n.input[1]] == 1) and np.all(inits[n.input[2]] == 0))
            for n in model.graph.node if n.op_type == "LayerNormalization" and part in n.name]


@pytest.mark.parametrize("perm", [(0, 2, 1, 3), (2, 0, 1, 3)])
def test_folds_through_regrouping(perm):
    model = _graph(perm)
    out = _fold(model)
    assert _unit_affine(model) == [False] and _unit_affine(out) == [True]
    x = np.random.default_rng(1).standard_normal((2, 4, 3, C)).astype(np.float32) * 5 + 2
    want, got = _run(model, x)[0], _run(out, x)[0]
    # the shift alone moves the outputs by |beta W| ~ 1, the scale by more: 1e-5 of the outputs is a real bound
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_leaves_channel_moving_transposes():
    out = _fold(_graph((0, 1, 3, 2)))  # channels leave the last axis: gamma would scale the wrong rows
    assert _unit_affine(out) == [False]


def test_leaves_a_layernorm_read_twice():
    out = _fold(_graph(second_reader=True))  # the second reader needs the scaled, shifted values
    assert _unit_affine(out) == [False]


def _tiny(dynamic: bool):
    import torch

    from crossformer_deploy.base.model_info import ModelInfo
    from crossformer_deploy.export.recipe import Recipe, build
    from crossformer_deploy.model.factory import build_model
    from crossformer_deploy.model.synthetic import trained_like

    model = trained_like(build_model("tiny", None, "classifier", 10, seed=0), seed=3).eval()
    info = ModelInfo(variant="tiny", mode="classifier", num_classes=10, weights="seeded", input_size=(64, 64),
                     dynamic=dynamic, batch=None)
    with torch.no_grad():
        return model, build(model, info, Recipe("openvino")), build(model, info, Recipe("onnxruntime"))


def test_openvino_target_folds_every_block_of_a_static_graph():
    """At 64 x 64 the first block of stages 1 and 2 pads its map (16, 8) to the group size before grouping: a Pad
    between norm1 and qkv would give the padded tokens beta W instead of 0, so those two blocks keep their norm1."""
    model, ov, plain = _tiny(dynamic=False)
    blocks = sum(len(stage.blocks) for stage in model.layers)
    assert sum(_unit_affine(ov, "/norm2/")) == blocks and sum(_unit_affine(plain)) == 0  # norm2 -> fc1
    padded = ("/layers.0/blocks.0/", "/layers.1/blocks.0/")
    assert [n.name.startswith(padded) for n in ov.graph.node if n.op_type == "LayerNormalization"
            and "/norm1/" in n.name] == [not unit for unit in _unit_affine(ov, "/norm1/")]  # norm1 -> qkv elsewhere
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    run = [ort.InferenceSession(p.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
           for p in (ov, plain)]
    assert np.abs(run[0] - run[1]).max() <= 1e-5 * np.abs(run[1]).max()


def test_openvino_target_leaves_dynamic_graphs():
    _, ov, _ = _tiny(dynamic=True)
    assert sum(_unit_affine(ov)) == 0
