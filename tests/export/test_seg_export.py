"""A whole segmenter as one dynamic ONNX graph: equal to MMSegmentation at sizes it was not exported at, on ONNX
Runtime and OpenVINO; its adaptive pooling reads the run-time size; the passes of every target run on it.

The graph is exported at 192x192 (stage-4 map 6x6: divisible by every PPM bin count) and run at the golden inputs,
among them 160x224 (5x7: divisible by none of 3 and 6) with logits back to 150x210.
"""
import collections

import numpy as np
import onnx
import pytest
import torch

from crossformer_deploy.export.onnx_export import save_onnx, to_onnx
from crossformer_deploy.export.pipeline import run_pipeline
from crossformer_deploy.model.seg import create_segmenter
from crossformer_deploy.model.seg.adaptive_pool import AdaptiveAvgPool
from crossformer_deploy.model.seg.factory import segmenter_info
from crossformer_deploy.plugins.onnx_function import attach_functions
from tests.helpers import k_model, ort_session, seg_grouping

EXPORT_SIZE = (192, 192)
# ONNX operators that TensorRT 10's ONNX parser takes (onnx-tensorrt docs/operators.md), as far as a segmenter's
# graph needs them; GroupedAttention is the plugin's.
TENSORRT_OPS = {"Add", "And", "ArgMax", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Equal", "Erf",
                "Expand", "Floor", "Gather", "Gemm", "Greater", "GreaterOrEqual", "GroupedAttention",
                "LayerNormalization", "Less", "LessOrEqual", "MatMul", "Max", "Min", "Mod", "Mul", "Not", "Range",
                "Relu", "Reshape", "Resize", "Shape", "Slice", "Softmax", "Squeeze", "Sub", "Transpose",
                "Unsqueeze", "Where"}


class TraceTimePool(torch.nn.Module):
    """What ``nn.AdaptiveAvgPool2d`` exports to where the exporter knows the map size (mmdeploy's rewrite too): an
    average pool whose kernel and stride are the size at trace time over the bins, frozen into the graph."""

    def __init__(self, output_size: int):
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (int(x.shape[2]) // self.output_size, int(x.shape[3]) // self.output_size)
        return torch.nn.functional.avg_pool2d(x, k, k)


def run(proto, x: torch.Tensor, out) -> dict[str, np.ndarray]:
    sess = ort_session(proto.SerializeToString())
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"image": x.numpy(), "output_size": np.asarray(out, np.int64)})))


def bound(model) -> float:
    """The backbone's rounding bound (tests/helpers.k_model) with the head's 5 sublayers on top."""
    return k_model(model.cfg, model.cfg.num_stages - 1) * 1.25


def assert_oracle(got: np.ndarray, ref: torch.Tensor, k: float, what: str) -> None:
    diff, scale = float(np.abs(got - ref.numpy()).max()), ref.abs().max().item()
    assert diff <= k * scale, f"{what}: max|diff| {diff:.3g} > {k:.3g} * {scale:.3g}"


@pytest.fixture(scope="module")
def upernet(golden_seg, seg_ckpts):
    entry = golden_seg["models"]["upernet_tiny"]
    return create_segmenter(None, seg_ckpts["upernet_tiny"], grouping=seg_grouping(entry), return_logits=True)


@pytest.fixture(scope="module")
def upernet_proto(upernet):
    return to_onnx(upernet, segmenter_info(upernet, "golden", EXPORT_SIZE))


def test_graph_interface(upernet_proto):
    g = upernet_proto.graph
    assert [i.name for i in g.input] == ["image", "output_size"]
    assert [o.name for o in g.output] == ["class_map", "logits"]
    assert g.input[1].type.tensor_type.elem_type == onnx.TensorProto.INT64
    # the backbone's scopes are the bare backbone's, which the passes find blocks by
    assert any(n.name.startswith("/layers.3/blocks.1/attn/") for n in g.node)
    assert not any(n.name.startswith("/backbone/layers.") for n in g.node)
    meta = {p.key: p.value for p in upernet_proto.metadata_props}
    assert meta["mode"] == "segmenter" and meta["head"] == "upernet" and meta["resize"] == "align-resize"


def test_one_dynamic_graph_equals_mmseg(upernet, upernet_proto, golden_seg):
    for case, x in golden_seg["inputs"].items():
        out = run(upernet_proto, x, golden_seg["ori"][case])
        ref = golden_seg["models"]["upernet_tiny"]["logits"][case]
        assert_oracle(out["logits"], ref, bound(upernet), case)
        assert np.array_equal(out["class_map"], ref.argmax(1).numpy())


def test_pooling_reads_the_runtime_size(upernet, golden_seg):
    """The control: a PPM pooled with kernels fixed at trace time (6x6 / s) exports and runs, and at 160x224 (5x7)
    it is far off mmseg, where ours is within the bound (test above). (``nn.AdaptiveAvgPool2d`` itself does not
    even export here: the exporter refuses it, "input size not accessible", on a map whose size is a graph value.)"""
    frozen = create_segmenter(upernet.seg_cfg, return_logits=True)
    frozen.load_state_dict(upernet.state_dict())
    for branch in frozen.decode_head.psp_modules:
        assert isinstance(branch[0], AdaptiveAvgPool)
        branch[0] = TraceTimePool(branch[0].output_size)
    proto = to_onnx(frozen, segmenter_info(frozen, "golden", EXPORT_SIZE))
    assert "AveragePool" in {n.op_type for n in proto.graph.node}
    x = golden_seg["inputs"]["160x224_to_150x210"]
    ref = golden_seg["models"]["upernet_tiny"]["logits"]["160x224_to_150x210"]
    diff = float(np.abs(run(proto, x, (150, 210))["logits"] - ref.numpy()).max())
    assert diff > 1e3 * bound(upernet) * ref.abs().max().item()


def test_openvino_runs_the_same_graph(upernet, upernet_proto, golden_seg, tmp_path):
    pytest.importorskip("openvino")
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    path = str(tmp_path / "upernet.onnx")
    save_onnx(upernet_proto, path)
    with OpenVINORunner(path, threads=2) as runner:
        for case, x in golden_seg["inputs"].items():
            ori = np.asarray(golden_seg["ori"][case], np.int64)
            out = runner.run({"image": x.numpy(), "output_size": ori})
            ref = golden_seg["models"]["upernet_tiny"]["logits"][case]
            assert_oracle(out["logits"], ref, bound(upernet), f"openvino {case}")
            assert (out["class_map"] == ref.argmax(1).numpy()).mean() >= 0.9999


def test_target_onnxruntime(upernet, upernet_proto, golden_seg):
    """The onnxruntime passes (DPB tables precomputed for inputs up to 256x256, shapes folded) on UPerNet."""
    graph = run_pipeline(upernet_proto, "onnxruntime", max_size=(256, 256))
    assert not [n for n in graph.graph.node if "/attn/pos/" in n.name and n.op_type == "LayerNormalization"]
    for case in ("160x224_to_150x210", "b2_64x64"):
        out = run(graph, golden_seg["inputs"][case], golden_seg["ori"][case])
        ref = golden_seg["models"]["upernet_tiny"]["logits"][case]
        assert_oracle(out["logits"], ref, bound(upernet), case)


def test_target_tensorrt(golden_seg, seg_ckpts):
    """The tensorrt passes on Semantic FPN (G 14 in stages 1-2): one fused op per block, only operators TensorRT's
    ONNX parser takes, and (the op run through its ONNX function) mmseg's answer."""
    name = "fpn_tiny_g14"
    entry = golden_seg["models"][name]
    model = create_segmenter(None, seg_ckpts[name], grouping=seg_grouping(entry), return_logits=True)
    trt = run_pipeline(to_onnx(model, segmenter_info(model, "golden", EXPORT_SIZE)), "tensorrt", max_size=(256, 256))
    ops = collections.Counter(n.op_type for n in trt.graph.node)
    assert ops["GroupedAttention"] == sum(model.cfg.depths) and not ops["Softmax"]
    assert set(ops) <= TENSORRT_OPS, set(ops) - TENSORRT_OPS
    types = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(trt).graph.value_info}
    for n in trt.graph.node:
        if n.op_type == "Range":  # TensorRT takes a float Range only from initializers
            assert all(types.get(i, onnx.TensorProto.INT64) == onnx.TensorProto.INT64 for i in n.input), n.name
    attach_functions(trt)
    for case in ("160x224_to_150x210", "b2_64x64"):
        out = run(trt, golden_seg["inputs"][case], golden_seg["ori"][case])
        assert_oracle(out["logits"], entry["logits"][case], bound(model), case)
