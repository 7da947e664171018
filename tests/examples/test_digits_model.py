"""The trained digits CrossFormer (examples/digits): held-out accuracy and a deterministic split."""
import os

import numpy as np
import pytest
import torch

from crossformer_deploy import create_model

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")

from tests.conftest import DIGITS_CKPT as CKPT


def test_split_is_deterministic(digits_data):
    x1, y1 = digits_data.load_split("test")
    digits_data._split_pixels.cache_clear()
    x2, y2 = digits_data.load_split("test")
    assert x1.shape == (450, 3, 64, 64) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert torch.equal(y1, y2) and torch.equal(x1, x2)
    assert np.bincount(y1.numpy()).tolist() == [45, 46, 44, 46, 45, 46, 45, 45, 43, 45]
    assert y1[:10].tolist() == [2, 0, 4, 9, 4, 1, 2, 4, 6, 7]
    _, y_train = digits_data.load_split("train")
    assert len(y_train) == 1347 and np.bincount(y_train.numpy()).tolist() == [
        133, 136, 133, 137, 136, 136, 136, 134, 131, 135]


def test_image_folder_round_trips(digits_data, tmp_path):
    from PIL import Image

    paths = digits_data.export_image_folder(tmp_path, split="test", limit=8)
    x, y = digits_data.load_split("test")
    assert len(paths) == 8
    for i, p in enumerate(paths):
        assert os.path.relpath(p, tmp_path) == os.path.join(str(int(y[i])), f"{i}.png")
        with Image.open(p) as im:
            assert im.mode == "RGB" and im.size == (64, 64)
            px = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
        assert torch.equal(digits_data.normalize(px), x[i:i + 1])


def test_trained_checkpoint_accuracy(digits_data):
    assert os.path.isfile(CKPT), "run examples/digits/train.py"
    model = create_model(None, weights=CKPT)
    assert model.num_classes == 10 and model.cfg.embed_dim == 32
    x, y = digits_data.load_split("test")
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + 150]).argmax(1) for i in range(0, len(y), 150)])
    acc = (pred == y).float().mean().item()
    assert acc >= 0.95, f"held-out accuracy {acc:.2%}"
