"""RetinaNet configuration: the authors' ``retinanet_crossformer_{s,b}_fpn_1x_coco.py`` on mmdet's
``retinanet_r50_fpn.py`` (github.com/cheerss/CrossFormer ``detection/configs``; values read, not copied).

Every released RetinaNet config uses the backbone's default grouping (G 7, I 8, 4, 2, 1), an FPN with out
256, ``start_level`` 1, ``add_extra_convs='on_input'``, 5 outputs (strides 8..128), and a RetinaHead with
4 x 256 convs, sigmoid classes and 9 anchors a location.
"""
from __future__ import annotations

from dataclasses import dataclass

from crossformer_deploy.model.config import CrossFormerConfig

COCO_CLASSES = 80
DET_STRIDES = (8, 16, 32, 64, 128)


@dataclass(frozen=True)
class AnchorConfig:
    """mmdet ``AnchorGenerator``: per level base size = stride, scales ``octave_base_scale * 2**(i / n)`` for
    i < ``scales_per_octave``, ``ratios`` = h / w; mmdet 3.x centres anchors on ``center_offset * stride``."""

    octave_base_scale: float = 4.0
    scales_per_octave: int = 3
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    strides: tuple[int, ...] = DET_STRIDES
    center_offset: float = 0.0

    @property
    def num_anchors(self) -> int:
        return self.scales_per_octave * len(self.ratios)


@dataclass(frozen=True)
class TestConfig:
    """mmdet's RetinaNet ``test_cfg`` and the box coder's constants (DeltaXYWHBBoxCoder defaults)."""

    nms_pre: int = 1000
    score_thr: float = 0.05
    iou_threshold: float = 0.5
    max_per_img: int = 100
    min_bbox_size: float = 0.0
    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0)
    stds: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    wh_ratio_clip: float = 16 / 1000


@dataclass(frozen=True)
class DetConfig:
    """A whole RetinaNet: backbone, FPN neck (``neck_channels`` wide, from stage ``start_level`` on) and head
    (``stacked_convs`` convs of ``feat_channels``, ``num_classes`` sigmoid classes)."""

    backbone: CrossFormerConfig
    num_classes: int = COCO_CLASSES
    neck_channels: int = 256
    feat_channels: int = 256
    stacked_convs: int = 4
    start_level: int = 1
    anchors: AnchorConfig = AnchorConfig()
    test: TestConfig = TestConfig()

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"a detector needs at least one class, not {self.num_classes}")

    @property
    def arch(self) -> str:
        return "retinanet"

    @property
    def in_channels(self) -> tuple[int, ...]:
        return tuple(self.backbone.stage_dim(i) for i in range(self.backbone.num_stages))

    @property
    def num_outs(self) -> int:
        return len(self.anchors.strides)

    @property
    def label(self) -> str:
        """"RetinaNet CrossFormer-S"."""
        return f"RetinaNet {self.backbone.label}"
