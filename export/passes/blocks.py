"""Find each CrossFormer block's pieces in an exported graph, by the exporter's scope names.

The TorchScript exporter names every node after the module that produced it
(``/layers.{i}/blocks.{j}/attn/pos/pos3/pos3.2/Gemm``), which anchors the passes far more reliably
than op patterns: the block's DPB MLP is everything under ``attn/pos/``, its qkv projection
``attn/qkv/``, its output projection ``attn/proj/``.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import onnx_graphsurgeon as gs

from crossformer_deploy.base.errors import CrossFormerError
from crossformer_deploy.model.config import CrossFormerConfig
from crossformer_deploy.model.grouping import group_layout

_BLOCK = re.compile(r"^/layers\.(\d+)/blocks\.(\d+)/")


class PassError(CrossFormerError):
    """A pass found its pattern a different number of times than the model has blocks."""


def architecture(props: dict[str, str]) -> CrossFormerConfig:
    """The model config an export recorded (``architecture`` in its metadata_props)."""
    if "architecture" not in props:
        raise PassError("the model carries no 'architecture' metadata: export it with crossformer-export")
    return CrossFormerConfig.from_json(props["architecture"])


@functools.lru_cache(maxsize=64)
def max_group(cfg: CrossFormerConfig, stage: int, lda: bool, max_size: tuple[int, int]) -> tuple[int, int]:
    """Largest group shape (gh, gw) a block of ``stage`` meets at any input up to ``max_size``: the model's own
    ``group_layout`` evaluated at every valid input size, so the answer is exact by construction (CrossFormer's
    LDA groups grow with the map, CrossFormer++ makes a whole small map one group)."""
    step, st = cfg.stride, cfg.stage_stride(stage)
    gh = gw = 1
    for h in range(step, max_size[0] + 1, step):
        for w in range(step, max_size[1] + 1, step):
            lay = group_layout(h // st, w // st, cfg.group_sizes[stage], cfg.intervals[stage], lda, cfg.family)
            gh, gw = max(gh, lay.gh), max(gw, lay.gw)
    return gh, gw


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
