"""Images in, top-k labels out, through any runner."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from crossformer_deploy.base.errors import ImageError, UsageError
from crossformer_deploy.base.images import load_image, preprocess
from crossformer_deploy.base.labels import class_names
from crossformer_deploy.base.model_info import DETECTOR, SEGMENTER, ModelInfo
from crossformer_deploy.runtime.runner import Runner


@dataclass(frozen=True)
class Prediction:
    image: str
    topk: list[tuple[int, str, float]]  # (class id, label, probability)

    def to_json(self) -> dict:
        return {"image": self.image, "topk": [{"class": c, "label": n, "prob": round(p, 6)} for c, n, p in self.topk]}


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, names: Sequence[str]) -> list[list[tuple[int, str, float]]]:
    probs = softmax(logits.astype(np.float64))
    idx = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return [[(int(i), names[i], float(p[i])) for i in row] for row, p in zip(idx, probs)]


def fill_batch(x: np.ndarray, batch: int | None) -> np.ndarray:
    """Pad a short last batch up to a fixed-batch model's size (the extra rows are dropped after)."""
    if batch is None or len(x) == batch:
        return x
    return np.concatenate([x, np.zeros((batch - len(x), *x.shape[1:]), x.dtype)])


def classify(runner: Runner, info: ModelInfo, paths: Sequence[str], size: tuple[int, int], topk: int = 5,
             batch_size: int = 8, on_batch: Callable[[int], None] | None = None,
             on_error: Callable[[ImageError], None] | None = None) -> list[Prediction]:
    """Top-k labels per image, in input order. An image that cannot be loaded raises ImageError, or, with
    ``on_error``, is handed to it and left out (the batches stay full with the images that load)."""
    if info.mode == SEGMENTER:
        raise UsageError("this model is a segmenter (per-pixel classes): run crossformer-infer with --task seg")
    if info.mode == DETECTOR:
        raise UsageError("this model is a detector (boxes and labels): run crossformer-infer with --task det")
    if info.mode != "classifier":
        raise UsageError("this model is a backbone (feature maps, no labels); crossformer-infer needs a classifier")
    names = class_names(info.num_classes)
    k = min(topk, info.num_classes)
    bs = info.batch or batch_size
    preds: list[Prediction] = []
    chunk: list[tuple[str, np.ndarray]] = []
    for i, path in enumerate(paths):
        try:
            chunk.append((path, preprocess(load_image(path), size, info.crop_ratio, info.mean, info.std)))
        except ImageError as e:
            if on_error is None:
                raise
            on_error(e)
        if chunk and (len(chunk) == bs or i == len(paths) - 1):
            x = np.stack([a for _, a in chunk])
            out = runner.run({"image": fill_batch(x, info.batch)})
            logits = next(iter(out.values()))[: len(chunk)]
            preds += [Prediction(p, t) for (p, _), t in zip(chunk, top_k(logits, k, names))]
            if on_batch:
                on_batch(len(chunk))
            chunk = []
    return preds
