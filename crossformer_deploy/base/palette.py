"""Class colours and overlays for segmentation maps (Pillow and numpy only, nothing downloaded).

The palette is generated: the PASCAL VOC bit-interleaving scheme (class c's bits spread over the high bits
of R, G and B), which gives every one of 256 classes a distinct, well separated colour; class 0 is not black
here (ADE20K's class 0 is "wall", a real class), so the colours are those of c + 1.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def palette(n: int = 256) -> np.ndarray:
    """uint8 [n, 3]: a distinct colour per class id (n <= 255)."""
    if not 1 <= n <= 255:
        raise ValueError(f"a palette holds 1..255 classes, not {n}")
    ids = np.arange(1, n + 1)
    out = np.zeros((n, 3), np.int64)
    for bit in range(8):
        for ch in range(3):
            out[:, ch] |= ((ids >> (3 * bit + ch)) & 1) << (7 - bit)
    return out.astype(np.uint8)


def colorize(class_map: np.ndarray, num_classes: int) -> Image.Image:
    """[H, W] class ids -> an RGB image of their colours (beyond 255 classes the colours repeat)."""
    n = min(num_classes, 255)
    return Image.fromarray(palette(n)[np.asarray(class_map) % n])


def class_map_png(class_map: np.ndarray, num_classes: int) -> Image.Image:
    """[H, W] class ids -> a PNG whose pixel values are the ids: palette ("P") mode, so viewers show the
    colours, up to 255 classes; 16-bit grey beyond."""
    if num_classes > 255:
        return Image.fromarray(np.asarray(class_map).astype(np.uint16))
    im = Image.fromarray(np.asarray(class_map).astype(np.uint8))
    im.putpalette(palette(max(num_classes, 1)).reshape(-1).tolist())  # an "L" image with a palette becomes "P"
    return im


def overlay(image: Image.Image, class_map: np.ndarray, num_classes: int, alpha: float = 0.5) -> Image.Image:
    """The image with the class colours blended in (``alpha`` of colour), at the class map's size."""
    base = image.convert("RGB")
    if base.size != (class_map.shape[1], class_map.shape[0]):
        base = base.resize((class_map.shape[1], class_map.shape[0]), Image.BILINEAR)
    return Image.blend(base, colorize(class_map, num_classes), alpha)
