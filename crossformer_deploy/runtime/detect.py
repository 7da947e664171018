"""Images in, detections out, through any runner that holds a detector export (``crossformer-export --task det``).

Each image goes through mmdet's test pipeline (base/det_preprocess.py: keep-ratio resize to the graph's recorded
scale, mean/std, zero padding); images of one batch are padded to the largest, each with its own ``image_size``
row, and the graph answers fixed-size rows: ``dets`` [B, 100, 5] in original-image pixels (unused rows 0),
``labels`` [B, 100] (-1 unused) and, for Mask R-CNN, ``masks`` [B, 100, 28, 28] probabilities. Here the unused rows
are dropped, the rest kept above a score threshold, and masks pasted into the image (``paste_masks``).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from crossformer_deploy.base.coco import det_class_names
from crossformer_deploy.base.det_preprocess import det_batch, det_preprocess
from crossformer_deploy.base.errors import ImageError, UsageError
from crossformer_deploy.base.images import load_image
from crossformer_deploy.base.model_info import DET_SCALE, DETECTOR, ModelInfo
from crossformer_deploy.runtime.classify import fill_batch
from crossformer_deploy.runtime.runner import Runner

MASK_THRESHOLD = 0.5  # mmdet's mask_thr_binary (the authors' Mask R-CNN test_cfg)
DEFAULT_SCORE_THR = 0.3  # what is drawn and listed by default (mmdet's DetLocalVisualizer pred_score_thr)


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original-image pixels
    score: float
    label: int
    name: str
    mask: np.ndarray | None = None  # bool [H0, W0] (Mask R-CNN), pasted into the image

    def to_json(self) -> dict:
        out = {"box": [round(float(v), 2) for v in self.box], "score": round(float(self.score), 5),
               "label": int(self.label), "name": self.name}
        if self.mask is not None:
            out["mask_area"] = int(self.mask.sum())
        return out


@dataclass(frozen=True)
class DetectionResult:
    image: str
    size: tuple[int, int]  # the original (H0, W0)
    input_size: tuple[int, int]  # the resized image's (h, w) inside the padded input
    detections: list[Detection]

    def to_json(self) -> dict:
        return {"image": self.image, "size": list(self.size), "input_size": list(self.input_size),
                "detections": [d.to_json() for d in self.detections]}


def check_detector(info: ModelInfo, what: str = "this model") -> None:
    if info.mode != DETECTOR:
        raise UsageError(f"{what} is a {info.mode}, not a detector: export one with crossformer-export --task det")


def det_inputs(image: Image.Image, info: ModelInfo) -> tuple[np.ndarray, np.ndarray]:
    """One image -> ([3, h, w] normalised, unpadded; its image_size row) by the rule the graph records."""
    return det_preprocess(image, tuple(info.scale or DET_SCALE), info.mean, info.std)


def run_detector(runner: Runner, info: ModelInfo, image: np.ndarray, image_size: np.ndarray) -> dict[str, np.ndarray]:
    """One batch (image [B, 3, H, W], image_size [B, 4]) -> the graph's outputs, cut to B rows (a fixed-batch graph
    gets its batch filled with copies of the last row, so that no row divides by a zero size)."""
    b = len(image)
    if info.batch is not None and b < info.batch:
        image = fill_batch(image, info.batch)
        image_size = np.concatenate([image_size, np.repeat(image_size[-1:], info.batch - b, 0)])
    out = runner.run({"image": image, "image_size": np.asarray(image_size, np.int64)})
    return {k: v[:b] for k, v in out.items()}


def detections(out: dict[str, np.ndarray], i: int, size: tuple[int, int], names: Sequence[str],
               score_thr: float = DEFAULT_SCORE_THR) -> list[Detection]:
    """Row ``i`` of a batch's outputs: the used rows (label >= 0, score > 0) with score >= ``score_thr``, by
    descending score; masks pasted at the original ``size``."""
    dets, labels = out["dets"][i], out["labels"][i]
    keep = np.flatnonzero((labels >= 0) & (dets[:, 4] > 0) & (dets[:, 4] >= score_thr))
    keep = keep[np.argsort(-dets[keep, 4], kind="stable")]
    masks = paste_masks(out["masks"][i][keep], dets[keep, :4], size) if "masks" in out else None
    return [Detection(tuple(float(v) for v in dets[k, :4]), float(dets[k, 4]), int(labels[k]),
                      names[labels[k]] if labels[k] < len(names) else f"class {labels[k]}",
                      None if masks is None else masks[j])
            for j, k in enumerate(keep)]


def detect(runner: Runner, info: ModelInfo, paths: Sequence[str], score_thr: float = DEFAULT_SCORE_THR,
           batch_size: int = 1, on_error: Callable[[ImageError], None] | None = None) -> Iterator[DetectionResult]:
    """Each image preprocessed, ``batch_size`` at a time (padded to the batch's largest), detected, in input
    order. An image that cannot be loaded raises ImageError, or, with ``on_error``, is handed to it and skipped."""
    check_detector(info)
    names = det_class_names(info.num_classes)
    step = info.batch or batch_size
    chunk: list[tuple[str, np.ndarray, np.ndarray]] = []
    for n, path in enumerate(paths):
        try:
            im = load_image(path)
            try:
                x, row = det_inputs(im, info)
            except ImageError as e:  # (the preprocessing does not know the file's name)
                raise ImageError(f"{path}: {e}") from None
            chunk.append((path, x, row))
        except ImageError as e:
            if on_error is None:
                raise
            on_error(e)
        if chunk and (len(chunk) == step or n == len(paths) - 1):
            image, image_size = det_batch([(x, row) for _, x, row in chunk], info.stride)
            out = run_detector(runner, info, image, image_size)
            for i, (p, _, row) in enumerate(chunk):
                size = (int(row[2]), int(row[3]))
                yield DetectionResult(p, size, (int(row[0]), int(row[1])), detections(out, i, size, names, score_thr))
            chunk = []


def paste_masks(masks: np.ndarray, boxes: np.ndarray, size: tuple[int, int],
                threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """Mask R-CNN's [N, M, M] mask probabilities -> bool [N, H0, W0], each pasted into its box.

    HOOK (Mask R-CNN): mmdet's rule (``FCNMaskHead._predict_by_feat_single`` / ``_do_paste_mask``) with numpy
    only, because this runs where torch is not installed (Triton's serving env): pixel centres (x + 0.5, y + 0.5)
    mapped into the box, ``grid_sample(bilinear, align_corners=False, zero padding)`` of the M x M mask there,
    then >= ``threshold``. The reference implementation is model/det/paste_masks.py (torch); the two must agree
    (mask IoU >= 0.98, issue [L]) and a test comparing them belongs with it once it lands.
    """
    n = len(masks)
    h, w = size
    out = np.zeros((n, h, w), bool)
    for i in range(n):
        x0, y0, x1, y1 = (float(v) for v in boxes[i])
        if x1 <= x0 or y1 <= y0:
            continue
        # mmdet pastes on the box's integer extent, one pixel wider on each side (skip_empty)
        xa, ya = max(int(np.floor(x0)) - 1, 0), max(int(np.floor(y0)) - 1, 0)
        xb, yb = min(int(np.ceil(x1)) + 1, w), min(int(np.ceil(y1)) + 1, h)
        if xb <= xa or yb <= ya:
            continue
        m = masks[i].astype(np.float32)
        wy = _bilinear_weights(np.arange(ya, yb, dtype=np.float32) + 0.5, y0, y1, m.shape[0])
        wx = _bilinear_weights(np.arange(xa, xb, dtype=np.float32) + 0.5, x0, x1, m.shape[1])
        out[i, ya:yb, xa:xb] = (wy @ m @ wx.T) >= threshold
    return out


def _bilinear_weights(centres: np.ndarray, lo: float, hi: float, m: int) -> np.ndarray:
    """[len(centres), m]: grid_sample's bilinear weights (align_corners=False, zeros outside) of the pixel
    centres, normalised to the box [lo, hi] as mmdet does ((c - lo) / (hi - lo) * 2 - 1)."""
    lo32, hi32 = np.float32(lo), np.float32(hi)  # as torch computes it, on float32 boxes
    g = (centres - lo32) / (hi32 - lo32) * 2 - 1
    pos = ((g + 1) * m - 1) / 2  # grid_sample's unnormalisation, align_corners=False
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(np.float32)
    wts = np.zeros((len(centres), m), np.float32)
    rows = np.arange(len(centres))
    for idx, wt in ((i0, 1 - f), (i0 + 1, f)):
        ok = (idx >= 0) & (idx < m)
        wts[rows[ok], idx[ok]] += wt[ok]
    return wts
