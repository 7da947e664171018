"""The authors' segmentation test pipeline (AlignResize) and the palette, without OpenCV."""
import numpy as np
from PIL import Image

from crossformer_deploy.base.palette import class_map_png, overlay, palette
from crossformer_deploy.base.seg_preprocess import align_resize_size, rescale_size, resize_linear_u8, seg_preprocess


def test_sizes():
    assert rescale_size(375, 500) == (512, 683) and align_resize_size(375, 500) == (512, 704)
    assert align_resize_size(512, 683) == (512, 704)  # already at scale: only the stretch to a multiple of 32
    assert align_resize_size(1024, 1366) == (512, 704)
    assert align_resize_size(300, 1000) == (512, 1728)  # the short side reaches 512 before the long one 2048
    assert align_resize_size(100, 4000) == (64, 2048)  # here the long side binds


def test_resize_is_opencv_linear():
    a = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 5
    assert np.array_equal(resize_linear_u8(a, (4, 6)), a)  # same size: untouched
    half = resize_linear_u8(a, (2, 3))  # an exact 2x reduction is the 2x2 mean, rounded as (sum + 2) >> 2
    blocks = a.astype(int).reshape(2, 2, 3, 2, 3).sum(axis=(1, 3))
    assert np.array_equal(half, (blocks + 2) >> 2)
    up = resize_linear_u8(np.array([[[0], [100]]], np.uint8), (1, 4))[0, :, 0]
    assert up.tolist() == [0, 25, 75, 100]  # half-pixel centres, edges clamped


def test_seg_preprocess_returns_the_original_size():
    im = Image.fromarray(np.full((375, 500, 3), 128, np.uint8))
    x, original = seg_preprocess(im)
    assert x.shape == (3, 512, 704) and x.dtype == np.float32 and original == (375, 500)
    assert np.allclose(x[0], (128 / 255 - 0.485) / 0.229, atol=1e-6)


def test_palette_and_pngs():
    p = palette(150)
    assert len({tuple(c) for c in p}) == 150 and p.dtype == np.uint8
    cm = np.array([[0, 1], [149, 2]])
    png = class_map_png(cm, 150)
    assert png.mode == "P" and np.array_equal(np.asarray(png), cm)
    assert class_map_png(np.array([[300]]), 400).mode == "I;16"
    ov = overlay(Image.new("RGB", (4, 4), (0, 0, 0)), cm, 150, alpha=1.0)
    assert ov.size == (2, 2) and ov.getpixel((0, 0)) == tuple(p[0])
