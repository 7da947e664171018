"""RoIAlign on its own: our eager op = the oracle's mmcv shim (golden_det.pt, itself checked against a direct
computation when made) = ONNX Runtime's ``RoiAlign`` (what the export emits), and the RoI extractor's level rule
= mmdet's ``map_roi_levels``."""
import io
import warnings

import numpy as np
import pytest
import torch

from crossformer_deploy.model.det.roi_align import roi_align, roi_align_reference
from crossformer_deploy.model.det.roi_extractor import SingleRoIExtractor


class _Align(torch.nn.Module):
    def __init__(self, size: int, scale: float, aligned: bool = True):
        super().__init__()
        self.size, self.scale, self.aligned = size, scale, aligned

    def forward(self, feat, rois, batch_idx):
        return roi_align(feat, rois, batch_idx, (self.size, self.size), self.scale, self.aligned)


def _onnx(module: torch.nn.Module, args: tuple) -> bytes:
    buf = io.BytesIO()
    names = ["feat", "rois", "batch_idx"]
    axes = {"feat": {0: "b", 2: "h", 3: "w"}, "rois": {0: "r"}, "batch_idx": {0: "r"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=17, input_names=names,
                          output_names=["out"], dynamic_axes=axes)
    return buf.getvalue()


def _random_rois(n: int, h: int, w: int, stride: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RoIs in input pixels: most inside, some across or past the borders, some tiny, some empty, some long."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * stride * 1.2, h * stride * 1.2]) - 0.1 * stride * 8
    wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w * stride, h * stride])
    wh[: n // 10] = 0.0  # empty
    wh[n // 10: n // 5] *= 0.01  # sub-pixel
    return torch.cat([xy, xy + wh], 1), torch.randint(0, 2, (n,), generator=g)


def test_equals_the_oracle_shim(golden_det):
    """Ours = ``oracle_det.plain_roi_align`` (mmcv's kernel in PyTorch) on cases for every rule: inside, across the
    border, past -1, over the last row and column, empty, sub-pixel, many samples a bin, a second image."""
    case = golden_det["roi_align"]
    rois = case["rois"]
    for size in (7, 3):
        got = roi_align_reference(case["feat"], rois[:, 1:], rois[:, 0].long(), (size, size), case["spatial_scale"])
        diff = (got - case[f"out_{size}"]).abs().max().item()
        assert diff <= 1e-6, f"{size}x{size}: max|diff| {diff:.3g}"


@pytest.mark.parametrize("aligned", [True, False])
def test_onnx_runtime_roialign_equals_ours(aligned):
    """One ``RoiAlign`` node (half_pixel for aligned, output_half_pixel for mmcv's legacy mode; avg; adaptive
    sampling) whose ORT output equals the eager op on 400 RoIs of every kind, on maps of other sizes than the
    export's: ORT's adaptive grid is mmcv's ceil(roi / out)."""
    ort = pytest.importorskip("onnxruntime")
    import onnx

    module = _Align(7, 1 / 8, aligned)
    dummy = (torch.randn(2, 5, 10, 12), torch.tensor([[0.0, 0, 40, 40]]), torch.zeros(1, dtype=torch.long))
    proto = _onnx(module, dummy)
    (node,) = [n for n in onnx.load_from_string(proto).graph.node if n.op_type == "RoiAlign"]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["coordinate_transformation_mode"] == (b"half_pixel" if aligned else b"output_half_pixel")
    assert (attrs["mode"], attrs["sampling_ratio"], attrs["output_height"]) == (b"avg", 0, 7)
    sess = ort.InferenceSession(proto, providers=["CPUExecutionProvider"])
    feat = torch.randn(2, 5, 23, 31, generator=torch.Generator().manual_seed(3))
    rois, idx = _random_rois(400, 23, 31, 8, seed=4)
    want = module(feat, rois, idx)
    (got,) = sess.run(None, {"feat": feat.numpy(), "rois": rois.numpy(), "batch_idx": idx.numpy()})
    diff = float(np.abs(got - want.numpy()).max())
    assert diff <= 1e-5, f"max|ORT - ours| {diff:.3g}"
    empty = np.zeros((0, 4), np.float32)
    (none,) = sess.run(None, {"feat": feat.numpy(), "rois": empty, "batch_idx": np.zeros(0, np.int64)})
    assert none.shape == (0, 5, 7, 7)


class _Extract(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ext = SingleRoIExtractor(7, (8, 16))

    def forward(self, f0, f1, rois, batch_idx):
        return self.ext([f0, f1], rois, batch_idx)


def test_openvino_extractor_equals_ours():
    """OpenVINO's ``ROIAlign`` (from ONNX RoiAlign, half_pixel) = ours on both levels, empty RoIs included: its
    CPU kernel gives NaN there (0 / 0), the extractor's final Where gives mmcv's 0."""
    ov = pytest.importorskip("openvino")
    g = torch.Generator().manual_seed(6)
    f0, f1 = torch.randn(2, 5, 23, 31, generator=g), torch.randn(2, 5, 12, 16, generator=g)
    rois, idx = _random_rois(300, 23, 31, 8, seed=7)
    buf = io.BytesIO()
    names = ["f0", "f1", "rois", "batch_idx"]
    axes = {"f0": {0: "b", 2: "h", 3: "w"}, "f1": {0: "b", 2: "h1", 3: "w1"}, "rois": {0: "r"}, "batch_idx": {0: "r"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Extract(), (f0[:1, :, :10], f1[:1, :, :5], rois[:3], idx[:3] * 0), buf, dynamo=False,
                          opset_version=17, input_names=names, output_names=["out"], dynamic_axes=axes)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(buf.getvalue()), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    (got,) = compiled({"f0": f0.numpy(), "f1": f1.numpy(), "rois": rois.numpy(), "batch_idx": idx.numpy()}).values()
    want = _Extract()(f0, f1, rois, idx).numpy()
    diff = float(np.abs(np.asarray(got) - want).max())
    assert diff <= 1e-5, f"max|OpenVINO - ours| {diff:.3g}"


def test_levels_follow_map_roi_levels():
    """floor(log2(sqrt(w * h) / 56 + 1e-6)) clamped to [0, 3], on random RoIs and on square RoIs a few floats
    either side of each boundary (scale / 56 + 1e-6 = 2, 4, 8)."""
    ext = SingleRoIExtractor(7, (4, 8, 16, 32))
    g = torch.Generator().manual_seed(5)
    xy = torch.rand(2000, 2, generator=g) * 100
    rois = torch.cat([xy, xy + torch.rand(2000, 2, generator=g) ** 2 * 900], 1)
    sides = [0.0, 1.0, 55.0, 112.0, 224.0, 448.0, 2000.0]
    for k in (1, 2, 3):
        side = np.float32(56 * (2**k - 1e-6))
        for _ in range(4):
            side = np.nextafter(side, np.float32(0))
        sides += [float(side := np.nextafter(side, np.float32(1e9))) for _ in range(8)]
    rois = torch.cat([rois, torch.tensor([[0.0, 0.0, s, s] for s in sides])])
    scale = torch.sqrt((rois[:, 2] - rois[:, 0]) * (rois[:, 3] - rois[:, 1]))
    want = torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=3).long()
    assert torch.equal(ext.levels(rois), want)
    assert ext.levels(rois[2000:2007]).tolist() == [0, 0, 0, 1, 2, 3, 3]
    assert set(ext.levels(rois[2007:]).tolist()) == {0, 1, 2, 3}  # both sides of every boundary are there
