"""TensorRT optimisation profiles for the image input: (batch, height, width) at min / opt / max.

A profile is written ``min:1x224x224,opt:8x224x224,max:32x384x384`` (``Bx3xHxW`` is accepted too, and a
bare ``8x224x224`` means min = opt = max). Several profiles are separated by ``;`` or given as several
``--shapes`` flags; an engine gets one TensorRT optimisation profile per ``Profile``.

Everything here is plain Python: profiles are checked (multiples of 32, min <= opt <= max, the fixed
dimensions of a static ONNX) before TensorRT is ever imported, so a bad flag fails in milliseconds
rather than after a long engine build.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from crossformer_deploy.base.errors import InputSizeError, UsageError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.base.sizes import STRIDE, check_side

CHANNELS = 3
KEYS = ("min", "opt", "max")
DIM_NAMES = ("batch", "height", "width")

Shape3 = tuple[int, int, int]  # (batch, height, width)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of the ``image`` input, as (batch, height, width) triples."""

    min: Shape3
    opt: Shape3
    max: Shape3

    def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """The NCHW (min, opt, max) shapes TensorRT's profile takes."""
        return tuple(_nchw(s) for s in (self.min, self.opt, self.max))  # type: ignore[return-value]

    def contains(self, shape: Sequence[int]) -> bool:
        """Whether an NCHW input shape lies inside this profile (every dim within [min, max])."""
        if len(shape) != 4 or shape[1] != CHANNELS:
            return False
        b, _, h, w = shape
        return all(lo <= v <= hi for lo, v, hi in zip(self.min, (b, h, w), self.max))

    def check(self, shape: Sequence[int]) -> None:
        """InputSizeError unless ``shape`` (NCHW) fits this profile, naming the bound it crosses."""
        if not self.contains(shape):
            raise InputSizeError(outside_message(shape, [self]))

    def to_text(self) -> str:
        return ",".join(f"{k}:{_fmt3(s)}" for k, s in zip(KEYS, (self.min, self.opt, self.max)))

    def to_json(self) -> list[list[int]]:
        return [list(self.min), list(self.opt), list(self.max)]

    @classmethod
    def from_json(cls, data: Sequence[Sequence[int]]) -> Profile:
        lo, opt, hi = (tuple(int(v) for v in s) for s in data)
        if not (len(lo) == len(opt) == len(hi) == 3):
            raise ValueError("a profile is three (batch, height, width) triples")
        return cls(lo, opt, hi)  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.to_text()


def parse_profiles(texts: str | Iterable[str]) -> list[Profile]:
    """Parse one or more profiles (``;``-separated, or one string per repeated flag) and check each
    one on its own (positive, multiples of 32, min <= opt <= max)."""
    if isinstance(texts, str):
        texts = [texts]
    parts = [p.strip() for t in texts for p in t.split(";") if p.strip()]
    if not parts:
        raise UsageError("empty --shapes: give e.g. min:1x224x224,opt:8x224x224,max:32x384x384")
    profiles = [parse_profile(p) for p in parts]
    for p in profiles:
        validate_profile(p)
    return profiles


def parse_profile(text: str) -> Profile:
    """``min:1x224x224,opt:8x224x224,max:32x384x384`` or a bare ``8x224x224`` (a fixed shape)."""
    items = [i.strip() for i in text.split(",") if i.strip()]
    if len(items) == 1 and ":" not in items[0]:
        s = _parse_shape(items[0], text)
        return Profile(s, s, s)
    found: dict[str, Shape3] = {}
    for item in items:
        key, sep, shape = item.partition(":")
        key = key.strip().lower()
        if not sep or key not in KEYS:
            raise UsageError(f"shapes {text!r}: expected min:BxHxW,opt:BxHxW,max:BxHxW, got {item!r}")
        if key in found:
            raise UsageError(f"shapes {text!r}: {key} is given twice")
        found[key] = _parse_shape(shape, text)
    missing = [k for k in KEYS if k not in found]
    if missing:
        raise UsageError(f"shapes {text!r}: missing {', '.join(missing)} (a profile needs min, opt and max)")
    return Profile(found["min"], found["opt"], found["max"])


def _parse_shape(text: str, whole: str) -> Shape3:
    parts = text.strip().lower().replace("*", "x").split("x")
    try:
        dims = [int(p) for p in parts]
    except ValueError:
        raise UsageError(f"shapes {whole!r}: {text.strip()!r} is not BxHxW (e.g. 8x224x224)") from None
    if len(dims) == 4:  # Bx3xHxW, as trtexec writes shapes
        if dims[1] != CHANNELS:
            raise InputSizeError(f"shapes {whole!r}: {text.strip()} has {dims[1]} channels; the model takes "
                                 f"{CHANNELS} (RGB)")
        dims = [dims[0], dims[2], dims[3]]
    if len(dims) != 3:
        raise UsageError(f"shapes {whole!r}: {text.strip()!r} is not BxHxW (e.g. 8x224x224)")
    return dims[0], dims[1], dims[2]


def validate_profile(p: Profile, stride: int = STRIDE) -> None:
    """Positive dims, H and W multiples of ``stride`` (naming the nearest), min <= opt <= max."""
    for key, shape in zip(KEYS, (p.min, p.opt, p.max)):
        for name, v in zip(DIM_NAMES, shape):
            if v < 1:
                raise InputSizeError(f"profile {p}: {key} {name} {v} must be at least 1")
        for name, v in zip(DIM_NAMES[1:], shape[1:]):
            check_side(v, stride, f"profile {p}: {key} {name}")
    for i, name in enumerate(DIM_NAMES):
        lo, opt, hi = p.min[i], p.opt[i], p.max[i]
        if not lo <= opt <= hi:
            raise UsageError(f"profile {p}: {name} must satisfy min <= opt <= max, got {lo}, {opt}, {hi}")


def validate_for_model(profiles: Sequence[Profile], info: ModelInfo, fixed: Sequence[int | None] | None = None) -> None:
    """Refuse profiles a static ONNX cannot take.

    ``info`` is the model's metadata (``dynamic`` H/W, fixed ``batch``); ``fixed`` optionally gives the
    graph input's own (B, C, H, W) dims (int = fixed, None = dynamic), which win where they are fixed.
    """
    batch = info.batch
    size: tuple[int | None, int | None] = tuple(info.input_size) if not info.dynamic else (None, None)  # type: ignore
    if fixed is not None and len(fixed) == 4:
        if fixed[1] not in (None, CHANNELS):
            raise UsageError(f"the ONNX input has {fixed[1]} channels; profiles are for {CHANNELS}-channel images")
        batch = fixed[0] if fixed[0] is not None else batch
        size = (fixed[2] if fixed[2] is not None else size[0], fixed[3] if fixed[3] is not None else size[1])
    for p in profiles:
        for key, shape in zip(KEYS, (p.min, p.opt, p.max)):
            if batch is not None and shape[0] != batch:
                raise InputSizeError(f"profile {p}: {key} batch {shape[0]} does not fit this ONNX, whose batch is "
                                     f"fixed at {batch}; use batch {batch} or export with a dynamic batch")
            for name, want, got in zip(DIM_NAMES[1:], size, shape[1:]):
                if want is not None and got != want:
                    raise InputSizeError(f"profile {p}: {key} {name} {got} does not fit this static ONNX "
                                         f"({_size(size)} only); use {_size(size)} or export a dynamic model")


def default_profiles(info: ModelInfo, fixed: Sequence[int | None] | None = None) -> list[Profile]:
    """What an engine gets without --shapes: the model's own size, batch 1..8 (opt 1), or its fixed dims.

    Batch 1 is the latency case TensorRT tunes for; up to 8 covers crossformer-infer's default batch.
    Other image sizes need --shapes: an engine only takes sizes inside its profiles.
    """
    h, w = tuple(info.input_size)
    batch = info.batch
    if fixed is not None and len(fixed) == 4:
        batch = fixed[0] if fixed[0] is not None else batch
        h = fixed[2] if fixed[2] is not None else h
        w = fixed[3] if fixed[3] is not None else w
    if batch is not None:
        s = (batch, h, w)
        return [Profile(s, s, s)]
    return [Profile((1, h, w), (1, h, w), (8, h, w))]


def max_size(profiles: Sequence[Profile]) -> tuple[int, int]:
    """The largest (H, W) any profile allows: the size the DPB-folding pass precomputes tables for."""
    if not profiles:
        raise UsageError("no profiles given")
    return max(p.max[1] for p in profiles), max(p.max[2] for p in profiles)


def find_profile(profiles: Sequence[Profile], shape: Sequence[int]) -> int:
    """Index of the first profile that takes ``shape`` (NCHW); InputSizeError naming the bounds otherwise."""
    for i, p in enumerate(profiles):
        if p.contains(shape):
            return i
    raise InputSizeError(outside_message(shape, profiles))


def outside_message(shape: Sequence[int], profiles: Sequence[Profile]) -> str:
    """"shape 1x3x416x416 is outside the engine's profile max 32x3x384x384" (which bound, and which way)."""
    got = "x".join(str(int(v)) for v in shape)
    if len(shape) != 4 or shape[1] != CHANNELS:
        return f"shape {got} is not Bx{CHANNELS}xHxW: the engine takes {CHANNELS}-channel NCHW images"
    if len(profiles) == 1:
        p = profiles[0]
        b, _, h, w = shape
        over = any(v > hi for v, hi in zip((b, h, w), p.max))
        bound, name = (p.max, "max") if over else (p.min, "min")
        return (f"shape {got} is outside the engine's profile {name} {_fmt3(bound, nchw=True)} "
                f"(min {_fmt3(p.min, nchw=True)}, max {_fmt3(p.max, nchw=True)}); "
                f"rebuild with crossformer-build-engine --shapes to cover it")
    ranges = "; ".join(f"min {_fmt3(p.min, nchw=True)} max {_fmt3(p.max, nchw=True)}" for p in profiles)
    return (f"shape {got} is outside every profile of the engine ({ranges}); "
            f"rebuild with crossformer-build-engine --shapes to cover it")


def _nchw(s: Shape3) -> tuple[int, int, int, int]:
    return s[0], CHANNELS, s[1], s[2]


def _fmt3(s: Shape3, nchw: bool = False) -> str:
    return "x".join(str(v) for v in (_nchw(s) if nchw else s))


def _size(size: tuple[int | None, int | None]) -> str:
    return "x".join("?" if v is None else str(v) for v in size)
