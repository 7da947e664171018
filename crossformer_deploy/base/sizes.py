"""The input-size rule, written once: height and width are positive multiples of the model's stride.

Every CrossFormer has a stride-4 embedding and three stride-2 merges, so its stride is 32 (a config with
another stage count has its own, ``CrossFormerConfig.stride``, recorded in an export's metadata). The model,
the runners, the command line, TensorRT profiles and the Triton serving code all check sizes here, so a bad
size reads the same wherever it is caught: ``image size 225x224 is not a multiple of 32 (height 225 -> 224
or 256)``.
"""
from __future__ import annotations

from crossformer_deploy.base.errors import InputSizeError, UsageError

STRIDE = 32


def valid_side(n: int, stride: int = STRIDE) -> bool:
    return n >= stride and n % stride == 0


def nearest_valid(n: int, stride: int = STRIDE) -> tuple[int, int]:
    """The multiples of ``stride`` around ``n`` (the lower one at least ``stride``)."""
    lo = max(stride, n // stride * stride)
    return lo, lo + stride


def nearest_hint(n: int, stride: int = STRIDE) -> str:
    return " or ".join(map(str, sorted(set(nearest_valid(n, stride)))))


def check_size(h: int, w: int, stride: int = STRIDE, what: str = "input size") -> None:
    """InputSizeError naming the nearest valid sizes unless both sides are valid."""
    bad = [(name, n) for name, n in (("height", h), ("width", w)) if not valid_side(n, stride)]
    if bad:
        hints = ", ".join(f"{name} {n} -> {nearest_hint(n, stride)}" for name, n in bad)
        raise InputSizeError(f"{what} {h}x{w} is not a multiple of {stride} ({hints})")


def check_side(n: int, stride: int = STRIDE, what: str = "size") -> None:
    """One side (a profile's height, a --size flag's width): InputSizeError naming the nearest valid ones."""
    if not valid_side(n, stride):
        lo, hi = nearest_valid(n, stride)
        raise InputSizeError(f"{what} {n} is not a multiple of {stride} (nearest: {lo} or {hi})")


def parse_size(text: str, stride: int = STRIDE) -> tuple[int, int]:
    """"224" -> (224, 224); "256x320" -> (256, 320); both sides valid."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        h, w = (int(parts[0]),) * 2 if len(parts) == 1 else (int(parts[0]), int(parts[1]))
        if len(parts) > 2 or h <= 0 or w <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"size {text!r} is not N or HxW (e.g. 224 or 256x320)") from None
    for name, n in (("height", h), ("width", w)):
        check_side(n, stride, f"size {text}: {name}")
    return h, w
