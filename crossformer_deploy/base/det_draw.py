"""Detections drawn onto their image (Pillow and numpy only): a box in the class's colour, a caption "name 0.87" on
a filled tab above it, and, for Mask R-CNN, the instance mask blended in."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from crossformer_deploy.base.palette import palette

MASK_ALPHA = 0.5


def draw_detections(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[int],
                    captions: Sequence[str], masks: Sequence[np.ndarray | None] | None = None,
                    num_classes: int = 80, alpha: float = MASK_ALPHA) -> Image.Image:
    """An RGB copy of ``image`` with each detection drawn (lowest score first when given by descending score, so
    that the best ones stay on top); masks: bool [H, W] per detection (or None), blended with ``alpha``."""
    out = image.convert("RGB")
    colours = palette(min(max(num_classes, 1), 255))
    if masks is not None and any(m is not None for m in masks):
        a = np.asarray(out, np.float32)
        for label, mask in zip(labels, masks):
            if mask is not None and mask.any():
                a[mask] = a[mask] * (1 - alpha) + colours[label % len(colours)].astype(np.float32) * alpha
        out = Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = max(1, round(min(out.size) / 300))
    for box, label, caption in reversed(list(zip(boxes, labels, captions))):
        colour = tuple(int(c) for c in colours[label % len(colours)])
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle((x0, y0, max(x0, x1), max(y0, y1)), outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        tw, th = right - left + 4, bottom - top + 4
        ty = y0 - th if y0 - th >= 0 else y0  # above the box, or inside it at the image's top edge
        draw.rectangle((x0, ty, x0 + tw, ty + th), fill=colour)
        text = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)  # legible on light and dark tabs
        draw.text((x0 + 2 - left, ty + 2 - top), caption, fill=text, font=font)
    return out
