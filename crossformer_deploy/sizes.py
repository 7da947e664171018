"""Valid input sizes (torch-free, so runtimes and the CLI can check sizes without importing the model)."""
from __future__ import annotations


def nearest_valid(n: int, stride: int) -> tuple[int, int]:
    """The multiples of ``stride`` around ``n`` (the lower one at least ``stride``)."""
    lo = max(stride, n // stride * stride)
    return lo, lo + stride


def nearest_hint(n: int, stride: int) -> str:
    return " or ".join(map(str, sorted(set(nearest_valid(n, stride)))))
