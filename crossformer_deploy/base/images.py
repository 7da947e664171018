"""Image loading and the official evaluation transform, with Pillow and numpy only.

Official eval: resize the shorter side to size / 0.875 (bicubic), center crop, ImageNet mean/std.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from crossformer_deploy.base.errors import ImageError, first_line, os_reason
from crossformer_deploy.base.model_info import CROP_RATIO, IMAGENET_MEAN, IMAGENET_STD

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def list_images(inputs: Iterable[str], on_error: Callable[[ImageError], None] | None = None) -> list[str]:
    """Files as given, directories expanded recursively (sorted) to the images they hold, symlinked
    sub-folders followed once each. A missing input or an unlistable folder raises ImageError, or, with
    ``on_error``, is handed to it and skipped (a folder run goes on past one bad entry)."""
    found: list[str] = []
    seen: set[str] = set()  # real paths of the folders walked: a link loop or a second link is walked once
    for p in inputs:
        if os.path.isdir(p):
            if os.path.realpath(p) in seen:
                continue  # given twice, or inside a folder given before
            failed: list[ImageError] = []
            inside = sorted(_walk(p, seen, failed.append))
            for e in failed:
                _fail(e, on_error)
            if not inside and not failed:
                raise ImageError(f"no images ({', '.join(IMAGE_EXTS[:4])}, ...) in directory {p}")
            found += inside
        elif os.path.lexists(p):
            found.append(p)  # a file, or a link to nothing: loading it says what is wrong
        else:
            _fail(ImageError(f"no such file or directory: {p}"), on_error)
    if not found and on_error is None:
        raise ImageError("no input images given")
    return found


def _walk(folder: str, seen: set[str], on_error: Callable[[ImageError], None]) -> Iterator[str]:
    real = os.path.realpath(folder)
    if real in seen:
        return
    seen.add(real)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)  # which link to a folder wins: stable
    except OSError as e:
        on_error(ImageError(f"cannot list folder {folder}: {os_reason(e)}"))
        return
    for entry in entries:
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError:
            is_dir = False
        if is_dir:
            yield from _walk(entry.path, seen, on_error)
        elif entry.name.lower().endswith(IMAGE_EXTS):
            yield entry.path


def _fail(error: ImageError, on_error: Callable[[ImageError], None] | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def load_image(path: str) -> Image.Image:
    """An RGB image, EXIF orientation applied; grayscale, palette, RGBA/LA (over white), CMYK and
    16-bit images converted."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from MAX_IMAGE_PIXELS and refuses from twice that (below): a big photo decodes quietly
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()  # decode now: a truncated file fails here, with its name
                im = ImageOps.exif_transpose(im)
    except (FileNotFoundError, PermissionError, IsADirectoryError) as e:
        raise ImageError(f"{os_reason(e)}: {path}") from None
    except UnidentifiedImageError:
        raise ImageError(f"not an image (or a format Pillow cannot read): {path}") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"image too large: {path} ({first_line(e)})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"corrupt image {path}: {first_line(e)}") from None
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
