"""MMDetection's test pipeline for the authors' COCO detectors, with numpy only: Resize keeping the ratio, ImageNet
mean/std on RGB, zero padding to a multiple of 32; and the batching of images of mixed sizes.

What mmdet 3.3 does (read in mmcv 2.1 / mmdet 3.3 / mmengine, not copied):
- ``Resize(scale=(1333, 800), keep_ratio=True)`` -> ``mmcv.imrescale``: factor = min(1333 / long side,
  800 / short side), new size ``int(w * factor + 0.5)`` x ``int(h * factor + 0.5)`` (``rescale_size`` /
  ``_scale_size``), one OpenCV INTER_LINEAR resize of the uint8 image (cv2 is mmcv's default backend); the
  resize of base/seg_preprocess.py (``resize_linear_u8``: OpenCV's fixed-point x86 path).
- ``DetDataPreprocessor(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
  pad_size_divisor=32)``: normalise each image first, then ``stack_batch`` pads the batch with 0 (after
  normalisation, so the padding is the mean colour's 0, not black) at the bottom and right up to the largest
  height and width of the batch, each rounded up to a multiple of 32.
- Boxes come back to the original image with ``scale_factor = (new_w / w, new_h / h)``: the graph reads it off
  ``image_size`` rows (resized h, resized w, original h, original w).
Example: a 480x640 photo -> factor min(1333 / 640, 800 / 480) = 1.6667 -> 800x1067, padded to 800x1088; image_size
row (800, 1067, 480, 640).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

from crossformer_deploy.base.errors import ImageError
from crossformer_deploy.base.model_info import DET_SCALE, IMAGENET_MEAN, IMAGENET_STD
from crossformer_deploy.base.seg_preprocess import rescale_size, resize_linear_u8
from crossformer_deploy.base.sizes import STRIDE


def det_resize_size(h: int, w: int, scale: tuple[int, int] = DET_SCALE) -> tuple[int, int]:
    """(height, width) of an h x w image after mmdet's ``Resize(scale, keep_ratio=True)``."""
    return rescale_size(h, w, scale)


def padded_size(sizes: Sequence[tuple[int, int]], divisor: int = STRIDE) -> tuple[int, int]:
    """The batch's input (H, W): the largest height and width, each up to a multiple of ``divisor``."""
    return (math.ceil(max(h for h, _ in sizes) / divisor) * divisor,
            math.ceil(max(w for _, w in sizes) / divisor) * divisor)


def det_preprocess(im: Image.Image, scale: tuple[int, int] = DET_SCALE, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image -> (float32 [3, h, w] normalised, unpadded; int64 [4] row (h, w, original h, original w));
    ImageError for an image so thin that a side would be resized to 0 pixels."""
    a = np.asarray(im.convert("RGB"), dtype=np.uint8)
    h, w = det_resize_size(a.shape[0], a.shape[1], scale)
    if min(h, w) < 1:
        raise ImageError(f"a {im.width}x{im.height} image is too thin to detect in: resized to {scale[0]}x{scale[1]} "
                         f"keeping its ratio, it would be {w}x{h} pixels")
    a = resize_linear_u8(a, (h, w)).astype(np.float32) / 255.0
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1)), np.asarray([h, w, im.height, im.width], np.int64)


def det_batch(items: Sequence[tuple[np.ndarray, np.ndarray]], divisor: int = STRIDE
              ) -> tuple[np.ndarray, np.ndarray]:
    """``det_preprocess`` outputs -> (image [B, 3, H, W] zero-padded at the bottom and right to ``padded_size``,
    image_size [B, 4] int64)."""
    hh, ww = padded_size([x.shape[1:] for x, _ in items], divisor)
    out = np.zeros((len(items), 3, hh, ww), np.float32)
    for i, (x, _) in enumerate(items):
        out[i, :, :x.shape[1], :x.shape[2]] = x
    return out, np.stack([row for _, row in items]).astype(np.int64)
