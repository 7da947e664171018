"""Reading the authors' MMDetection RetinaNet and Mask R-CNN checkpoints: strict, the detector, widths and classes
off the file; foreign and broken files refused in one line."""
import pytest
import torch

from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.det import create_detector
from crossformer_deploy.model.det.checkpoint import read_det_state_dict


def _save(path, obj) -> str:
    torch.save(obj, path)
    return str(path)


def _refused(path, *fragments, **kw) -> None:
    with pytest.raises(CheckpointError) as e:
        create_detector(kw.pop("variant", None), path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and all(f in msg for f in fragments), msg


def test_reads_the_mmdet_layout(det_ckpt):
    sd = read_det_state_dict(det_ckpt)
    assert {k.split(".")[0] for k in sd} == {"backbone", "neck", "bbox_head"}
    model = create_detector("tiny", det_ckpt, num_classes=5)
    assert model.cfg.group_sizes == (7, 7, 7, 7) and model.cfg.intervals == (8, 4, 2, 1)
    assert model.det_cfg.label == "RetinaNet CrossFormer (tiny)"


def test_foreign_checkpoints_are_refused(golden_ckpt, seg_ckpts):
    _refused(golden_ckpt, "image classifier checkpoint", "--task det")
    _refused(seg_ckpts["upernet_tiny"], "segmentation checkpoint", "not a detection one")


def test_broken_or_other_detectors_are_refused(det_ckpt, tmp_path):
    obj = torch.load(det_ckpt, weights_only=False)
    sd = obj["state_dict"]
    mixed = {**sd, "rpn_head.rpn_conv.weight": torch.zeros(1)}
    _refused(_save(tmp_path / "mixed.pth", {"state_dict": mixed}), "both a one-stage head", "not one detector")
    backbone_only = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    _refused(_save(tmp_path / "bb.pth", {"state_dict": backbone_only}), "no detection head")
    _refused(det_ckpt, "is a RetinaNet checkpoint, not a Mask R-CNN one", arch="mask_rcnn")
    no_reg = {k: v for k, v in sd.items() if k != "bbox_head.retina_reg.weight"}
    _refused(_save(tmp_path / "noreg.pth", {"state_dict": no_reg}), "does not fit RetinaNet", "retina_reg.weight")
    extra = {**sd, "bbox_head.cls_convs.0.conv.surplus": torch.zeros(1)}
    _refused(_save(tmp_path / "extra.pth", {"state_dict": extra}), "does not fit the model", "1 unexpected")
    missing = {k: v for k, v in sd.items() if k != "neck.fpn_convs.4.conv.bias"}
    _refused(_save(tmp_path / "missing.pth", {"state_dict": missing}), "1 missing", "neck.fpn_convs.4.conv.bias")
    _refused(det_ckpt, "has 5 classes, not 80", num_classes=80)
    _refused(det_ckpt, "not CrossFormer-S", variant="s")
    _refused(_save(tmp_path / "junk.pth", {"meta": {}}), "not an MMDetection checkpoint")


def test_reads_a_mask_rcnn(mask_rcnn_ckpt):
    """The detector is told by its head keys; widths, convs and classes off the shapes."""
    sd = read_det_state_dict(mask_rcnn_ckpt)
    assert {k.split(".")[0] for k in sd} == {"backbone", "neck", "rpn_head", "roi_head"}
    model = create_detector("tiny", mask_rcnn_ckpt, num_classes=5, arch="mask_rcnn")
    cfg = model.det_cfg
    assert (cfg.arch, cfg.neck_channels, cfg.rpn_channels, cfg.fc_channels, cfg.mask_channels, cfg.mask_convs) == (
        "mask_rcnn", 8, 8, 32, 8, 4)
    assert model.cfg.group_sizes == (7, 7, 7, 7) and model.cfg.intervals == (8, 4, 2, 1)
    assert model.output_names == ["dets", "labels", "masks"]


def test_broken_mask_rcnns_are_refused(mask_rcnn_ckpt, tmp_path):
    sd = torch.load(mask_rcnn_ckpt, weights_only=False)["state_dict"]
    no_mask = {k: v for k, v in sd.items() if not k.startswith("roi_head.mask_head.conv_logits")}
    _refused(_save(tmp_path / "nomask.pth", {"state_dict": no_mask}), "does not fit Mask R-CNN", "conv_logits.weight")
    agnostic = {**sd, "roi_head.bbox_head.fc_reg.weight": sd["roi_head.bbox_head.fc_reg.weight"][:4]}
    _refused(_save(tmp_path / "agnostic.pth", {"state_dict": agnostic}), "4 box deltas", "regresses per class")
    missing = {k: v for k, v in sd.items() if k != "rpn_head.rpn_reg.bias"}
    _refused(_save(tmp_path / "missing.pth", {"state_dict": missing}), "1 missing", "rpn_head.rpn_reg.bias")
    _refused(mask_rcnn_ckpt, "has 5 classes, not 80", num_classes=80)
    _refused(mask_rcnn_ckpt, "is a Mask R-CNN checkpoint, not a RetinaNet one", arch="retinanet")
