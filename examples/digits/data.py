"""The scikit-learn handwritten digits as 64x64 RGB images, split the same way every time.

``sklearn.datasets.load_digits`` ships inside scikit-learn (1797 8x8 grayscale images, values 0..16,
10 classes), so nothing is downloaded and no data file is committed: every split is rebuilt here.

Pipeline, identical for training, evaluation and the exported PNGs:
  8x8 values / 16 -> [0, 1] -> bilinear upscale to 64x64 -> rounded to uint8 -> 3 equal channels.
The uint8 step makes the PNGs from :func:`export_image_folder` lossless: reading one back, dividing by
255 and normalising with the ImageNet mean/std gives exactly the tensor :func:`load_split` returns.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

SIZE = 64
NUM_CLASSES = 10
TEST_SIZE = 0.25
SPLIT_SEED = 0
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "test")


@lru_cache(maxsize=2)
def _split_pixels(split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images [N, 64, 64, 3], int64 labels [N]) of one split; cached, callers get copies."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0  # [N, 8, 8] in [0, 1]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=y)
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    up = F.interpolate(torch.from_numpy(x)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    u8 = (up.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()  # [N, 64, 64]
    rgb = np.repeat(u8[..., None], 3, axis=-1)
    rgb.setflags(write=False)
    y.setflags(write=False)
    return rgb, y


def load_pixels(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Un-normalised images uint8 [N, 64, 64, 3] (HWC, RGB) and labels int64 [N]."""
    rgb, y = _split_pixels(split)
    return rgb.copy(), y.copy()


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float NCHW -> ImageNet-normalised float32 NCHW."""
    x = pixels.float() / 255.0 if pixels.dtype == torch.uint8 else pixels.float()
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def load_split(split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """Model-ready images float32 [N, 3, 64, 64] (ImageNet-normalised) and labels int64 [N].

    The split is stratified, 75 % train (1347 images) / 25 % test (450), ``random_state=0``.
    """
    rgb, y = _split_pixels(split)
    x = torch.from_numpy(rgb.copy()).permute(0, 3, 1, 2).contiguous()
    return normalize(x), torch.from_numpy(y.copy())


def export_image_folder(directory: str | os.PathLike, split: str = "test", limit: int | None = None) -> list[str]:
    """Write the split as ``directory/<label>/<idx>.png`` (64x64 RGB uint8, un-normalised pixels).

    ``idx`` is the image's index within the split, so ``load_split(split)[i]`` is ``<label>/<i>.png``.
    ``limit`` keeps the first ``limit`` images of the split (it is shuffled, so every class appears).
    Returns the written paths in split order.
    """
    from PIL import Image

    rgb, y = _split_pixels(split)
    n = len(y) if limit is None else max(0, min(int(limit), len(y)))
    paths = []
    for i in range(n):
        folder = os.path.join(os.fspath(directory), str(int(y[i])))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i}.png")
        Image.fromarray(rgb[i]).save(path)
        paths.append(path)
    return paths
