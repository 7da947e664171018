"""Read the authors' MMSegmentation checkpoints: which head, which backbone, how many classes.

Layout: ``{"state_dict": {backbone.*, neck.*, decode_head.*, auxiliary_head.*}, "meta": {...}}`` (mmseg 0.x's
runner also saves ``optimizer``); read by ``safe_pickle`` like every checkpoint. The head shows in the keys
(UPerHead's ``decode_head.psp_modules``, FPNHead's ``decode_head.scale_heads``), the classes and widths in the
shapes, the backbone as for any CrossFormer checkpoint. ``auxiliary_head.*`` is training-only: dropped.
"""
from __future__ import annotations

import os
import re
from dataclasses import replace

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
from crossformer_deploy.model.seg.config import HEAD_LABELS, PPM_SCALES, SegConfig, released_backbone

HEAD_MARKS = {"upernet": "decode_head.psp_modules.", "fpn": "decode_head.scale_heads."}
DETECTION_MARKS = ("rpn_head.", "roi_head.", "bbox_head.", "mask_head.")
TRAINING_ONLY = ("auxiliary_head.",)


def read_seg_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The segmenter's tensors (``backbone.``, ``neck.``, ``decode_head.``); CheckpointError in one line for a
    classifier, detector or backbone-only file."""
    path, sd = read_mm_state_dict(path, "MMSegmentation", "decode_head.", "seg")
    det = sorted(k for k in sd if k.startswith(DETECTION_MARKS))
    if det:
        raise CheckpointError(f"{path} is a detection checkpoint ({det[0].split('.')[0]}.*), not a segmentation one")
    if not any(k.startswith("decode_head.") for k in sd):
        raise CheckpointError(f"{path} holds no decode head (no decode_head.*): a backbone-only checkpoint "
                              "cannot segment")
    return {k: v for k, v in sd.items() if not k.startswith(TRAINING_ONLY) and not k.endswith(DERIVED)}


def head_of(sd: dict[str, torch.Tensor], where: str = "checkpoint") -> str:
    """"upernet" or "fpn", by the decode head's keys."""
    found = [h for h, mark in HEAD_MARKS.items() if any(k.startswith(mark) for k in sd)]
    if len(found) != 1:
        some = sorted(k for k in sd if k.startswith("decode_head."))[:2]
        raise CheckpointError(f"{where} has a decode head that is neither UPerHead nor FPNHead "
                              f"(keys {', '.join(some)} ...)")
    return found[0]


def _backbone(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}


def infer_seg_config(sd: dict[str, torch.Tensor], head: str | None = None, variant: str | None = None,
                     num_classes: int | None = None, grouping: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
                     where: str = "checkpoint") -> SegConfig:
    """The segmenter a checkpoint holds, checked against what was asked (``head``, ``variant``, ``num_classes``).

    The backbone's group sizes and intervals are the released config's for its variant and head
    (``released_backbone``) unless ``grouping`` = (group sizes, intervals) says otherwise.
    """
    found_head = head_of(sd, where)
    if head is not None and head != found_head:
        raise CheckpointError(f"{where} holds a {HEAD_LABELS[found_head]} head ({HEAD_MARKS[found_head]}*), "
                              f"not {HEAD_LABELS.get(head, head)}")
    backbone_sd = _backbone(sd)
    if not backbone_sd:
        raise CheckpointError(f"{where} has no backbone.* tensors")
    backbone, _ = infer_config(backbone_sd)
    backbone = asked_variant(backbone, variant, where)
    backbone = with_grouping(released_backbone(backbone, found_head), grouping)
    try:
        classes, channels = sd["decode_head.conv_seg.weight"].shape[:2]
        neck = sd["neck.lateral_convs.0.conv.weight"].shape[0] if found_head == "fpn" else 256
    except KeyError as e:
        raise CheckpointError(f"{where} does not fit {HEAD_LABELS[found_head]}: {e.args[0]} is missing") from None
    if num_classes is not None and num_classes != classes:
        raise CheckpointError(f"{where} has {classes} classes, not {num_classes}")
    branches = len({m.group(1) for k in sd if (m := re.match(r"decode_head\.psp_modules\.(\d+)\.", k))})
    if found_head == "upernet" and branches != len(PPM_SCALES):
        raise CheckpointError(f"{where}: a PPM with {branches} branches (the released configs have "
                              f"{len(PPM_SCALES)}: pool scales {PPM_SCALES})")
    return SegConfig(backbone, found_head, int(classes), int(channels), int(neck))


def with_grouping(cfg: CrossFormerConfig,
                  grouping: tuple[tuple[int, ...], tuple[int, ...]] | None) -> CrossFormerConfig:
    """``cfg`` with other group sizes and intervals (None: unchanged)."""
    if grouping is None:
        return cfg
    groups, intervals = grouping
    n = cfg.num_stages
    if len(groups) != n or len(intervals) != n:
        raise CheckpointError(f"grouping needs {n} group sizes and {n} intervals, got {groups} / {intervals}")
    return replace(cfg, group_sizes=tuple(groups), intervals=tuple(intervals))


def load_seg_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Strict load (every tensor present with its shape, nothing unknown); CheckpointError naming the first
    few mismatches."""
    load_strict(model, sd, where)
