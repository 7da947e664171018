"""``create_detector``: the one way to build a whole RetinaNet, from an mmdet checkpoint or untrained."""
from __future__ import annotations

import os

import torch

from crossformer_deploy.model.config import get_config
from crossformer_deploy.model.det.checkpoint import infer_det_config, load_det_weights, read_det_state_dict
from crossformer_deploy.model.det.config import COCO_CLASSES, DetConfig
from crossformer_deploy.model.det.detector import RetinaNet
from crossformer_deploy.model.seg.config import released_backbone


def create_detector(variant: str | DetConfig | None = None, weights: str | os.PathLike | None = None,
                    num_classes: int | None = None) -> RetinaNet:
    """An eval-mode RetinaNet.

    weights: an MMDetection checkpoint (the authors' ``retinanet_crossformer_s.pth`` ...); backbone variant,
    widths and classes are read off it and checked against ``variant`` / ``num_classes`` when given. Without
    weights: ``variant`` (default "s") and ``num_classes`` (default 80), untrained.
    """
    if weights is None:
        if isinstance(variant, DetConfig):
            cfg = variant
        else:
            backbone = released_backbone(get_config(variant or "s"), "retinanet")
            cfg = DetConfig(backbone, num_classes or COCO_CLASSES)
        return RetinaNet(cfg).eval()
    where = os.fspath(weights)
    sd = read_det_state_dict(weights)
    asked = variant.backbone.name if isinstance(variant, DetConfig) else variant
    cfg = infer_det_config(sd, asked, num_classes, where)
    model = RetinaNet(cfg)
    load_det_weights(model, sd, where)
    return model.eval()


def build_detector(variant: str | DetConfig | None = None, weights: str | os.PathLike | None = None,
                   num_classes: int | None = None, seed: int = 0) -> RetinaNet:
    """``create_detector`` with untrained weights reproducible from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_detector(variant, weights, num_classes)
