"""CrossFormer and CrossFormer++ variant configurations.

CrossFormer: Wang et al., ICLR 2022, Table 1. CrossFormer++: Wang et al., TPAMI 2023, as the authors'
main branch builds it (configs/crossformer_pp/*.yaml; the S2 detection backbone of
detection/crossformer_factory.py).
"""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, replace


class Family(str, enum.Enum):
    """Which paper's rules a model follows: two rules of the grouping (model/grouping.py) and one layer.

      CROSSFORMER     LDA groups are ceil(map / I) tokens a side (one region); a map with min(H, W) <= G runs
                      SDA with min(H, W) x min(H, W) groups.
      CROSSFORMER_PP  groups are G x G in SDA and LDA (LDA pads to a multiple of G * I); a map with
                      min(H, W) <= G is one H x W group; an amplitude cooling layer (depthwise 3x3 conv +
                      LayerNorm, keys ``ex_conv`` / ``ex_ln``) follows block j of a stage when (j + 1) % 3 == 0
                      and j < depth - 1.

    The value is what configs and export metadata say; ``attr`` is the fused op's integer attribute.
    """

    CROSSFORMER = "crossformer"  # Wang et al., ICLR 2022
    CROSSFORMER_PP = "crossformer++"  # Wang et al., TPAMI 2023

    def __str__(self) -> str:
        return self.value

    @property
    def attr(self) -> int:
        return 0 if self is Family.CROSSFORMER else 1

    @classmethod
    def from_attr(cls, value: int) -> Family:
        if value not in (0, 1):
            raise ValueError(f"family must be 0 (CrossFormer) or 1 (CrossFormer++), got {value}")
        return (cls.CROSSFORMER, cls.CROSSFORMER_PP)[value]

    @property
    def label(self) -> str:
        return "CrossFormer++" if self is Family.CROSSFORMER_PP else "CrossFormer"


@dataclass(frozen=True)
class CrossFormerConfig:
    """Architecture hyper-parameters; the published variants are in ``VARIANTS``.

    ``family`` (a ``Family``, or its value) decides the grouping rules and the cooling layers.
    ``group_sizes`` and ``mlp_ratios`` are per stage (an int or a float is repeated).
    """

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    group_sizes: tuple[int, ...] | int = 7
    intervals: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (4, 8, 16, 32)
    merge_sizes: tuple[tuple[int, ...], ...] = ((2, 4), (2, 4), (2, 4))
    mlp_ratios: tuple[float, ...] | float = 4.0
    in_chans: int = 3
    family: Family = Family.CROSSFORMER
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        n = len(self.depths)
        for f, kind in (("group_sizes", int), ("mlp_ratios", float)):
            v = getattr(self, f)
            object.__setattr__(self, f, tuple(kind(x) for x in v) if isinstance(v, (tuple, list)) else (kind(v),) * n)
        try:
            object.__setattr__(self, "family", Family(self.family))
        except ValueError:
            raise ValueError(f"{self.name}: family must be one of {', '.join(f.value for f in Family)}, "
                             f"not {self.family!r}") from None
        if (len(self.num_heads) != n or len(self.intervals) != n or len(self.merge_sizes) != n - 1
                or len(self.group_sizes) != n or len(self.mlp_ratios) != n):
            raise ValueError(f"{self.name}: depths, num_heads, group_sizes, intervals, mlp_ratios and merge_sizes "
                             "disagree on the stage count")
        for i, h in enumerate(self.num_heads):
            if self.stage_dim(i) % h:
                raise ValueError(f"{self.name}: stage {i} width {self.stage_dim(i)} is not divisible by {h} heads")

    def has_acl(self, stage: int, block: int) -> bool:
        """Whether block ``block`` of ``stage`` ends with an amplitude cooling layer."""
        return self.family is Family.CROSSFORMER_PP and (block + 1) % 3 == 0 and block < self.depths[stage] - 1

    def same_tensors(self, other: CrossFormerConfig) -> bool:
        """Whether the two build the same parameter tensors. Group sizes and intervals leave no trace in
        a checkpoint (pp-s and pp-s2 share their weights), the family does (``ex_conv``)."""
        return (replace(self, group_sizes=other.group_sizes, intervals=other.intervals) == other)

    @property
    def label(self) -> str:
        """"CrossFormer-S", "CrossFormer++-S", "CrossFormer++-S2", "CrossFormer++ (pp-tiny)"."""
        if self.name in VARIANTS:
            return f"{self.family.label}-{self.name.removeprefix('pp-').upper()}"
        return f"{self.family.label} ({self.name})"

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2**i

    @property
    def num_features(self) -> int:
        return self.stage_dim(self.num_stages - 1)

    def stage_stride(self, i: int) -> int:
        """Pixels per token of stage ``i``'s map (4, 8, 16, 32)."""
        return 4 * 2**i

    @property
    def stride(self) -> int:
        """Input sizes must be a multiple of this (stride-4 embedding, then one stride-2 merge per stage)."""
        return self.stage_stride(self.num_stages - 1)

    def to_json(self) -> str:
        """The architecture as an export records it (``architecture`` in the ONNX metadata)."""
        return json.dumps({k: v.value if isinstance(v, Family) else v for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> CrossFormerConfig:
        """What ``to_json`` wrote; exports made before it recorded fewer fields (one ``group_size`` int, no
        patch / merge sizes or MLP ratios), which take their defaults."""
        a = json.loads(text)
        if "group_size" in a and "group_sizes" not in a:
            a["group_sizes"] = a.pop("group_size")
        known = {f: a[f] for f in cls.__dataclass_fields__ if f in a}
        for f in ("depths", "num_heads", "group_sizes", "intervals", "patch_sizes", "mlp_ratios"):
            if isinstance(known.get(f), list):
                known[f] = tuple(known[f])
        if "merge_sizes" in known:
            known["merge_sizes"] = tuple(tuple(m) for m in known["merge_sizes"])
        return cls(**known)


# The classifiers' grouping (configs/crossformer_pp/*.yaml); also what a checkpoint is read with (it holds no G, I).
PP_GROUPING = dict(group_sizes=(4, 4, 14, 7), intervals=(4, 2, 1, 1), family=Family.CROSSFORMER_PP)
# The authors' detection/segmentation configs of CrossFormer++ build CrossFormer_S2: pp-s's weights,
# G = 7 and I = (8, 4, 2, 1) as in the original (the backbone they fine-tune).
_PP_S2 = dict(group_sizes=7, intervals=(8, 4, 2, 1), family=Family.CROSSFORMER_PP)

VARIANTS: dict[str, CrossFormerConfig] = {
    "t": CrossFormerConfig(64, (1, 1, 8, 6), (2, 4, 8, 16), name="t"),
    "s": CrossFormerConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), name="s"),
    "b": CrossFormerConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), name="b"),
    "l": CrossFormerConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), name="l"),
    "pp-s": CrossFormerConfig(64, (2, 2, 18, 2), (2, 4, 8, 16), **PP_GROUPING, name="pp-s"),
    "pp-b": CrossFormerConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), **PP_GROUPING, name="pp-b"),
    "pp-l": CrossFormerConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), **PP_GROUPING, name="pp-l"),
    "pp-h": CrossFormerConfig(128, (6, 6, 18, 2), (4, 8, 16, 32), **PP_GROUPING, name="pp-h"),
    "pp-s2": CrossFormerConfig(64, (2, 2, 18, 2), (2, 4, 8, 16), **_PP_S2, name="pp-s2"),
}

# A tiny configuration for tests: every stage has an SDA and an LDA block, head dim 32 as in the
# real variants, and the DPB hidden width (dim // 16) is at least 2 so its LayerNorms are not degenerate.
TINY = CrossFormerConfig(32, (2, 2, 2, 2), (1, 2, 4, 8), name="tiny")
# Its CrossFormer++ twin: depth 4 puts a cooling layer on block 2 of stages 1-3; at 224 stage-1 and
# stage-2 LDA pad (56 -> 64, 28 -> 32) and stages 3-4 meet the small-map rule.
TINY_PP = CrossFormerConfig(32, (4, 4, 4, 2), (1, 2, 4, 8), **PP_GROUPING, name="pp-tiny")
TINIES = {"tiny": TINY, "pp-tiny": TINY_PP}
# What --variant accepts on the command line.
VARIANT_CHOICES = (*VARIANTS, *TINIES)


def get_config(variant: str | CrossFormerConfig) -> CrossFormerConfig:
    if isinstance(variant, CrossFormerConfig):
        return variant
    key = variant.lower().replace("crossformer++", "pp").removeprefix("crossformer-").removeprefix("crossformer_")
    key = key.replace("_", "-")
    if key in TINIES:
        return TINIES[key]
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[key]
