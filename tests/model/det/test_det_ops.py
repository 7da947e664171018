"""The detector's pieces on their own: the NMS op's semantics (eager = ONNX Runtime's NonMaxSuppression = mmcv's
rule), the anchors' layout and the box coder's clipping."""
import numpy as np
import pytest
import torch

from crossformer_deploy.model.det.anchors import AnchorGenerator
from crossformer_deploy.model.det.box_coder import decode
from crossformer_deploy.model.det.config import AnchorConfig
from crossformer_deploy.model.det.nms import nms_reference


def _sel(boxes, scores, cap=100, iou=0.5, thr=0.05) -> list[tuple[int, int, int]]:
    return [tuple(r) for r in nms_reference(torch.tensor(boxes, dtype=torch.float32)[None],
                                            torch.tensor(scores, dtype=torch.float32)[None], cap, iou, thr).tolist()]


def test_nms_suppresses_above_the_threshold_only():
    """IoU exactly 0.5 survives (mmcv: ovr > thr; ORT: iou > thr); 0.6 is suppressed; scores <= 0.05 never count;
    another class's box never suppresses."""
    a, half, six = [0, 0, 10, 10], [0, 0, 10, 5], [0, 0, 10, 6]  # IoU(a, half) = 0.5, IoU(a, six) = 0.6
    assert _sel([a, half], [[0.9, 0.8]]) == [(0, 0, 0), (0, 0, 1)]
    assert _sel([a, six], [[0.9, 0.8]]) == [(0, 0, 0)]
    assert _sel([a, six], [[0.05, 0.8]]) == [(0, 0, 1)]
    assert _sel([a, six], [[0.9, 0.0], [0.0, 0.8]]) == [(0, 0, 0), (0, 1, 1)]
    assert _sel([a, [20, 20, 30, 30], [40, 40, 50, 50]], [[0.5, 0.9, 0.7]], cap=2) == [(0, 0, 1), (0, 0, 2)]


def test_nms_equals_onnx_runtime():
    """The eager op and ORT's NonMaxSuppression (what the export emits) select the same boxes, in the same order."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(2, 300, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(2, 300, 2, generator=g) * 40], -1)
    scores = torch.rand(2, 4, 300, generator=g)
    consts = [helper.make_tensor("cap", TensorProto.INT64, [1], [20]),
              helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5]),
              helper.make_tensor("thr", TensorProto.FLOAT, [1], [0.05])]
    node = helper.make_node("NonMaxSuppression", ["boxes", "scores", "cap", "iou", "thr"], ["sel"], center_point_box=0)
    graph = helper.make_graph([node], "nms", [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [2, 300, 4]),
                                              helper.make_tensor_value_info("scores", TensorProto.FLOAT, [2, 4, 300])],
                              [helper.make_tensor_value_info("sel", TensorProto.INT64, [None, 3])], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = sess.run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})
    got = nms_reference(boxes, scores, 20, 0.5, 0.05).numpy()
    assert len(got) > 100 and np.array_equal(got, want)


def test_anchors_follow_mmdet_layout():
    """Level 0 (stride 8): 9 base anchors centred on the cell's corner (mmdet 3.x offset 0), ratio-major, rows in
    (y, x, anchor) order; the 1:1 anchor of scale 4 is 32 px wide."""
    gen = AnchorGenerator(AnchorConfig())
    a = gen([(2, 3)] + [(1, 1)] * 4)[0]
    assert a.shape == (2 * 3 * 9, 4)
    square = a[3]  # ratio 1 (the second of three), scale 4 (the first): index ratio * 3 + scale
    assert torch.equal(square, torch.tensor([-16.0, -16.0, 16.0, 16.0]))
    centres = (a[:, :2] + a[:, 2:]) / 2
    assert torch.equal(centres[9 * 1], torch.tensor([8.0, 0.0]))  # the next x
    assert torch.equal(centres[9 * 3], torch.tensor([0.0, 8.0]))  # the next row
    wide = a[0]  # ratio h/w 0.5
    assert torch.isclose((wide[2] - wide[0]) / (wide[3] - wide[1]), torch.tensor(2.0))


def test_decode_clips_to_each_image():
    anchors = torch.tensor([[[-16.0, -16.0, 16.0, 16.0]]]).repeat(2, 1, 1)
    deltas = torch.tensor([[[0.5, 0.5, 1.0, 0.0]]]).repeat(2, 1, 1)
    boxes = decode(anchors, deltas, (torch.tensor([[100.0], [10.0]]), torch.tensor([[20.0], [100.0]])))
    w = 32 * np.exp(1.0)
    assert torch.allclose(boxes[0, 0], torch.tensor([0.0, 0.0, 20.0, 32.0]))  # x to [0, 20], y to [0, 100]
    assert torch.allclose(boxes[1, 0], torch.tensor([0.0, 0.0, float(16 + w / 2), 10.0]))
    big = decode(anchors[:1], torch.tensor([[[0.0, 0.0, 50.0, -50.0]]]))  # dw, dh clamped to +-log(1000 / 16)
    assert torch.allclose(big[0, 0, 2] - big[0, 0, 0], torch.tensor(32 * 1000 / 16))
    assert torch.allclose(big[0, 0, 3] - big[0, 0, 1], torch.tensor(32 * 16 / 1000))
