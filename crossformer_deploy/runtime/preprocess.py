"""Image loading and the official evaluation transform, with Pillow and numpy only.

Official eval: resize the shorter side to size / 0.875 (bicubic), center crop, ImageNet mean/std.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError
from ..export.metadata import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(inputs: Iterable[str]) -> list[str]:
    """Files as given, directories expanded (recursively, sorted) to the images they hold."""
    found: list[str] = []
    for p in inputs:
        if os.path.isdir(p):
            inside = sorted(os.path.join(d, f) for d, _, fs in os.walk(p) for f in fs
                            if f.lower().endswith(IMAGE_EXTS))
            if not inside:
                raise ImageError(f"no images ({', '.join(IMAGE_EXTS[:4])}, ...) in directory {p}")
            found += inside
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise ImageError(f"no such file or directory: {p}")
    if not found:
        raise ImageError("no input images given")
    return found


def load_image(path: str) -> Image.Image:
    """An RGB image, EXIF orientation applied; grayscale, palette, RGBA/LA (over white), CMYK and
    16-bit images converted."""
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, with its name
            im = ImageOps.exif_transpose(im)
    except FileNotFoundError:
        raise ImageError(f"no such file: {path}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image (or a format Pillow cannot read): {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"corrupt image {path}: {e}") from None
    return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        return bg
    return im.convert("RGB")


def resize_and_crop(im: Image.Image, size: tuple[int, int], crop_ratio: float = CROP_RATIO) -> Image.Image:
    th, tw = size
    w, h = im.size
    if th == tw:  # torchvision Resize(int(size / ratio)): the shorter side, the other side truncated
        short = int(th / crop_ratio)
        nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
    else:  # cover th/ratio x tw/ratio, keep the aspect ratio
        s = max(th / crop_ratio / h, tw / crop_ratio / w)
        nw, nh = max(tw, round(w * s)), max(th, round(h * s))
    im = im.resize((nw, nh), Image.BICUBIC)
    top, left = round((nh - th) / 2.0), round((nw - tw) / 2.0)  # torchvision CenterCrop
    return im.crop((left, top, left + tw, top + th))


def preprocess(im: Image.Image, size: tuple[int, int] = (224, 224), crop_ratio: float = CROP_RATIO,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """PIL RGB image -> float32 [3, H, W], normalised."""
    a = np.asarray(resize_and_crop(im, size, crop_ratio), dtype=np.float32) / 255.0
    a = (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(a.transpose(2, 0, 1))


def load_batch(paths: Sequence[str], size: tuple[int, int], crop_ratio: float = CROP_RATIO,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    return np.stack([preprocess(load_image(p), size, crop_ratio, mean, std) for p in paths])
