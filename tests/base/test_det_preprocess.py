"""MMDetection's test pipeline (base/det_preprocess.py): sizes by mmdet's rule, padding after normalisation, the
batching of mixed sizes; the COCO names."""
import numpy as np
import pytest
from PIL import Image

from crossformer_deploy.base.coco import COCO_NAMES, det_class_names
from crossformer_deploy.base.det_preprocess import det_batch, det_preprocess, det_resize_size, padded_size
from crossformer_deploy.base.errors import ImageError

# (h, w) -> the resized (h, w) and the padded input, by mmcv.imrescale's rule for scale (1333, 800), worked out by
# hand: factor = min(1333 / long side, 800 / short side), side = int(side * factor + 0.5), then up to 32.
SIZES = [
    ((480, 640), (800, 1067), (800, 1088)),  # factor 800/480 = 1.667: 640 * 1.667 = 1066.67 -> 1067
    ((266, 400), (800, 1203), (800, 1216)),  # the samples' size: 400 * 800/266 = 1203.008 -> 1203
    ((1000, 300), (1333, 400), (1344, 416)),  # portrait, the long side binds: 1333/1000, 300 * 1.333 = 399.9
    ((3000, 4000), (800, 1067), (800, 1088)),  # a large photo shrinks: factor 800/3000
    ((10, 20), (667, 1333), (672, 1344)),  # long side binds: 1333/20 = 66.65, 10 * 66.65 = 666.5 -> +0.5 -> 667
    ((800, 1333), (800, 1333), (800, 1344)),  # at scale already: factor 1, padding only
]


@pytest.mark.parametrize("size,resized,padded", SIZES)
def test_sizes_follow_mmdet_rule(size, resized, padded):
    assert det_resize_size(*size) == resized
    assert padded_size([resized]) == padded


def test_preprocess_and_batch():
    grey = Image.fromarray(np.full((30, 40, 3), 128, np.uint8))
    x, row = det_preprocess(grey, (64, 48))  # factor min(64/40, 48/30) = 1.6: 30x40 -> 48x64
    assert x.shape == (3, 48, 64) and x.dtype == np.float32 and row.tolist() == [48, 64, 30, 40]
    assert np.allclose(x[0], (128 / 255 - 0.485) / 0.229, atol=1e-6)
    y, row_y = det_preprocess(Image.fromarray(np.full((60, 30, 3), 128, np.uint8)), (64, 48))  # -> 64x32
    assert row_y.tolist() == [64, 32, 60, 30]
    image, image_size = det_batch([(x, row), (y, row_y)])
    assert image.shape == (2, 3, 64, 64) and image_size.dtype == np.int64  # the largest h and w, up to 32
    assert image_size.tolist() == [[48, 64, 30, 40], [64, 32, 60, 30]]
    assert np.array_equal(image[0, :, :48, :64], x) and not image[0, :, 48:].any()  # 0 after normalising
    assert np.array_equal(image[1, :, :, :32], y) and not image[1, :, :, 32:].any()


def test_too_thin_an_image_is_one_error():
    with pytest.raises(ImageError, match="too thin to detect in"):
        det_preprocess(Image.fromarray(np.zeros((1, 5000, 3), np.uint8)))  # 1 x 0.27 rounds to 0 rows


def test_coco_names():
    assert len(COCO_NAMES) == 80 and COCO_NAMES[0] == "person" and COCO_NAMES[79] == "toothbrush"
    assert det_class_names(80) is COCO_NAMES and det_class_names(3) == ("class 0", "class 1", "class 2")
