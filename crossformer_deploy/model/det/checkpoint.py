"""Read the authors' MMDetection RetinaNet checkpoints: backbone, neck and head widths, classes.

Layout: ``{"state_dict": {backbone.*, neck.*, bbox_head.*}, "meta": {...}}`` (mmdet 2.x and 3.x save the same
keys for these modules; the runner may add ``optimizer``), read by ``safe_pickle`` like every checkpoint (data
only, never the file's code). The head's widths, stacked convs, anchors a location and classes are read off the
shapes; the backbone as for any CrossFormer checkpoint, with the grouping of the released RetinaNet configs.
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
from crossformer_deploy.model.det.config import AnchorConfig, DetConfig
from crossformer_deploy.model.seg.config import released_backbone

TWO_STAGE = ("rpn_head.", "roi_head.")


def read_det_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The detector's tensors (``backbone.``, ``neck.``, ``bbox_head.``); CheckpointError in one line for a
    classifier, segmenter, two-stage detector or backbone-only file."""
    path, sd = read_mm_state_dict(path, "MMDetection", "bbox_head.", "det")
    if any(k.startswith(("decode_head.", "auxiliary_head.")) for k in sd):
        raise CheckpointError(f"{path} is a segmentation checkpoint (decode_head.*), not a detection one")
    if any(k.startswith(TWO_STAGE) for k in sd):
        raise CheckpointError(f"{path} is a two-stage detector (rpn_head.*, roi_head.*: Mask R-CNN); "
                              "only RetinaNet (bbox_head.*) is supported so far")
    if not any(k.startswith("bbox_head.") for k in sd):
        raise CheckpointError(f"{path} holds no detection head (no bbox_head.*): a backbone-only checkpoint "
                              "cannot detect")
    return {k: v for k, v in sd.items() if not k.endswith(DERIVED)}


def infer_det_config(sd: dict[str, torch.Tensor], variant: str | None = None, num_classes: int | None = None,
                     where: str = "checkpoint") -> DetConfig:
    """The RetinaNet a checkpoint holds, checked against what was asked (``variant``, ``num_classes``)."""
    backbone_sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    if not backbone_sd:
        raise CheckpointError(f"{where} has no backbone.* tensors")
    backbone, _ = infer_config(backbone_sd)
    # every released RetinaNet config builds its backbone with the default grouping (G 7, I 8, 4, 2, 1)
    backbone = released_backbone(asked_variant(backbone, variant, where), "retinanet")
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
    classes = cls_w.shape[0] // per_location
    if num_classes is not None and num_classes != classes:
        raise CheckpointError(f"{where} has {classes} classes, not {num_classes}")
    stacked = len({m.group(1) for k in sd if (m := re.match(r"bbox_head\.cls_convs\.(\d+)\.", k))})
    return DetConfig(backbone, int(classes), int(neck), int(cls_w.shape[1]), stacked)


def load_det_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Strict load (every tensor present with its shape, nothing unknown); CheckpointError naming the first
    few mismatches."""
    load_strict(model, sd, where)
