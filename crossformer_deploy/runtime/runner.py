"""One small interface for every backend: load, input/output specs, run.

A runner is a context manager; ``load()`` is lazy and separate from construction so that building
a runner never costs anything until it is used (Polygraphy's runner design).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from crossformer_deploy.base.errors import InputSizeError, UsageError
from crossformer_deploy.base.sizes import check_size


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int | str | None, ...]  # ints are fixed, str/None are dynamic
    dtype: np.dtype


class Runner:
    """Base: subclasses implement ``_load``, ``_specs`` and ``_run``."""

    name = "runner"
    stride: int | None = None  # image sizes must be multiples of this (from the model's metadata)

    def __init__(self) -> None:
        self._loaded = False
        self.inputs: list[TensorSpec] = []
        self.outputs: list[TensorSpec] = []

    def load(self) -> Runner:
        if not self._loaded:
            self._load()
            self.inputs, self.outputs = self._specs()
            self._loaded = True
        return self

    def __enter__(self) -> Runner:
        return self.load()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check ``feeds`` against the input specs (one clear error, not a backend trace), then run."""
        self.load()
        for spec in self.inputs:
            if spec.name not in feeds:
                raise UsageError(f"{self.name}: missing input {spec.name!r}")
            check_shape(spec, feeds[spec.name].shape, self.name)
            check_stride(feeds[spec.name].shape, self.stride, self.name)
        return self._run({k: np.ascontiguousarray(v, dtype=_spec(self.inputs, k).dtype) for k, v in feeds.items()})

    # -- for subclasses
    def _load(self) -> None:
        raise NotImplementedError

    def _specs(self) -> tuple[list[TensorSpec], list[TensorSpec]]:
        raise NotImplementedError

    def _run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


def _spec(specs: list[TensorSpec], name: str) -> TensorSpec:
    return next(s for s in specs if s.name == name)


def check_shape(spec: TensorSpec, shape: tuple[int, ...], where: str) -> None:
    if len(shape) != len(spec.shape):
        raise InputSizeError(f"{where}: input {spec.name!r} needs rank {len(spec.shape)} "
                             f"{_fmt(spec.shape)}, got {list(shape)}")
    for i, (want, got) in enumerate(zip(spec.shape, shape)):
        if isinstance(want, int) and want != got:
            what = {0: "batch", 1: "channels", 2: "height", 3: "width"}.get(i, f"dim {i}")
            raise InputSizeError(f"{where}: this model takes {what} {want} only (input {_fmt(spec.shape)}), "
                                 f"got {got}; export a dynamic model or use --size/--batch-size to match")


def check_stride(shape: tuple[int, ...], stride: int | None, where: str) -> None:
    """A dynamic graph would run at 225x224 and silently answer for a cropped image: refuse instead."""
    if stride and len(shape) == 4:
        check_size(shape[2], shape[3], stride, f"{where}: image size")


def _fmt(shape: tuple) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"
