"""``create_segmenter``: the one way to build a whole segmenter, from a checkpoint or untrained."""
from __future__ import annotations

import os

import torch

from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.base.model_info import ALIGN_RESIZE, SEG_SCALE, SEGMENTER, ModelInfo
from crossformer_deploy.model.config import get_config
from crossformer_deploy.model.factory import weights_label
from crossformer_deploy.model.seg.checkpoint import (
    infer_seg_config,
    load_seg_weights,
    read_seg_state_dict,
    with_grouping,
)
from crossformer_deploy.model.seg.config import ADE20K_CLASSES, SegConfig, released_backbone
from crossformer_deploy.model.seg.segmentor import Segmentor

Grouping = tuple[tuple[int, ...], tuple[int, ...]]


def create_segmenter(variant: str | SegConfig | None = None, weights: str | os.PathLike | None = None,
                     head: str | None = None, num_classes: int | None = None, grouping: Grouping | None = None,
                     return_logits: bool = False) -> Segmentor:
    """An eval-mode Segmentor.

    weights: an MMSegmentation checkpoint (the authors' ``upernet_crossformer_s.pth`` ...); head, backbone
    variant and classes are read off it and checked against ``head`` / ``variant`` / ``num_classes`` when
    given. Without weights: ``head`` (default "upernet"), ``variant`` (default "s"), ``num_classes``
    (default 150), untrained. ``grouping`` = (group sizes, intervals) overrides the released config's.
    """
    if weights is None:
        if isinstance(variant, SegConfig):
            cfg = variant
        else:
            head = head or "upernet"
            backbone = with_grouping(released_backbone(get_config(variant or "s"), head), grouping)
            cfg = SegConfig(backbone, head, num_classes or ADE20K_CLASSES)
        return Segmentor(cfg, return_logits).eval()
    where = os.fspath(weights)
    sd = read_seg_state_dict(weights)
    if isinstance(variant, SegConfig):
        cfg = infer_seg_config(sd, variant.head, variant.backbone, variant.num_classes,
                               (variant.backbone.group_sizes, variant.backbone.intervals), where)
    else:
        cfg = infer_seg_config(sd, head, variant, num_classes, grouping, where)
    model = Segmentor(cfg, return_logits)
    load_seg_weights(model, sd, where)
    return model.eval()


def build_segmenter(variant: str | SegConfig | None = None, weights: str | os.PathLike | None = None,
                    head: str | None = None, num_classes: int | None = None, grouping: Grouping | None = None,
                    return_logits: bool = False, seed: int = 0) -> Segmentor:
    """``create_segmenter`` with untrained weights reproducible from ``seed`` (export and validate must build
    the same random model)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_segmenter(variant, weights, head, num_classes, grouping, return_logits)


def segmenter_from_label(cfg: SegConfig, label: str, weights: str | os.PathLike | None = None,
                         return_logits: bool = False) -> Segmentor:
    """Rebuild the Segmentor an export was made from (its recorded config and ``weights`` label)."""
    if label.startswith("random-init seed="):
        return build_segmenter(cfg, None, return_logits=return_logits, seed=int(label.split("=")[1]))
    if weights is None:
        raise CheckpointError(f"this model was exported from {label.split(' sha256=')[0]}: pass it with --weights")
    if weights_label(weights).split("sha256=")[1] != label.split("sha256=")[-1]:
        raise CheckpointError(f"{os.fspath(weights)} is not the checkpoint this model was exported from "
                              f"({label[:80]})")
    return create_segmenter(cfg, weights, return_logits=return_logits)


def segmenter_info(model: Segmentor, weights: str, input_size: tuple[int, int] = (512, 512), dynamic: bool = True,
                   batch: int | None = None, variant: str | None = None) -> ModelInfo:
    """What an export of ``model`` says about itself: mode "segmenter", its head, the AlignResize rule (no crop),
    its SegConfig (``extra["segmenter"]``) so that validation can rebuild it."""
    cfg = model.seg_cfg
    return ModelInfo(variant=variant or cfg.backbone.name, mode=SEGMENTER, num_classes=cfg.num_classes, weights=weights,
                     input_size=tuple(input_size), dynamic=dynamic, batch=batch, stride=cfg.backbone.stride,
                     crop_ratio=1.0, resize=ALIGN_RESIZE, scale=SEG_SCALE, head=cfg.head,
                     extra={"segmenter": cfg.to_json()})
