"""The authors' segmentation test pipeline, with numpy only: AlignResize, then ImageNet mean/std, RGB.

AlignResize (their ``segmentation/align_resize.py``, keep_ratio, the test branch) resizes twice: first
``mmcv.imrescale`` to fit (long, short) = (2048, 512) keeping the aspect ratio (scale
min(2048 / long side, 512 / short side), sides int(x * scale + 0.5)), then a second resize that stretches each
side to the next multiple of 32 (no padding). Both are OpenCV's INTER_LINEAR on uint8 images, reproduced here
as its vectorised x86 path computes it: half-pixel centres, edge clamping, 11-bit fixed-point weights, its
rounding, a uint8 result after each resize. Against mmcv + OpenCV 4.11 on AVX-512: equal on 99.6-100 % of
the pixels, the rest one level apart (benchmarks/seg_vs_mmseg.py --preprocess).
Example: a 375x500 image -> 512x683 -> 512x704; the model's logits go back to 375x500 (``output_size``).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from crossformer_deploy.base.model_info import IMAGENET_MEAN, IMAGENET_STD, SEG_SCALE
from crossformer_deploy.base.sizes import STRIDE

COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
COEF_SCALE = 1 << COEF_BITS


def rescale_size(h: int, w: int, scale: tuple[int, int] = SEG_SCALE) -> tuple[int, int]:
    """(height, width) after ``mmcv.imrescale`` to fit ``scale`` = (long, short) with the aspect ratio kept."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


def align_resize_size(h: int, w: int, scale: tuple[int, int] = SEG_SCALE, divisor: int = STRIDE) -> tuple[int, int]:
    """The model input's (height, width) for an image of h x w: rescaled, then each side up to a multiple."""
    rh, rw = rescale_size(h, w, scale)
    return math.ceil(rh / divisor) * divisor, math.ceil(rw / divisor) * divisor


def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per output index: the two source indices and their integer weights (summing to COEF_SCALE)."""
    scale = 1.0 / (dst / src)  # as OpenCV computes it (inverse of the double ratio)
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i0 = np.floor(f).astype(np.int64)
    f = f - i0.astype(np.float32)
    low, high = i0 < 0, i0 >= src - 1
    f[low], i0[low] = 0, 0
    f[high], i0[high] = 0, src - 1
    c0 = np.rint((np.float32(1) - f) * np.float32(COEF_SCALE)).astype(np.int64)
    return i0, np.minimum(i0 + 1, src - 1), c0, COEF_SCALE - c0


def resize_linear_u8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, C] -> uint8 [h, w, C], OpenCV INTER_LINEAR (see the module docstring)."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img.copy()
    x0, x1, a0, a1 = _taps(img.shape[1], w)
    y0, y1, b0, b1 = _taps(img.shape[0], h)
    src = img.astype(np.int64)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]  # [H, w, C], scaled by 2^11
    # the vertical pass as OpenCV's vectorised uint8 path rounds it: rows >> 4 to 16 bits, high halves of the
    # 16 x 16-bit products, then (sum + 2) >> 2
    top = ((rows[y0] >> 4) * b0[:, None, None]) >> 16
    bottom = ((rows[y1] >> 4) * b1[:, None, None]) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255).astype(np.uint8)


def align_resize(im: Image.Image, scale: tuple[int, int] = SEG_SCALE, divisor: int = STRIDE) -> np.ndarray:
    """RGB PIL image -> uint8 [H, W, 3] at the model's input size (two resizes, as the authors' pipeline)."""
    a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    a = resize_linear_u8(a, rescale_size(a.shape[0], a.shape[1], scale))
    return resize_linear_u8(a, align_resize_size(im.height, im.width, scale, divisor))


def seg_preprocess(im: Image.Image, scale: tuple[int, int] = SEG_SCALE, divisor: int = STRIDE,
                   mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                   ) -> tuple[np.ndarray, tuple[int, int]]:
    """(float32 [3, H, W] normalised model input, the original (height, width) for ``output_size``)."""
    a = align_resize(im, scale, divisor).astype(np.float32) / 255.0
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)), (im.height, im.width)
