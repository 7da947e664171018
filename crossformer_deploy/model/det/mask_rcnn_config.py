"""Mask R-CNN configuration: the authors' ``mask_rcnn_crossformer_{s,b}_fpn_1x_coco.py`` (and the pp-S one) on
mmdet's ``mask_rcnn_r50_fpn.py`` (github.com/cheerss/CrossFormer ``detection/configs``; values read, not copied).

Every released Mask R-CNN config uses the backbone's default grouping (G 7, I 8, 4, 2, 1), an FPN with out 256
from stage 0 on and a fifth output by max pooling (strides 4..64), an RPN (one 3x3 conv of 256, 3 anchors a
location: scale 8, ratios 0.5 / 1 / 2), RoIAlign 7x7 (boxes) and 14x14 (masks) over the first four levels,
a Shared2FC box head (2 x 1024, class-specific regression) and an FCN mask head (4 x 256 convs, 28x28 masks).
"""
from __future__ import annotations

from dataclasses import dataclass

from crossformer_deploy.model.config import CrossFormerConfig
from crossformer_deploy.model.det.config import COCO_CLASSES, AnchorConfig

MASK_RCNN = "mask_rcnn"
RPN_STRIDES = (4, 8, 16, 32, 64)
# mmdet's RPN AnchorGenerator(scales=[8], ratios=[0.5, 1, 2], strides 4..64): one scale of 8 is an octave base
# of 8 with one scale per octave (the same float32 values)
RPN_ANCHORS = AnchorConfig(octave_base_scale=8.0, scales_per_octave=1, strides=RPN_STRIDES)


@dataclass(frozen=True)
class RPNTestConfig:
    """mmdet's ``test_cfg.rpn``: per level the ``nms_pre`` best anchors, NMS per level at ``iou_threshold``, the
    ``max_per_img`` best proposals; boxes of width or height <= ``min_bbox_size`` dropped; coder means 0, stds 1."""

    nms_pre: int = 1000
    iou_threshold: float = 0.7
    max_per_img: int = 1000
    min_bbox_size: float = 0.0
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    wh_ratio_clip: float = 16 / 1000


@dataclass(frozen=True)
class RCNNTestConfig:
    """mmdet's ``test_cfg.rcnn`` and the box head's coder: (RoI, class) pairs over ``score_thr``, NMS per class at
    ``iou_threshold``, the ``max_per_img`` best; masks binarised at ``mask_thr_binary`` when pasted."""

    score_thr: float = 0.05
    iou_threshold: float = 0.5
    max_per_img: int = 100
    mask_thr_binary: float = 0.5
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    stds: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2)
    wh_ratio_clip: float = 16 / 1000


@dataclass(frozen=True)
class RoIConfig:
    """mmdet's ``SingleRoIExtractor`` pair: RoIAlign ``bbox_size`` / ``mask_size`` square, adaptive sampling,
    aligned, over maps of ``strides``; a RoI of scale sqrt(w * h) goes to level floor(log2(scale /
    ``finest_scale`` + 1e-6)), clamped to the levels."""

    bbox_size: int = 7
    mask_size: int = 14
    finest_scale: int = 56
    strides: tuple[int, ...] = (4, 8, 16, 32)
    aligned: bool = True


@dataclass(frozen=True)
class MaskRCNNConfig:
    """A whole Mask R-CNN: backbone, FPN neck (``neck_channels``), RPN (``rpn_channels``), box head (two fcs of
    ``fc_channels``), mask head (``mask_convs`` convs of ``mask_channels``), ``num_classes`` classes (softmax with
    a background class)."""

    backbone: CrossFormerConfig
    num_classes: int = COCO_CLASSES
    neck_channels: int = 256
    rpn_channels: int = 256
    fc_channels: int = 1024
    mask_channels: int = 256
    mask_convs: int = 4
    anchors: AnchorConfig = RPN_ANCHORS
    roi: RoIConfig = RoIConfig()
    rpn_test: RPNTestConfig = RPNTestConfig()
    test: RCNNTestConfig = RCNNTestConfig()

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"a detector needs at least one class, not {self.num_classes}")

    @property
    def arch(self) -> str:
        return MASK_RCNN

    @property
    def in_channels(self) -> tuple[int, ...]:
        return tuple(self.backbone.stage_dim(i) for i in range(self.backbone.num_stages))

    @property
    def num_outs(self) -> int:
        return len(self.anchors.strides)

    @property
    def mask_out_size(self) -> int:
        """The mask head's output side: the RoI features' after one 2x deconvolution (28)."""
        return 2 * self.roi.mask_size

    @property
    def label(self) -> str:
        """"Mask R-CNN CrossFormer-S"."""
        return f"Mask R-CNN {self.backbone.label}"
