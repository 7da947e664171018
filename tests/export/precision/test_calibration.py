"""INT8 calibration (export/precision/calibration.py): the range cache, a deterministic image set, fixed-batch
graphs, progress that follows the runs."""
import json
import shutil

import numpy as np
import onnx
import pytest

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import read_info, to_onnx
from crossformer_deploy.export.precision import calibration
from crossformer_deploy.export.precision.calibration import CalibrationSet, cache_key
from crossformer_deploy.export.precision.int8 import (
    excluded_nodes,
    quantize_int8,
    quantized_inputs,
)
from crossformer_deploy.model.factory import build_model, weights_label
from tests.conftest import DIGITS_CKPT as CKPT
from tests.export.precision.conftest import CALIB_COUNT, LINEAR_OPS, SIZE, _float_constants, _logits, _types  # noqa: F401

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")


def test_calibration_cache_is_reused(int8, fp32, calib_dir, work, monkeypatch):
    calls = []
    real = calibration.calibrate
    monkeypatch.setattr(calibration, "calibrate", lambda *a, **k: calls.append(1) or real(*a, **k))
    again = quantize_int8(fp32[1], None, calib_dir, count=CALIB_COUNT, method="entropy", size=SIZE,
                          cache_path=str(work / "calib_cache.json"), progress=False)
    assert calls == []  # same model, method, images and size: ranges read back, no inference
    assert again.graph.SerializeToString() == int8[0].graph.SerializeToString()
    cached = json.loads((work / "calib_cache.json").read_text())
    assert cached["method"] == "entropy" and cached["count"] == CALIB_COUNT and cached["size"] == list(SIZE)
    # another image set (or method, or size) is another key: that cache entry is not used
    info = read_info(fp32[0])
    tensors = quantized_inputs(fp32[0], excluded_nodes(fp32[0]))
    same = CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT, SIZE)
    fewer = CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT - 1, SIZE)
    key = cache_key(fp32[0], "entropy", same, tensors)
    assert key == cached["key"]
    assert cache_key(fp32[0], "entropy", fewer, tensors) != key
    assert cache_key(fp32[0], "minmax", same, tensors) != key
    assert cache_key(fp32[0], "entropy", CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT, (96, 96)),
                     tensors) != key
    # a different image set with the same cache file recalibrates (here: 8 images, quick)
    quantize_int8(fp32[1], None, calib_dir, count=8, method="minmax", size=SIZE,
                  cache_path=str(work / "calib_cache.json"), progress=False)
    assert calls == [1]


def test_calibration_set_is_deterministic(calib_dir, tmp_path):
    info = ModelInfo("x", "classifier", 10, "w", input_size=SIZE)
    a = CalibrationSet.from_folder(calib_dir, info, 16)
    b = CalibrationSet.from_folder(calib_dir, info, 16)
    assert a.paths == b.paths and len(a) == 16 and list(a.paths) == sorted(a.paths)
    assert CalibrationSet.from_folder(calib_dir, info, 16, seed=1).paths != a.paths
    assert len(CalibrationSet.from_folder(calib_dir, info, 10_000)) == CALIB_COUNT  # all of them
    # keyed by contents: the same images under another folder name give the same hashes
    copy = tmp_path / "elsewhere"
    shutil.copytree(calib_dir, copy)
    assert CalibrationSet.from_folder(copy, info, 16).file_hashes() == a.file_hashes()
    batch, new = next(a.batches(4))
    assert batch.shape == (4, 3, *SIZE) and batch.dtype == np.float32 and new == 4
    # a graph with a fixed batch gets exactly that many images per run, the last run topped up
    sizes = [(len(b), n) for b, n in CalibrationSet.from_folder(calib_dir, info, 10).batches(4, fill=True)]
    assert sizes == [(4, 4), (4, 4), (4, 2)]




# ---------------------------------------------------------------------------------------- calibration runs
@pytest.mark.parametrize("batch", [1, 3])
def test_int8_calibrates_a_fixed_batch_graph(calib_dir, tmp_path, batch):
    """A graph with a fixed batch is fed exactly that batch (10 images at batch 3: the last run topped up)."""
    model = build_model(None, CKPT)
    info = ModelInfo("custom-32-2-2-1-1", "classifier", 10, weights_label(CKPT), input_size=SIZE, dynamic=False,
                     batch=batch)
    proto = to_onnx(model, info)
    path = tmp_path / "q.onnx"
    quantize_int8(proto, path, calib_dir, count=10, method="minmax", cache_path=str(tmp_path / "c.json"),
                  progress=False)
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [batch, 3, *SIZE]


def test_cli_int8_static_batch_1(calib_dir, tmp_path):
    """The command of the issue: --static --batch 1 --int8 (it fed batches of 16 to the batch-1 graph)."""
    from tests.helpers import cli

    out = str(tmp_path / "b1.onnx")
    r = cli("export", "--weights", CKPT, "--static", "64x64", "--batch", "1", "--int8", "--calib", calib_dir,
            "--calib-count", "5", "--calib-method", "minmax", "--calib-cache", str(tmp_path / "c.json"), "-o", out)
    assert r.returncode == 0, r.stderr
    assert read_info(onnx.load(out)).extra["int8"]["images"] == 5


def test_calibration_progress_follows_the_runs(fp32, calib_dir, monkeypatch):
    """The bar (on stderr) moves when a batch has been run through the calibration session, not while
    images are read: every update comes right after the batch it counts."""
    import sys

    events = []

    class Bar:
        def __init__(self, *a, total=None, file=None, disable=False, **k):
            assert file is sys.stderr and total == 40 and not disable
            events.append(("total", total))

        def update(self, n):
            events.append(("update", n))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def set_postfix_str(self, text):
            pass

    real = calibration._collect
    monkeypatch.setattr(calibration, "tqdm", Bar)
    monkeypatch.setattr(calibration, "_collect", lambda c, b: (real(c, b), events.append(("ran", len(b)))))
    proto = fp32[0]
    images = CalibrationSet.from_folder(calib_dir, read_info(proto), 40, SIZE)
    calibration.calibrate(proto, images, "minmax", quantized_inputs(proto, excluded_nodes(proto)), batch_size=16)
    assert events == [("total", 40), ("ran", 16), ("update", 16), ("ran", 16), ("update", 16), ("ran", 8),
                      ("update", 8)]


def test_a_foreign_file_at_the_cache_path_is_not_a_cache(tmp_path):
    """Any JSON at the cache path that is not our range cache (a list, a number, another tool's dict) means
    'not cached': recalibrate and overwrite, never a traceback."""
    for text in ("[1, 2]", "3", '{"other": "tool"}', "{broken"):
        path = tmp_path / "c.json"
        path.write_text(text)
        assert calibration.load_ranges(str(path), "key") is None, text
