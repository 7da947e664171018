"""Images in, per-pixel class maps out, through any runner that holds a segmenter export."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from crossformer_deploy.base.errors import ImageError, UsageError
from crossformer_deploy.base.images import load_image
from crossformer_deploy.base.model_info import SEG_SCALE, SEGMENTER, ModelInfo
from crossformer_deploy.base.seg_preprocess import seg_preprocess
from crossformer_deploy.runtime.classify import fill_batch
from crossformer_deploy.runtime.runner import Runner


@dataclass(frozen=True)
class Segmentation:
    image: str
    class_map: np.ndarray  # [H0, W0] class ids at the image's own size
    input_size: tuple[int, int]  # what the model ran at (AlignResize's output)

    def class_areas(self, top: int = 5) -> list[tuple[int, float]]:
        """The ``top`` classes by share of the image: (class id, fraction of pixels)."""
        ids, counts = np.unique(self.class_map, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:top]
        return [(int(ids[i]), float(counts[i]) / self.class_map.size) for i in order]


def check_segmenter(info: ModelInfo, what: str = "this model") -> None:
    if info.mode != SEGMENTER:
        raise UsageError(f"{what} is a {info.mode}, not a segmenter: export one with crossformer-export --task seg")


def run_segmenter(runner: Runner, info: ModelInfo, x: np.ndarray,
                  output_size: tuple[int, int]) -> dict[str, np.ndarray]:
    """One batch [B, 3, H, W] (all of one original size) -> the graph's outputs, cut to B rows."""
    h0, w0 = output_size
    if h0 < 1 or w0 < 1:
        raise UsageError(f"output size {h0}x{w0}: both sides must be positive")
    out = runner.run({"image": fill_batch(x, info.batch), "output_size": np.asarray([h0, w0], np.int64)})
    return {k: v[: len(x)] for k, v in out.items()}


def seg_inputs(image: Image.Image, info: ModelInfo) -> tuple[np.ndarray, tuple[int, int]]:
    """One image -> the model input [3, H, W] and its original (H0, W0), by the rule the graph records
    (AlignResize at its scale, its stride, its mean / std)."""
    return seg_preprocess(image, tuple(info.scale or SEG_SCALE), info.stride, info.mean, info.std)


def segment(runner: Runner, info: ModelInfo, paths: Sequence[str],
            on_error: Callable[[ImageError], None] | None = None) -> Iterator[Segmentation]:
    """Each image AlignResized (its own input size) and segmented, one at a time, in input order. An image that
    cannot be loaded raises ImageError, or, with ``on_error``, is handed to it and skipped."""
    check_segmenter(info)
    for path in paths:
        try:
            x, original = seg_inputs(load_image(path), info)
        except ImageError as e:
            if on_error is None:
                raise
            on_error(e)
            continue
        out = run_segmenter(runner, info, x[None], original)
        yield Segmentation(path, out["class_map"][0], tuple(x.shape[1:]))
