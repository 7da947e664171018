"""Find each CrossFormer block's pieces in an exported graph, by the exporter's scope names.

The TorchScript exporter names every node after the module that produced it
(``/layers.{i}/blocks.{j}/attn/pos/pos3/pos3.2/Gemm``), which anchors the passes far more reliably
than op patterns: the block's DPB MLP is everything under ``attn/pos/``, its qkv projection
``attn/qkv/``, its output projection ``attn/proj/``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from ...errors import CrossFormerError

_BLOCK = re.compile(r"^/layers\.(\d+)/blocks\.(\d+)/")


class PassError(CrossFormerError):
    """A pass found its pattern a different number of times than the model has blocks."""


@dataclass(frozen=True)
class Architecture:
    """What the passes need of the model config (stored as ``architecture`` in metadata_props)."""

    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    group_sizes: tuple[int, ...]
    intervals: tuple[int, ...]
    embed_dim: int
    pp: bool = False  # CrossFormer++'s layout rule

    @classmethod
    def from_props(cls, props: dict[str, str]) -> Architecture:
        if "architecture" not in props:
            raise PassError("the model carries no 'architecture' metadata: export it with crossformer-export")
        a = json.loads(props["architecture"])
        g = a.get("group_sizes", a.get("group_size"))  # exports before CrossFormer++ carry one int
        g = tuple(g) if isinstance(g, list) else (g,) * len(a["depths"])
        return cls(tuple(a["depths"]), tuple(a["num_heads"]), g, tuple(a["intervals"]), a["embed_dim"],
                   a.get("family", "crossformer") == "crossformer++")

    @property
    def num_blocks(self) -> int:
        return sum(self.depths)

    def stage_dim(self, stage: int) -> int:
        return self.embed_dim * 2**stage

    def max_group(self, stage: int, lda: bool, max_size: tuple[int, int]) -> tuple[int, int]:
        """Largest group shape (gh, gw) a block meets at inputs up to ``max_size`` (any multiple of 32).

        CrossFormer: SDA groups are at most G x G (smaller on small maps); LDA groups are ceil(map / I),
        largest at the largest map. CrossFormer++: groups are G x G, but a map with min(H, W) <= G is
        one H x W group, so where the smallest input (32) gives such a map, a group may be a whole map.
        """
        g = self.group_sizes[stage]
        h, w = (n // (4 * 2**stage) for n in max_size)
        if self.pp:
            if 32 // (4 * 2**stage) > g:  # no input makes this stage's map small
                return g, g
            return max(g, h), max(g, w)
        if not lda:
            return g, g
        i = self.intervals[stage]
        return max(g, -(-h // i)), max(g, -(-w // i))


@dataclass
class Block:
    stage: int
    index: int
    prefix: str  # "/layers.{i}/blocks.{j}/"

    @property
    def lda(self) -> bool:
        return self.index % 2 == 1


def block_of(node_name: str | None) -> Block | None:
    """The block a node belongs to, by its exporter scope name, or None outside every block."""
    m = _BLOCK.match(node_name or "")
    return None if m is None else Block(int(m.group(1)), int(m.group(2)), m.group(0))


def blocks(graph: gs.Graph) -> list[Block]:
    found = {(b.stage, b.index): b for n in graph.nodes if (b := block_of(n.name))}
    return [found[k] for k in sorted(found)]


def scope_nodes(graph: gs.Graph, prefix: str) -> list[gs.Node]:
    return [n for n in graph.nodes if (n.name or "").startswith(prefix)]


def scope_boundary(graph: gs.Graph, prefix: str) -> tuple[list[gs.Variable], list[gs.Variable]]:
    """Variables entering a scope (produced outside, consumed inside) and leaving it (the reverse)."""
    inside = scope_nodes(graph, prefix)
    ids = {id(n) for n in inside}
    entering, leaving = [], []
    for n in inside:
        for t in n.inputs:
            if isinstance(t, gs.Variable) and t not in entering and not any(id(p) in ids for p in t.inputs):
                entering.append(t)
        for t in n.outputs:
            outside = [c for c in t.outputs if id(c) not in ids]
            if (outside or t in graph.outputs) and t not in leaving:
                leaving.append(t)
    return entering, leaving


def expect(count: int, expected: int, what: str) -> None:
    if count != expected:
        raise PassError(f"{what}: matched {count} times, expected {expected} (one per block)")
