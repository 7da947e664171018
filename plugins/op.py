"""The contract of ``crossformer::GroupedAttention``, written once.

Every form of the op reads it: the PyTorch reference and the Triton kernel (validation), the ONNX function
(its domain, name and attribute list), the fusing pass (the node it writes), the TensorRT plugin (its id and
fields) and the engine builder (which graphs need the plugin). docs/fused-op.md describes the semantics.

    GroupedAttention(qkv [B, H, W, 3C], table [heads, TH, TW]) -> out [B, H, W, C]
    attributes: num_heads, mode ("sda" | "lda"), group_size, interval, scale, family (0 | 1)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossformer_deploy.model.config import Family

DOMAIN = "crossformer"
NAME = "GroupedAttention"
OP_ID = f"{DOMAIN}::{NAME}"
VERSION = "1"  # TensorRT's ONNX parser looks plugins up by (op type, version, namespace)
MODES = ("sda", "lda")
# The plugin fields in the creator's order. TensorRT's parser hands over exactly the node's attributes and
# tensorrt.plugin takes no defaults, so every node carries every one.
FIELDS = ("num_heads", "mode", "group_size", "interval", "scale", "family")
# What a node carries: the fields, and the namespace TensorRT's parser finds the plugin by.
NODE_ATTRS = (*FIELDS, "plugin_namespace")
NUM_INPUTS, NUM_OUTPUTS = 2, 1


class OpAttributeError(ValueError):
    """Attributes that break the op's schema."""


@dataclass(frozen=True)
class OpAttrs:
    """One node's attributes as plain values, validated."""

    num_heads: int
    mode: str
    group_size: int
    interval: int
    scale: float
    family: Family = Family.CROSSFORMER

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise OpAttributeError(f"{OP_ID}: mode must be 'sda' or 'lda', got {self.mode!r}")
        if not isinstance(self.family, Family):
            raise OpAttributeError(f"{OP_ID}: family must be a Family, got {self.family!r}")
        if min(self.num_heads, self.group_size, self.interval) < 1:
            raise OpAttributeError(f"{OP_ID}: num_heads, group_size and interval must be >= 1, got "
                                   f"{self.num_heads}, {self.group_size}, {self.interval}")

    @property
    def lda(self) -> bool:
        return self.mode == "lda"

    @classmethod
    def of(cls, num_heads: Any, mode: Any, group_size: Any, interval: Any, scale: Any, family: Any = 0) -> OpAttrs:
        """From whatever form the values arrive in: Python values, ONNX attributes, or TensorRT's plugin fields
        (1-element int32 / float32 arrays, a string with its C terminator)."""
        fam = as_family(family)
        return cls(_scalar(num_heads, int, "num_heads"), _text(mode), _scalar(group_size, int, "group_size"),
                   _scalar(interval, int, "interval"), _scalar(scale, float, "scale"), fam)

    @classmethod
    def from_node(cls, attrs: Mapping[str, Any]) -> OpAttrs:
        """From a node's attribute dict (``plugin_namespace`` ignored; a graph exported before CrossFormer++
        has no ``family``: the original family)."""
        missing = [f for f in FIELDS[:-1] if f not in attrs]
        if missing:
            raise OpAttributeError(f"{OP_ID}: node has no {', '.join(missing)} attribute")
        return cls.of(*(attrs[f] for f in FIELDS[:-1]), attrs.get("family", 0))

    def node_attrs(self) -> dict[str, Any]:
        """The attributes a graph node carries (the ONNX form: ints, a string, a float)."""
        return {"num_heads": self.num_heads, "mode": self.mode, "group_size": self.group_size,
                "interval": self.interval, "scale": float(self.scale), "family": self.family.attr,
                "plugin_namespace": DOMAIN}


def _scalar(value: Any, kind: type, name: str) -> Any:
    arr = np.asarray(value).reshape(-1)
    if arr.size != 1:
        raise OpAttributeError(f"{OP_ID}: attribute {name} must hold one value, got {arr.size}")
    return kind(arr[0].item())


def _text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        value = value.tobytes()
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    return str(value).rstrip("\x00")  # TensorRT's ONNX parser counts the C terminator in a string field


def as_family(value: Family | int) -> Family:
    """The entry points take the op's integer attribute (0 / 1) or a Family."""
    if isinstance(value, Family):
        return value
    try:
        return Family.from_attr(_scalar(value, int, "family"))
    except ValueError as e:
        raise OpAttributeError(f"{OP_ID}: {e}") from None


def is_op_node(domain: str, op_type: str) -> bool:
    return domain == DOMAIN and op_type == NAME


def names_plugin(domain: str, attrs: Mapping[str, Any]) -> bool:
    """Whether a node is ours the way TensorRT's parser finds plugins: by its domain, or a
    ``plugin_namespace`` attribute naming ours."""
    ns = attrs.get("plugin_namespace")
    if isinstance(ns, bytes):
        ns = ns.decode(errors="replace")
    return domain == DOMAIN or ns == DOMAIN
