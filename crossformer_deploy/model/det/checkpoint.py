"""Read the authors' MMDetection checkpoints (RetinaNet, Mask R-CNN): backbone, neck and head widths, classes.

Layout: ``{"state_dict": {backbone.*, neck.*, bbox_head.*}, "meta": {...}}`` for RetinaNet,
``{backbone.*, neck.*, rpn_head.*, roi_head.bbox_head.*, roi_head.mask_head.*}`` for Mask R-CNN (mmdet 2.x and 3.x
save the same keys for these modules; the runner may add ``optimizer``), read by ``safe_pickle`` like every
checkpoint (data only, never the file's code). The detector is told by its head keys; the heads' widths, stacked
convs, anchors a location and classes are read off the shapes; the backbone as for any CrossFormer checkpoint,
with the grouping of the released detection configs.
"""
from __future__ import annotations

import os
import re

import torch

from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.checkpoint import (
    DERIVED,
    asked_variant,
    infer_config,
    load_strict,
    read_mm_state_dict,
)
from crossformer_deploy.model.config import CrossFormerConfig
from crossformer_deploy.model.det.config import AnchorConfig, DetConfig
from crossformer_deploy.model.det.mask_rcnn_config import MASK_RCNN, MaskRCNNConfig
from crossformer_deploy.model.seg.config import released_backbone

RETINANET = "retinanet"
TWO_STAGE = ("rpn_head.", "roi_head.")


def det_arch(sd: dict[str, torch.Tensor]) -> str:
    """"retinanet" (``bbox_head.*``) or "mask_rcnn" (``rpn_head.*``, ``roi_head.*``) by the head keys."""
    return MASK_RCNN if any(k.startswith(TWO_STAGE) for k in sd) else RETINANET


def read_det_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The detector's tensors (``backbone.``, ``neck.`` and its heads); CheckpointError in one line for a
    classifier, segmenter, backbone-only or mixed file."""
    path, sd = read_mm_state_dict(path, "MMDetection", "bbox_head.", "det")
    if any(k.startswith(("decode_head.", "auxiliary_head.")) for k in sd):
        raise CheckpointError(f"{path} is a segmentation checkpoint (decode_head.*), not a detection one")
    one_stage, two_stage = any(k.startswith("bbox_head.") for k in sd), any(k.startswith(TWO_STAGE) for k in sd)
    if one_stage and two_stage:
        raise CheckpointError(f"{path} holds both a one-stage head (bbox_head.*) and a two-stage one (rpn_head.*, "
                              "roi_head.*): not one detector")
    if not (one_stage or two_stage):
        raise CheckpointError(f"{path} holds no detection head (no bbox_head.*, rpn_head.* or roi_head.*): a "
                              "backbone-only checkpoint cannot detect")
    return {k: v for k, v in sd.items() if not k.endswith(DERIVED)}


def _backbone(sd: dict[str, torch.Tensor], variant: str | None, arch: str, where: str) -> CrossFormerConfig:
    backbone_sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if not backbone_sd:
        raise CheckpointError(f"{where} has no backbone.* tensors")
    backbone, _ = infer_config(backbone_sd)
    # every released detection config builds its backbone with the default grouping (G 7, I 8, 4, 2, 1)
    return released_backbone(asked_variant(backbone, variant, where), arch)


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    return len({m.group(1) for k in sd if (m := re.match(pattern, k))})


def _classes(found: int, asked: int | None, where: str) -> int:
    if asked is not None and asked != found:
        raise CheckpointError(f"{where} has {found} classes, not {asked}")
    return int(found)


def infer_retinanet_config(sd: dict[str, torch.Tensor], variant: str | None = None, num_classes: int | None = None,
                           where: str = "checkpoint") -> DetConfig:
    """The RetinaNet a checkpoint holds, checked against what was asked (``variant``, ``num_classes``)."""
    backbone = _backbone(sd, variant, RETINANET, where)
    try:
        cls_w, reg_w = sd["bbox_head.retina_cls.weight"], sd["bbox_head.retina_reg.weight"]
        neck = sd["neck.lateral_convs.0.conv.weight"].shape[0]
    except KeyError as e:
        raise CheckpointError(f"{where} does not fit RetinaNet: {e.args[0]} is missing") from None
    anchors = AnchorConfig()
    per_location = reg_w.shape[0] // 4
    if per_location != anchors.num_anchors or cls_w.shape[0] % per_location:
        raise CheckpointError(f"{where}: a RetinaHead with {per_location} anchors a location (the released "
                              f"configs have {anchors.num_anchors}: 3 scales x 3 ratios)")
    classes = _classes(cls_w.shape[0] // per_location, num_classes, where)
    stacked = _count(sd, r"bbox_head\.cls_convs\.(\d+)\.")
    return DetConfig(backbone, classes, int(neck), int(cls_w.shape[1]), stacked)


def infer_mask_rcnn_config(sd: dict[str, torch.Tensor], variant: str | None = None, num_classes: int | None = None,
                           where: str = "checkpoint") -> MaskRCNNConfig:
    """The Mask R-CNN a checkpoint holds, checked against what was asked (``variant``, ``num_classes``)."""
    backbone = _backbone(sd, variant, MASK_RCNN, where)
    try:
        neck = sd["neck.lateral_convs.0.conv.weight"].shape[0]
        rpn_w, rpn_cls = sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_cls.weight"]
        fc_w, cls_w = sd["roi_head.bbox_head.shared_fcs.0.weight"], sd["roi_head.bbox_head.fc_cls.weight"]
        reg_w = sd["roi_head.bbox_head.fc_reg.weight"]
        mask_w, logits_w = sd["roi_head.mask_head.convs.0.conv.weight"], sd["roi_head.mask_head.conv_logits.weight"]
    except KeyError as e:
        raise CheckpointError(f"{where} does not fit Mask R-CNN: {e.args[0]} is missing") from None
    cfg = MaskRCNNConfig(backbone)
    if rpn_cls.shape[0] != cfg.anchors.num_anchors:
        raise CheckpointError(f"{where}: an RPN with {rpn_cls.shape[0]} objectness maps (the released configs have "
                              f"{cfg.anchors.num_anchors} anchors a location, one sigmoid each)")
    classes = _classes(cls_w.shape[0] - 1, num_classes, where)
    if reg_w.shape[0] != 4 * classes or logits_w.shape[0] != classes:
        raise CheckpointError(f"{where}: {reg_w.shape[0]} box deltas and {logits_w.shape[0]} mask maps for {classes} "
                              "classes (the released box head regresses per class: 4 each, a mask each)")
    return MaskRCNNConfig(backbone, classes, int(neck), int(rpn_w.shape[0]), int(fc_w.shape[0]),
                          int(mask_w.shape[0]), _count(sd, r"roi_head\.mask_head\.convs\.(\d+)\."))


def infer_det_config(sd: dict[str, torch.Tensor], variant: str | None = None, num_classes: int | None = None,
                     where: str = "checkpoint") -> DetConfig | MaskRCNNConfig:
    """The detector a checkpoint holds (RetinaNet or Mask R-CNN, by its head keys)."""
    infer = infer_mask_rcnn_config if det_arch(sd) == MASK_RCNN else infer_retinanet_config
    return infer(sd, variant, num_classes, where)


def load_det_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Strict load (every tensor present with its shape, nothing unknown); CheckpointError naming the first
    few mismatches."""
    load_strict(model, sd, where)
