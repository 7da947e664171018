"""CrossFormer variant configurations (Wang et al., ICLR 2022, Table 1)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CrossFormerConfig:
    """Architecture hyper-parameters; the four published variants are in ``VARIANTS``."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    group_size: int = 7
    intervals: tuple[int, ...] = (8, 4, 2, 1)
    patch_sizes: tuple[int, ...] = (4, 8, 16, 32)
    merge_sizes: tuple[tuple[int, ...], ...] = ((2, 4), (2, 4), (2, 4))
    mlp_ratio: float = 4.0
    in_chans: int = 3
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        n = len(self.depths)
        if len(self.num_heads) != n or len(self.intervals) != n or len(self.merge_sizes) != n - 1:
            raise ValueError(f"{self.name}: depths, num_heads, intervals and merge_sizes disagree on the stage count")
        for i, h in enumerate(self.num_heads):
            if self.stage_dim(i) % h:
                raise ValueError(f"{self.name}: stage {i} width {self.stage_dim(i)} is not divisible by {h} heads")

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    def stage_dim(self, i: int) -> int:
        return self.embed_dim * 2**i

    @property
    def num_features(self) -> int:
        return self.stage_dim(self.num_stages - 1)

    @property
    def stride(self) -> int:
        """Input sizes must be a multiple of this (stride-4 embedding, then one stride-2 merge per stage)."""
        return 4 * 2 ** (self.num_stages - 1)


VARIANTS: dict[str, CrossFormerConfig] = {
    "t": CrossFormerConfig(64, (1, 1, 8, 6), (2, 4, 8, 16), name="t"),
    "s": CrossFormerConfig(96, (2, 2, 6, 2), (3, 6, 12, 24), name="s"),
    "b": CrossFormerConfig(96, (2, 2, 18, 2), (3, 6, 12, 24), name="b"),
    "l": CrossFormerConfig(128, (2, 2, 18, 2), (4, 8, 16, 32), name="l"),
}

# A tiny configuration for tests: every stage has an SDA and an LDA block, head dim 32 as in the
# real variants, and the DPB hidden width (dim // 16) is at least 2 so its LayerNorms are not degenerate.
TINY = CrossFormerConfig(32, (2, 2, 2, 2), (1, 2, 4, 8), name="tiny")


def get_config(variant: str | CrossFormerConfig) -> CrossFormerConfig:
    if isinstance(variant, CrossFormerConfig):
        return variant
    key = variant.lower().removeprefix("crossformer-").removeprefix("crossformer_")
    if key == "tiny":
        return TINY
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[key]
