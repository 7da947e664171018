"""``create_detector``: the one way to build a whole detector (RetinaNet or Mask R-CNN), from an mmdet checkpoint
or untrained."""
from __future__ import annotations

import os

import torch

from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.config import get_config
from crossformer_deploy.model.det.checkpoint import (
    RETINANET,
    det_arch,
    infer_det_config,
    load_det_weights,
    read_det_state_dict,
)
from crossformer_deploy.model.det.config import COCO_CLASSES, DetConfig
from crossformer_deploy.model.det.detector import RetinaNet
from crossformer_deploy.model.det.mask_rcnn import MaskRCNN
from crossformer_deploy.model.det.mask_rcnn_config import MASK_RCNN, MaskRCNNConfig
from crossformer_deploy.model.seg.config import released_backbone

ARCHS = (RETINANET, MASK_RCNN)
NAMES = {RETINANET: "RetinaNet", MASK_RCNN: "Mask R-CNN"}
Detector = RetinaNet | MaskRCNN


def _build(cfg: DetConfig | MaskRCNNConfig) -> Detector:
    return MaskRCNN(cfg) if isinstance(cfg, MaskRCNNConfig) else RetinaNet(cfg)


def create_detector(variant: str | DetConfig | MaskRCNNConfig | None = None,
                    weights: str | os.PathLike | None = None, num_classes: int | None = None,
                    arch: str | None = None) -> Detector:
    """An eval-mode RetinaNet or Mask R-CNN.

    weights: an MMDetection checkpoint (the authors' ``retinanet_crossformer_s.pth``, ``mask_rcnn_crossformer_s.pth``
    ...); the detector (by its head keys), backbone variant, widths and classes are read off it and checked against
    ``arch`` / ``variant`` / ``num_classes`` when given. Without weights: ``variant`` (default "s", or a config),
    ``arch`` ("retinanet", the default, or "mask_rcnn") and ``num_classes`` (default 80), untrained.
    """
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"unknown detector {arch!r}; choose one of {', '.join(ARCHS)}")
    if weights is None:
        if isinstance(variant, (DetConfig, MaskRCNNConfig)):
            return _build(variant).eval()
        kind = arch or RETINANET
        backbone = released_backbone(get_config(variant or "s"), kind)
        cfg_type = MaskRCNNConfig if kind == MASK_RCNN else DetConfig
        return _build(cfg_type(backbone, num_classes or COCO_CLASSES)).eval()
    where = os.fspath(weights)
    sd = read_det_state_dict(weights)
    found = det_arch(sd)
    asked_arch = variant.arch if isinstance(variant, (DetConfig, MaskRCNNConfig)) else arch
    if asked_arch is not None and asked_arch != found:
        raise CheckpointError(f"{where} is a {NAMES[found]} checkpoint, not a {NAMES[asked_arch]} one")
    asked = variant.backbone.name if isinstance(variant, (DetConfig, MaskRCNNConfig)) else variant
    model = _build(infer_det_config(sd, asked, num_classes, where))
    load_det_weights(model, sd, where)
    return model.eval()


def build_detector(variant: str | DetConfig | MaskRCNNConfig | None = None,
                   weights: str | os.PathLike | None = None, num_classes: int | None = None, seed: int = 0,
                   arch: str | None = None) -> Detector:
    """``create_detector`` with untrained weights reproducible from ``seed``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_detector(variant, weights, num_classes, arch)
