"""The whole RetinaNet in PyTorch and as one dynamic ONNX graph on ONNX Runtime, against MMDetection 3.3.0 + the
authors' backbone (golden_det.pt, tests/fixtures/mm_oracle/make_golden_det.py).

A tiny config (CrossFormer tiny, FPN 16 wide, RetinaHead 4 x 16 convs, 5 classes, 9 anchors) from an mmdet-layout
checkpoint, at two inputs: 1x3x96x128 (non-square; the image 90x120 inside, from a 300x400 original) and a
batch of two 64x64 (64x36 from 100x56, and 64x64 unresized): clipping to the real image (to zero width over the
padding: dropped by min_bbox_size), rescaling per image, the nms_pre cut (levels 0 and 1 have more than 1000
(anchor, class) pairs) and max_per_img all act.
"""
import io
import re
import warnings

import numpy as np
import pytest
import torch

from crossformer_deploy.base.errors import InputSizeError
from crossformer_deploy.model.det import create_detector
from crossformer_deploy.model.det.detector import INPUT_NAMES, OUTPUT_NAMES
from tests.helpers import per_size_constants
from tests.model.det.matching import SCORE_MIN, SCORE_TOL, match_pairs

CASES = ["96x128", "b2_64x64"]
RAW_TOL = 1e-4  # neck and raw head, fp32, absolute


@pytest.fixture(scope="module")
def model(det_ckpt):
    return create_detector(None, det_ckpt)


@pytest.fixture(scope="module")
def det_onnx(model, tmp_path_factory):
    """The golden RetinaNet exported once, dynamic in batch, height and width, at a size neither case has."""
    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    x, size = torch.randn(1, 3, 128, 160), torch.tensor([[120, 150, 240, 300]])
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "image_size": {0: "batch"}, "dets": {0: "batch"},
            "labels": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x, size), buf, dynamo=False, opset_version=17, input_names=INPUT_NAMES,
                          output_names=OUTPUT_NAMES, dynamic_axes=axes, do_constant_folding=True)
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"]), buf.getvalue()


class _Raw(torch.nn.Module):
    """The detector's neck and raw head as 15 outputs (5 neck maps, 5 cls, 5 reg), for an ONNX parity check."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        neck, cls, reg = self.model.raw(image)
        return (*neck, *cls, *reg)


@pytest.fixture(scope="module")
def raw_onnx(model):
    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    names = [f"{k}{i}" for k in ("neck", "cls", "reg") for i in range(5)]
    axes = {n: {0: "batch", 2: f"h{n[-1]}", 3: f"w{n[-1]}"} for n in names}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Raw(model), (torch.randn(1, 3, 128, 160),), buf, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=names,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, **axes})
    return ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])


def check_detections(golden_det, case: str, dets: torch.Tensor, labels: torch.Tensor) -> None:
    refs = golden_det["outputs"][case]["dets"]
    assert dets.shape == (len(refs), 100, 5) and labels.shape == (len(refs), 100) and labels.dtype == torch.int64
    for i, ref in enumerate(refs):
        pairs, wanted = match_pairs(ref, dets[i], labels[i])
        matched = len(pairs)
        assert wanted > 0 and matched == wanted, f"{case}[{i}]: {matched}/{wanted} oracle detections matched"
        # and none of ours above the bar is extra (the scores' tolerance either side of it)
        above = [int((dets[i, :, 4] >= SCORE_MIN + sign * SCORE_TOL).sum()) for sign in (1, -1)]
        assert above[0] <= wanted <= above[1], f"{case}[{i}]: {above} of ours >= {SCORE_MIN}, mmdet {wanted}"
        n = len(ref["scores"])  # mmdet's count (all 100 here): ours has as many, then padding rows of zeros
        assert int((labels[i] >= 0).sum()) == n and not dets[i, n:].any() and bool((labels[i, n:] == -1).all())


def test_checkpoint_loads_strictly(model, det_ckpt, golden_det):
    cfg = model.det_cfg
    assert (cfg.backbone.name, cfg.num_classes, cfg.neck_channels, cfg.feat_channels, cfg.stacked_convs) == (
        "tiny", golden_det["num_classes"], golden_det["neck_channels"], golden_det["feat_channels"],
        golden_det["stacked_convs"])
    own = set(model.state_dict())
    assert set(golden_det["heads"]) <= own
    assert {k.split(".")[0] for k in own} == {"backbone", "neck", "bbox_head"}


@pytest.mark.parametrize("case", CASES)
def test_neck_and_raw_head_equal_mmdet(case, model, golden_det):
    ref = golden_det["outputs"][case]
    with torch.no_grad():
        neck, cls, reg = model.raw(golden_det["inputs"][case].float())
    for what, got, want in (("neck", neck, ref["neck"]), ("cls", cls, ref["cls"]), ("reg", reg, ref["reg"])):
        assert len(got) == len(want) == 5
        for level, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape, f"{case} {what}[{level}]"
            diff = (g - w).abs().max().item()
            assert diff <= RAW_TOL, f"{case} {what}[{level}]: max|diff| {diff:.3g} > {RAW_TOL}"


def test_onnx_runtime_neck_and_raw_head_equal_mmdet(raw_onnx, golden_det):
    for case in CASES:
        ref = golden_det["outputs"][case]
        got = raw_onnx.run(None, {"image": golden_det["inputs"][case].float().numpy()})
        for j, want in enumerate([*ref["neck"], *ref["cls"], *ref["reg"]]):
            assert got[j].shape == tuple(want.shape), f"{case} output {j}"
            diff = float(np.abs(got[j] - want.numpy()).max())
            assert diff <= RAW_TOL, f"{case} output {j}: max|diff| {diff:.3g} > {RAW_TOL}"


@pytest.mark.parametrize("case", CASES)
def test_detections_equal_mmdet(case, model, golden_det):
    with torch.no_grad():
        dets, labels = model(golden_det["inputs"][case].float(), torch.tensor(golden_det["image_size"][case]))
    check_detections(golden_det, case, dets, labels)


def test_onnx_runtime_equals_mmdet(det_onnx, golden_det):
    """One dynamic graph, standard ops only, run at both sizes and batches."""
    import onnx

    sess, proto = det_onnx
    graph = onnx.load_from_string(proto)
    assert {"NonMaxSuppression", "TopK"} <= {n.op_type for n in graph.graph.node}
    assert not [n.op_type for n in graph.graph.node if n.domain not in ("", "ai.onnx")]  # no plugin, no custom op
    assert per_size_constants(graph) == []  # nothing frozen at the export's 128x160
    for case in CASES:
        x = golden_det["inputs"][case].float().numpy()
        size = np.array(golden_det["image_size"][case], dtype=np.int64)
        dets, labels = sess.run(None, {"image": x, "image_size": size})
        check_detections(golden_det, case, torch.from_numpy(dets), torch.from_numpy(labels))


def test_no_detection_is_an_empty_answer(det_ckpt, golden_det):
    """Every score under score_thr: all rows padding (zeros, label -1), not an error."""
    model = create_detector(None, det_ckpt)
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.fill_(-30.0)
        x, size = golden_det["inputs"]["b2_64x64"].float(), torch.tensor(golden_det["image_size"]["b2_64x64"])
        dets, labels = model(x, size)
    assert dets.shape == (2, 100, 5) and not dets.any() and bool((labels == -1).all())


def test_image_size_is_checked(model, golden_det):
    x = golden_det["inputs"]["96x128"].float()
    for bad, fragment in ((torch.tensor([[90, 120, 300]]), "int64 [1, 4]"), (torch.tensor([[90.0, 120, 300, 400]]),
                          "int64 [1, 4]"), (torch.tensor([[0, 120, 300, 400]]), "positive"),
                          (torch.tensor([[100, 120, 300, 400]]), "exceed the input 96x128")):
        with pytest.raises(InputSizeError, match=re.escape(fragment)):
            model(x, bad)


def test_without_image_size_each_image_fills_the_input(model, golden_det):
    x = golden_det["inputs"]["b2_64x64"].float()
    with torch.no_grad():
        a = model(x)
        b = model(x, torch.tensor([[64, 64, 64, 64]] * 2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_onnx_op_set_is_pinned(det_onnx):
    """A new op type in the exported graph fails here: update model/det/onnx_ops.py and docs/detection.md's
    TensorRT table together."""
    import onnx

    from crossformer_deploy.model.det.onnx_ops import DET_ONNX_OPS, op_types

    assert op_types(onnx.load_from_string(det_onnx[1])) == DET_ONNX_OPS["retinanet"]
