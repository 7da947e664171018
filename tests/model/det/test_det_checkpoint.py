"""Reading the authors' MMDetection RetinaNet checkpoints: strict, widths and classes off the file; foreign and
broken files refused in one line."""
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
    two_stage = {**sd, "rpn_head.rpn_conv.weight": torch.zeros(1)}
    _refused(_save(tmp_path / "mask_rcnn.pth", {"state_dict": two_stage}), "two-stage detector", "Mask R-CNN")
    backbone_only = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    _refused(_save(tmp_path / "bb.pth", {"state_dict": backbone_only}), "no detection head")
    no_reg = {k: v for k, v in sd.items() if k != "bbox_head.retina_reg.weight"}
    _refused(_save(tmp_path / "noreg.pth", {"state_dict": no_reg}), "does not fit RetinaNet", "retina_reg.weight")
    extra = {**sd, "bbox_head.cls_convs.0.conv.surplus": torch.zeros(1)}
    _refused(_save(tmp_path / "extra.pth", {"state_dict": extra}), "does not fit the model", "1 unexpected")
    missing = {k: v for k, v in sd.items() if k != "neck.fpn_convs.4.conv.bias"}
    _refused(_save(tmp_path / "missing.pth", {"state_dict": missing}), "1 missing", "neck.fpn_convs.4.conv.bias")
    _refused(det_ckpt, "has 5 classes, not 80", num_classes=80)
    _refused(det_ckpt, "not CrossFormer-S", variant="s")
    _refused(_save(tmp_path / "junk.pth", {"meta": {}}), "not an MMDetection checkpoint")
