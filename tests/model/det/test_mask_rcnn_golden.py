"""The whole Mask R-CNN in PyTorch and as one dynamic ONNX graph on ONNX Runtime, against MMDetection 3.3.0 + the
authors' backbone (golden_det.pt ``mask_rcnn``, tests/fixtures/mm_oracle/make_golden_det.py).

A tiny config (CrossFormer tiny, FPN 16 wide, RPN 16, box head 2 x 32, mask head 4 x 16 convs, 5 classes) from an
mmdet-layout checkpoint, at three inputs: 1x3x96x128 (non-square; the image 90x120 inside, from a 135x180
original), a batch of two 64x96 (one unresized, one 48x64 in the padding) and 1x3x512x640 (from a 128x160
original: RoIs on all four levels). Checked: the neck and RPN maps, the proposals, the box and mask heads on
mmdet's own RoIs (within 1e-4), the detections (one-to-one, same label, IoU >= 0.99, score within 1e-4, for
every oracle detection with score >= 0.3) and their pasted masks (IoU >= 0.98).
"""
import io
import warnings

import numpy as np
import pytest
import torch

from crossformer_deploy.model.det import create_detector
from crossformer_deploy.model.det.mask_rcnn import MaskRCNN
from crossformer_deploy.model.det.paste_masks import paste_masks
from tests.helpers import per_size_constants
from tests.model.det.matching import SCORE_MIN, mask_iou, match_pairs, unpack_masks

CASES = ["96x128", "b2_64x96", "512x640"]
RAW_TOL = 1e-4  # maps and heads, fp32, absolute
BOX_TOL = 1e-3  # proposals, pixels: deltas within ~1e-6 move the corners of anchors up to 512 px wide
MASK_IOU_MIN = 0.98


@pytest.fixture(scope="module")
def model(mask_rcnn_ckpt):
    return create_detector(None, mask_rcnn_ckpt)


@pytest.fixture(scope="module")
def ours(model, golden_mask_rcnn):
    """Per case, computed once: our neck maps and the whole detector's outputs."""
    cache: dict = {}

    def get(case: str) -> dict:
        if case not in cache:
            x = golden_mask_rcnn["inputs"][case].float()
            with torch.no_grad():
                cache[case] = {"feats": model.features(x),
                               "out": model(x, torch.tensor(golden_mask_rcnn["image_size"][case]))}
        return cache[case]
    return get


def _export(module: torch.nn.Module, args: tuple, inputs: list[str], outputs: list[str], axes: dict) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, input_names=inputs,
                          output_names=outputs, dynamic_axes=axes, do_constant_folding=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def det_onnx(model):
    """The golden Mask R-CNN exported once, dynamic in batch, height and width, at a size no case has."""
    ort = pytest.importorskip("onnxruntime")
    x, size = torch.randn(1, 3, 128, 160), torch.tensor([[120, 150, 240, 300]])
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, **{n: {0: "batch"} for n in
                                                                ("image_size", "dets", "labels", "masks")}}
    proto = _export(model, (x, size), ["image", "image_size"], model.output_names, axes)
    return ort.InferenceSession(proto, providers=["CPUExecutionProvider"]), proto


class _Raw(torch.nn.Module):
    """The neck and the raw RPN as 15 outputs (5 neck maps, 5 objectness, 5 deltas)."""

    def __init__(self, model: MaskRCNN):
        super().__init__()
        self.model = model

    def forward(self, image):
        neck, cls, reg = self.model.raw(image)
        return (*neck, *cls, *reg)


def _maps(out: dict) -> list[torch.Tensor]:
    return [*out["neck"], *out["rpn_cls"], *out["rpn_reg"]]


def check_detections(golden, case: str, dets: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor) -> None:
    """Every oracle detection with score >= 0.3 matched, none of ours extra above the bar, and each matched
    detection's mask, pasted by ``paste_masks``, at IoU >= 0.98 with mmdet's."""
    refs = golden["outputs"][case]["dets"]
    assert dets.shape == (len(refs), 100, 5) and labels.shape == (len(refs), 100) and labels.dtype == torch.int64
    assert masks.shape == (len(refs), 100, 28, 28)
    for i, ref in enumerate(refs):
        pairs, wanted = match_pairs(ref, dets[i], labels[i])
        assert wanted > 0 and len(pairs) == wanted, f"{case}[{i}]: {len(pairs)}/{wanted} oracle detections matched"
        above = [int((dets[i, :, 4] >= SCORE_MIN + sign * 1e-4).sum()) for sign in (1, -1)]
        assert above[0] <= wanted <= above[1], f"{case}[{i}]: {above} of ours >= {SCORE_MIN}, mmdet {wanted}"
        n = len(ref["scores"])
        assert int((labels[i] >= 0).sum()) == n and not dets[i, n:].any() and not masks[i, n:].any()
        h, w = golden["image_size"][case][i][2:]
        want = unpack_masks(ref)  # mmdet's first MASK_KEEP (20) masks of detections >= 0.3
        kept = [(r, j) for r, j in pairs if r < len(want)]
        ours = paste_masks(masks[i, [j for _, j in kept]], dets[i, [j for _, j in kept]], h, w)
        ious = [mask_iou(ours[k], want[r]) for k, (r, _) in enumerate(kept)]
        assert len(kept) == len(want)
        assert min(ious) >= MASK_IOU_MIN, f"{case}[{i}]: mask IoU {min(ious):.4f} (mean {np.mean(ious):.4f})"
        assert sum(int(m.sum()) for m in want) > 0  # the masks are not all empty


def test_checkpoint_loads_strictly(model, golden_mask_rcnn):
    cfg, g = model.det_cfg, golden_mask_rcnn
    assert isinstance(model, MaskRCNN) and cfg.label == "Mask R-CNN CrossFormer (tiny)"
    assert (cfg.backbone.name, cfg.num_classes, cfg.neck_channels, cfg.rpn_channels, cfg.fc_channels,
            cfg.mask_channels, cfg.mask_convs) == ("tiny", g["num_classes"], g["neck_channels"], g["rpn_channels"],
                                                   g["fc_channels"], g["mask_channels"], 4)
    own = set(model.state_dict())
    assert set(g["heads"]) <= own
    assert {k.split(".")[0] for k in own} == {"backbone", "neck", "rpn_head", "roi_head"}


@pytest.mark.parametrize("case", CASES[:2])
def test_neck_and_rpn_maps_equal_mmdet(case, model, ours, golden_mask_rcnn):
    ref = golden_mask_rcnn["outputs"][case]
    neck = ours(case)["feats"]
    with torch.no_grad():
        cls, reg = model.rpn_head(neck)
    got = [*neck, *cls, *reg]
    for j, (g, w) in enumerate(zip(got, _maps(ref), strict=True)):
        assert g.shape == w.shape, f"{case} map {j}"
        diff = (g - w).abs().max().item()
        assert diff <= RAW_TOL, f"{case} map {j}: max|diff| {diff:.3g} > {RAW_TOL}"


@pytest.mark.parametrize("case", CASES)
def test_proposals_equal_mmdet(case, model, ours, golden_mask_rcnn):
    """The RPN's proposals per image: mmdet's count, the same boxes within 1e-3 px, in mmdet's order (descending
    objectness) but for proposals of equal scores (at 512x640 two pairs swap: scores tie to the last bit)."""
    ref = golden_mask_rcnn["outputs"][case]
    x = golden_mask_rcnn["inputs"][case].float()
    size = torch.tensor(golden_mask_rcnn["image_size"][case], dtype=torch.float32)
    with torch.no_grad():
        proposals, valid = model.proposals(ours(case)["feats"], (size[:, :1], size[:, 1:2]))
    for i in range(len(x)):
        want = ref["rois"][ref["rois"][:, 0] == i, 1:]
        assert int(valid[i].sum()) == len(want) and bool(valid[i, :len(want)].all())
        got = proposals[i, :len(want)]
        dist = (want[:, None] - got[None]).abs().amax(-1)  # [mmdet's, ours]
        worst = max(dist.min(0).values.max().item(), dist.min(1).values.max().item())
        assert worst <= BOX_TOL, f"{case}[{i}]: a proposal {worst:.3g} px from any of the other side's"
        in_place = float((dist.diagonal() <= BOX_TOL).float().mean())
        assert in_place >= 0.99, f"{case}[{i}]: only {in_place:.1%} of the proposals in mmdet's order"


@pytest.mark.parametrize("case", CASES)
def test_roi_heads_equal_mmdet_on_its_rois(case, model, ours, golden_mask_rcnn):
    """Box head on mmdet's proposals and mask head on mmdet's detections (RoIAlign over the levels included)."""
    ref = golden_mask_rcnn["outputs"][case]
    with torch.no_grad():
        feats = ours(case)["feats"][:4]
        rois = ref["head_rois"]
        cls, reg = model.roi_head.bbox_forward(feats, rois[:, 1:], rois[:, 0].long())
        mrois = ref["mask_rois"]
        logits = model.roi_head.mask_forward(feats, mrois[:, 1:], mrois[:, 0].long())
    labels = torch.cat([d["labels"][: int((mrois[:, 0] == i).sum())] for i, d in enumerate(ref["dets"])])
    got_masks = logits[torch.arange(len(labels)), labels]
    for what, g, w in (("cls", cls, ref["roi_cls"]), ("reg", reg, ref["roi_reg"]),
                       ("mask", got_masks, ref["mask_logits"])):
        assert g.shape == w.shape, what
        diff = (g - w).abs().max().item()
        assert diff <= RAW_TOL, f"{case} {what}: max|diff| {diff:.3g} > {RAW_TOL}"


def test_roi_heads_equal_mmdet_on_every_level(model, ours, golden_mask_rcnn):
    """RoIs of one's own choosing through mmdet's extractors and heads (its RPN of random weights proposes few for
    the coarse levels): squares either side of 112, 224 and 448 px, long ones, ones across the border."""
    ref = golden_mask_rcnn["outputs"]["512x640"]
    rois = ref["extra_rois"]
    levels = model.roi_head.bbox_roi_extractor.levels(rois[:, 1:])
    assert set(levels.tolist()) == {0, 1, 2, 3}
    with torch.no_grad():
        feats = ours("512x640")["feats"][:4]
        cls, reg = model.roi_head.bbox_forward(feats, rois[:, 1:], rois[:, 0].long())
        logits = model.roi_head.mask_forward(feats, rois[:, 1:], rois[:, 0].long())
    k = torch.arange(len(rois))
    for what, g, w in (("cls", cls, ref["extra_cls"]), ("reg", reg, ref["extra_reg"]),
                       ("mask", logits[k, k % logits.shape[1]], ref["extra_mask"])):
        diff = (g - w).abs().max().item()
        assert diff <= RAW_TOL, f"extra RoIs {what}: max|diff| {diff:.3g} > {RAW_TOL}"


def test_paste_masks_equals_mmdet(golden_mask_rcnn):
    """mmdet's own mask maps and boxes, pasted by ``paste_masks``: mmdet's pasted masks, pixel for pixel."""
    for case in CASES:
        ref = golden_mask_rcnn["outputs"][case]
        start = 0
        for i, det in enumerate(ref["dets"]):
            k = int((ref["mask_rois"][:, 0] == i).sum())
            n = min(k, int((det["scores"] >= SCORE_MIN).sum()))
            probs = ref["mask_logits"][start:start + n].sigmoid()
            start += k
            h, w = golden_mask_rcnn["image_size"][case][i][2:]
            dets = torch.cat([det["bboxes"][:n], det["scores"][:n, None]], 1)
            assert torch.equal(paste_masks(probs, dets, h, w), unpack_masks(det)[:n]), f"{case}[{i}]"


@pytest.mark.parametrize("case", CASES)
def test_detections_and_masks_equal_mmdet(case, ours, golden_mask_rcnn):
    check_detections(golden_mask_rcnn, case, *ours(case)["out"])


def test_onnx_runtime_equals_mmdet(det_onnx, golden_mask_rcnn):
    """One dynamic graph, standard ops only (RoiAlign, NonMaxSuppression, TopK...), run at all three sizes and
    batches."""
    import onnx

    sess, proto = det_onnx
    graph = onnx.load_from_string(proto)
    ops = {n.op_type for n in graph.graph.node}
    assert {"NonMaxSuppression", "TopK", "RoiAlign", "NonZero", "ScatterND"} <= ops
    assert not [n.op_type for n in graph.graph.node if n.domain not in ("", "ai.onnx")]
    assert per_size_constants(graph) == []  # nothing frozen at the export's 128x160
    for case in CASES:
        x = golden_mask_rcnn["inputs"][case].float().numpy()
        size = np.array(golden_mask_rcnn["image_size"][case], dtype=np.int64)
        out = sess.run(None, {"image": x, "image_size": size})
        check_detections(golden_mask_rcnn, case, *(torch.from_numpy(o) for o in out))


def test_onnx_runtime_maps_equal_mmdet(model, golden_mask_rcnn):
    ort = pytest.importorskip("onnxruntime")
    names = [f"{k}{i}" for k in ("neck", "cls", "reg") for i in range(5)]
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, **{n: {0: "batch", 2: "h", 3: "w"} for n in names}}
    sess = ort.InferenceSession(_export(_Raw(model), (torch.randn(1, 3, 128, 160),), ["image"], names, axes),
                                providers=["CPUExecutionProvider"])
    for case in CASES[:2]:
        got = sess.run(None, {"image": golden_mask_rcnn["inputs"][case].float().numpy()})
        for j, want in enumerate(_maps(golden_mask_rcnn["outputs"][case])):
            diff = float(np.abs(got[j] - want.numpy()).max())
            assert diff <= RAW_TOL, f"{case} map {j}: max|diff| {diff:.3g} > {RAW_TOL}"


def test_no_detection_is_an_empty_answer(mask_rcnn_ckpt, golden_mask_rcnn):
    """Every class score under score_thr: all rows padding (zeros, label -1, empty masks), not an error."""
    model = create_detector(None, mask_rcnn_ckpt)
    with torch.no_grad():
        model.roi_head.bbox_head.fc_cls.bias[-1] = 30.0  # the background takes every proposal
        x, size = golden_mask_rcnn["inputs"]["b2_64x96"].float(), golden_mask_rcnn["image_size"]["b2_64x96"]
        dets, labels, masks = model(x, torch.tensor(size))
    assert dets.shape == (2, 100, 5) and not dets.any() and bool((labels == -1).all()) and not masks.any()
    assert paste_masks(masks[0], dets[0], 64, 96).shape == (0, 64, 96)


def test_onnx_op_set_is_pinned(det_onnx):
    """A new op type in the exported graph fails here: update model/det/onnx_ops.py and docs/detection.md's
    TensorRT table together."""
    import onnx

    from crossformer_deploy.model.det.onnx_ops import DET_ONNX_OPS, op_types

    assert op_types(onnx.load_from_string(det_onnx[1])) == DET_ONNX_OPS["mask_rcnn"]
