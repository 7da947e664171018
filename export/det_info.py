"""What a detector export records about itself, and how validation rebuilds the PyTorch detector from it.

The segmenter's counterparts live in ``model/seg/factory.py`` (``segmenter_info``, ``segmenter_from_label``); the
detector's are here so that ``model/det`` keeps to the model itself. Its config (``DetConfig``, or a two-stage
detector's config) is written as JSON with its class name and read back field by field (nested dataclasses by
their annotations, the backbone by ``CrossFormerConfig.from_json``), so an untrained export can be rebuilt exactly.
"""
from __future__ import annotations

import dataclasses
import json
import os
import typing

from crossformer_deploy.base.errors import CheckpointError, ModelFileError
from crossformer_deploy.base.model_info import DET_SCALE, DETECTOR, KEEP_RATIO_PAD, ModelInfo
from crossformer_deploy.model import det as det_pkg
from crossformer_deploy.model.config import CrossFormerConfig
from crossformer_deploy.model.det import build_detector, create_detector
from crossformer_deploy.model.det import config as det_config
from crossformer_deploy.model.factory import weights_label

DET_INPUT_SIZE = (800, 1216)  # a COCO photo's input at mmdet's (1333, 800) scale: what validate and bench default to
ARCHS = {"RetinaNet": "retinanet", "MaskRCNN": "mask_rcnn"}  # the model class -> ModelInfo.head


def detector_arch(model) -> str:
    """"retinanet", "mask_rcnn": the detector's kind, as ModelInfo.head records it."""
    arch = getattr(model.det_cfg, "arch", None)
    if arch:
        return arch
    name = type(model).__name__
    return ARCHS.get(name, name.lower())


def config_to_json(cfg) -> str:
    return json.dumps({"class": type(cfg).__name__, "fields": _encode(cfg)})


def config_from_json(text: str):
    """The detector config ``config_to_json`` wrote; ModelFileError if this version cannot read it."""
    try:
        a = json.loads(text)
        name = a["class"]
        cls = getattr(det_pkg, name, None) or getattr(det_config, name, None)
        if cls is None or not dataclasses.is_dataclass(cls):
            raise KeyError(name)
        return _decode(cls, a["fields"])
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"this detector export's config cannot be read by this version ({e!r})") from None


def _encode(obj):
    if isinstance(obj, CrossFormerConfig):
        return json.loads(obj.to_json())
    if dataclasses.is_dataclass(obj):
        return {f.name: _encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [_encode(v) for v in obj]
    return obj


def _decode(cls, a: dict):
    hints = typing.get_type_hints(cls)
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name not in a:
            continue  # a field added after the export: its default
        t, v = hints[f.name], a[f.name]
        if t is CrossFormerConfig:
            kw[f.name] = CrossFormerConfig.from_json(json.dumps(v))
        elif dataclasses.is_dataclass(t):
            kw[f.name] = _decode(t, v)
        else:
            kw[f.name] = _tuples(v)
    return cls(**kw)


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def detector_info(model, weights: str, scale: tuple[int, int] = DET_SCALE, batch: int | None = None,
                  variant: str | None = None) -> ModelInfo:
    """What an export of ``model`` says about itself: mode "detector", its kind (``head``), mmdet's test pipeline
    (keep-ratio resize to ``scale``, pad to the stride), its config (``extra["detector"]``) to rebuild it."""
    cfg = model.det_cfg
    return ModelInfo(variant=variant or cfg.backbone.name, mode=DETECTOR, num_classes=cfg.num_classes,
                     weights=weights, input_size=DET_INPUT_SIZE, dynamic=True, batch=batch,
                     stride=cfg.backbone.stride, crop_ratio=1.0, resize=KEEP_RATIO_PAD, scale=tuple(scale),
                     head=detector_arch(model), extra={"detector": config_to_json(cfg)})


def detector_from_info(info: ModelInfo, weights: str | os.PathLike | None = None):
    """Rebuild the PyTorch detector an export was made from (its recorded config and ``weights`` label)."""
    cfg = config_from_json(info.extra["detector"])
    label = info.weights
    if label.startswith("random-init seed="):
        return build_detector(cfg, None, seed=int(label.split("=")[1]))
    if weights is None:
        raise CheckpointError(f"this model was exported from {label.split(' sha256=')[0]}: pass it with --weights")
    if weights_label(weights).split("sha256=")[1] != label.split("sha256=")[-1]:
        raise CheckpointError(f"{os.fspath(weights)} is not the checkpoint this model was exported from "
                              f"({label[:80]})")
    return create_detector(cfg, weights, cfg.num_classes)
