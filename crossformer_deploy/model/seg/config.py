"""Segmenter configurations: the authors' Semantic FPN and UPerNet heads on a CrossFormer backbone.

Values from github.com/cheerss/CrossFormer, ``segmentation/configs`` (read, not copied): the branch
``crossformer`` for CrossFormer-S/B/L (the configs the checkpoints were released with), ``main`` for
CrossFormer++-S (``configs/crossformer_pp``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

from crossformer_deploy.model.config import CrossFormerConfig

HEADS = ("fpn", "upernet")
HEAD_LABELS = {"fpn": "Semantic FPN", "upernet": "UPerNet"}
ADE20K_CLASSES = 150
# Decode-head widths of the released configs: UPerHead 512, FPNHead 128 (after an FPN neck of 256).
HEAD_CHANNELS = {"upernet": 512, "fpn": 128}
FPN_NECK_CHANNELS = 256
PPM_SCALES = (1, 2, 3, 6)

# Group sizes and intervals leave no trace in a checkpoint, so they come from the configs the files were
# released with. Semantic FPN S and L used G = 14, 14, 7, 7 and I = 16, 8, 2, 1 (branch ``crossformer``;
# ``main`` later rewrote FPN-S to 7 / 8, 4, 2, 1, but its released file predates that); every other config
# uses G = 7, I = 8, 4, 2, 1 (CrossFormer++-S's too: its backbone is CrossFormer_S2).
RELEASED_GROUPING: dict[tuple[str, str], tuple[tuple[int, ...], tuple[int, ...]]] = {
    ("s", "fpn"): ((14, 14, 7, 7), (16, 8, 2, 1)),
    ("l", "fpn"): ((14, 14, 7, 7), (16, 8, 2, 1)),
}
DEFAULT_GROUPING = ((7, 7, 7, 7), (8, 4, 2, 1))


def released_backbone(backbone: CrossFormerConfig, head: str) -> CrossFormerConfig:
    """``backbone`` with the group sizes and intervals of the authors' ``head`` config for its variant."""
    groups, intervals = RELEASED_GROUPING.get((backbone.name, head), DEFAULT_GROUPING)
    n = backbone.num_stages
    return replace(backbone, group_sizes=groups[:n], intervals=intervals[:n])


@dataclass(frozen=True)
class SegConfig:
    """A whole segmenter: backbone, head kind and the head's widths.

    ``channels`` is the decode head's width (default by head: UPerNet 512, FPN 128); ``neck_channels`` the
    FPN neck's output width (Semantic FPN only); ``pool_scales`` the PPM's bins (UPerNet only).
    """

    backbone: CrossFormerConfig
    head: str
    num_classes: int = ADE20K_CLASSES
    channels: int = 0  # 0: the head's default
    neck_channels: int = FPN_NECK_CHANNELS
    pool_scales: tuple[int, ...] = PPM_SCALES
    name: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"unknown segmentation head {self.head!r}; choose one of {', '.join(HEADS)}")
        if self.num_classes < 1:
            raise ValueError(f"a segmenter needs at least one class, not {self.num_classes}")
        if not self.channels:
            object.__setattr__(self, "channels", HEAD_CHANNELS[self.head])
        object.__setattr__(self, "pool_scales", tuple(int(s) for s in self.pool_scales))
        if not self.pool_scales or min(self.pool_scales) < 1:
            raise ValueError(f"pool scales must be positive, not {self.pool_scales}")

    @property
    def label(self) -> str:
        """"UPerNet CrossFormer-S", "Semantic FPN CrossFormer++-S2"."""
        return f"{HEAD_LABELS[self.head]} {self.backbone.label}"

    @property
    def in_channels(self) -> tuple[int, ...]:
        return tuple(self.backbone.stage_dim(i) for i in range(self.backbone.num_stages))

    @property
    def feature_strides(self) -> tuple[int, ...]:
        return tuple(self.backbone.stage_stride(i) for i in range(self.backbone.num_stages))

    def to_json(self) -> str:
        """What an export records (``ModelInfo.extra["segmenter"]``), with the backbone's own JSON."""
        return json.dumps({"backbone": json.loads(self.backbone.to_json()), "head": self.head,
                           "num_classes": self.num_classes, "channels": self.channels,
                           "neck_channels": self.neck_channels, "pool_scales": list(self.pool_scales)})

    @classmethod
    def from_json(cls, text: str) -> SegConfig:
        a = json.loads(text)
        backbone = CrossFormerConfig.from_json(json.dumps(a.pop("backbone")))
        a["pool_scales"] = tuple(a.get("pool_scales", PPM_SCALES))
        return cls(backbone, **a)
