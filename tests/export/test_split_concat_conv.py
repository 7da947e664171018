"""split_concat_conv: UPerHead's two Conv(Concat) (the PPM bottleneck and fpn_bottleneck) become one Conv per
concatenated input, summed: the pattern gone, the logits equal within float rounding; convs it must not touch (a
grouped conv, a Concat on another axis) stay; and an INT8 seg recipe that asks for it gives every branch its own
Q/DQ scale."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from crossformer_deploy.export.onnx_export import to_onnx
from crossformer_deploy.export.passes.split_concat_conv import count_concat_convs, split_concat_conv
from crossformer_deploy.model.seg import build_segmenter
from crossformer_deploy.model.seg.factory import segmenter_info
from crossformer_deploy.model.seg.synthetic import trained_like_segmenter
from tests.helpers import ROOT, ort_session


@pytest.fixture(scope="module")
def upernet_proto():
    """A tiny UPerNet (5 classes) with trained-like BN statistics, exported at 64x64 (one dynamic graph)."""
    model = build_segmenter("tiny", head="upernet", num_classes=5, return_logits=True, seed=0)
    with torch.no_grad():
        model = trained_like_segmenter(model, 0, torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1)))
        return to_onnx(model, segmenter_info(model, "seeded", (64, 64)))


def _logits(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort_session(proto.SerializeToString())
    return sess.run(["logits"], {"image": x, "output_size": np.array(x.shape[2:], np.int64)})[0]


def test_splits_upernet_concat_convs(upernet_proto):
    out = split_concat_conv(upernet_proto)
    assert count_concat_convs(upernet_proto) == 2 and count_concat_convs(out) == 0
    convs = [n for n in out.graph.node if n.op_type == "Conv"]
    # the stage-4 map + 4 PPM branches, and 4 FPN levels: 9 convs where there were 2
    assert len(convs) == sum(n.op_type == "Conv" for n in upernet_proto.graph.node) + 7
    assert sum("/split" in n.name for n in convs) == 9
    assert {p.key: p.value for p in out.metadata_props} == {p.key: p.value for p in upernet_proto.metadata_props}
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 64)).astype(np.float32)  # not the export size
    ref, got = _logits(upernet_proto, x), _logits(out, x)
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max(), np.abs(got - ref).max()


def _toy(group: int = 1, axis: int = 1) -> onnx.ModelProto:
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 4, 5, 5])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4, 5, 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "c", "h", "w"])
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8 // group if axis == 1 else 4, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Concat", ["a", "b"], ["c"], axis=axis),
             helper.make_node("Conv", ["c", "w", "bias"], ["y"], pads=[1, 1, 1, 1], group=group)]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias")]
    return helper.make_model(helper.make_graph(nodes, "g", [a, b], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_leaves_grouped_convs_and_other_axes():
    assert count_concat_convs(split_concat_conv(_toy())) == 0  # the control: the toy is the pattern
    assert count_concat_convs(split_concat_conv(_toy(group=2))) == 1
    assert count_concat_convs(split_concat_conv(_toy(axis=2))) == 1


def test_int8_seg_recipe_gives_each_branch_a_scale(upernet_proto, tmp_path):
    from crossformer_deploy.export.recipe import Int8Options, Recipe, apply

    int8 = Int8Options(os.path.join(ROOT, "samples"), count=1, size=(64, 64), progress=False,
                       cache_path=str(tmp_path / "c.json"), split_concat_convs=True,
                       placement="all")  # the seg default (mlp-fc1) keeps the decode head float
    q = apply(upernet_proto, Recipe("plain", "int8", int8=int8))
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    scales = []
    for n in q.graph.node:
        if n.op_type == "Conv" and "/split" in n.name:
            dq = producer[n.input[0]]
            assert dq.op_type == "DequantizeLinear"  # the branch is quantized on its own
            scales.append(float(inits[dq.input[1]]))
    assert len(scales) == 9 and len(set(scales)) > 2  # branches of different ranges: different scales
    assert count_concat_convs(q) == 0
