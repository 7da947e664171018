"""INT8 calibration: a deterministic image sample, ONNX Runtime's calibrators, and a keyed range cache.

The cache holds only the per-tensor ranges (what quantization consumes), keyed by everything that
decides them: the model bytes, the method, the images' contents and the input size. Same key -> the
ranges are read back and no calibration inference runs.

A whole detector's images go through its own test pipeline instead of a crop (base/det_preprocess.py: resized
keeping the ratio to the graph's scale, padded to the stride), one at a time, with their ``image_size`` rows: the
ranges are those of the photos as the detector will see them.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod
from onnxruntime.quantization import calibrate as ortc
from tqdm import tqdm

from crossformer_deploy.base.cache import cache_dir
from crossformer_deploy.base.det_preprocess import det_batch, det_preprocess
from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.fileio import sha256_file, write_bytes_atomic
from crossformer_deploy.base.images import list_images, load_batch, load_image
from crossformer_deploy.base.model_info import CENTER_CROP, KEEP_RATIO_PAD, ModelInfo

METHODS = ("entropy", "percentile", "minmax")
CACHE_VERSION = 1
DET_BATCH = 1  # detector inputs are ~800x1216: the observed tensors of 16 such images would take GBs


def calibration_method(name: str):
    """Our method name -> onnxruntime.quantization.CalibrationMethod."""
    table = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
             "minmax": CalibrationMethod.MinMax}
    if name not in table:
        raise UsageError(f"unknown calibration method {name!r}; choose {', '.join(METHODS)}")
    return table[name]


@dataclass(frozen=True)
class CalibrationSet:
    """``count`` images drawn from a folder (sorted, then a seeded choice: the same files every run),
    preprocessed exactly as the model expects (its metadata's mean/std/crop) at one ``size``; a detector's
    (``resize`` KEEP_RATIO_PAD) by its test pipeline, ``size`` then being the scale (long, short) it resizes to."""

    paths: tuple[str, ...]
    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_ratio: float
    resize: str = CENTER_CROP
    stride: int = 32

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, info: ModelInfo, count: int = 512,
                    size: tuple[int, int] | None = None, seed: int = 0) -> CalibrationSet:
        if count < 1:
            raise UsageError(f"calibration count must be >= 1, not {count}")
        paths = list_images([os.fspath(folder)])  # recursive, sorted
        if count < len(paths):
            keep = np.sort(np.random.default_rng(seed).choice(len(paths), size=count, replace=False))
            paths = [paths[i] for i in keep]
        if info.resize == KEEP_RATIO_PAD:  # a detector: its own test pipeline, whatever ``size`` says
            return cls(tuple(paths), tuple(info.scale), tuple(info.mean), tuple(info.std), 1.0, KEEP_RATIO_PAD,
                       int(info.stride))
        return cls(tuple(paths), tuple(size or info.input_size), tuple(info.mean), tuple(info.std),
                   float(info.crop_ratio))

    @property
    def detector(self) -> bool:
        return self.resize == KEEP_RATIO_PAD

    def __len__(self) -> int:
        return len(self.paths)

    def file_hashes(self) -> list[str]:
        """Contents, not names, decide the ranges: sorted sha256 of every image file."""
        return sorted(sha256_file(p) for p in self.paths)

    def batches(self, batch_size: int = 16, fill: bool = False
                ) -> Iterator[tuple[np.ndarray | tuple[np.ndarray, np.ndarray], int]]:
        """(batch, how many of its images are new) per ``batch_size`` images; a detector's batch is (image
        [B, 3, H, W] padded to the largest, image_size [B, 4]). fill: every batch has exactly
        ``batch_size`` images (a graph with a fixed batch takes nothing else), the last one topped up
        with the first images again; their statistics then count twice, which moves a range far less
        than leaving images out would."""
        n = len(self.paths)
        for i in range(0, n, batch_size):
            chunk = list(self.paths[i:i + batch_size])
            real = len(chunk)
            if fill:
                chunk += [self.paths[j % n] for j in range(batch_size - real)]
            if self.detector:
                yield det_batch([det_preprocess(load_image(p), self.size, self.mean, self.std)
                                 for p in chunk], self.stride), real
            else:
                yield load_batch(chunk, self.size, self.crop_ratio, self.mean, self.std), real


def cache_key(model: onnx.ModelProto, method: str, images: CalibrationSet, tensors: Sequence[str]) -> str:
    """sha256 over the model bytes, the method, the image contents (sorted hashes), the size and the
    observed tensors (which nodes get quantized decides which ranges are needed)."""
    h = hashlib.sha256()
    h.update(hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest().encode())
    what = {"method": method, "size": list(images.size), "images": images.file_hashes(), "tensors": sorted(tensors),
            "version": CACHE_VERSION}
    if images.detector:  # ``size`` is then a resize bound, not a crop (older keys stay as they were)
        what["resize"] = images.resize
    h.update(json.dumps(what).encode())
    return h.hexdigest()


def default_cache_path(key: str) -> str:
    d = os.path.join(cache_dir(), "calibration")
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, f"{key[:32]}.json")


def load_ranges(path: str | os.PathLike, key: str) -> dict[str, tuple[float, float]] | None:
    """The cached ranges if ``path`` holds this key's, else None (missing, other key, unreadable)."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("key") != key or d.get("version") != CACHE_VERSION:
        return None  # another key, another version or a JSON file that is not a range cache at all
    return {k: (float(lo), float(hi)) for k, (lo, hi) in d["ranges"].items()}


def save_ranges(path: str | os.PathLike, key: str, method: str, images: CalibrationSet,
                ranges: dict[str, tuple[float, float]]) -> None:
    doc = {"version": CACHE_VERSION, "key": key, "method": method, "size": list(images.size),
           "count": len(images), "ranges": {k: [lo, hi] for k, (lo, hi) in sorted(ranges.items())}}
    write_bytes_atomic(path, json.dumps(doc, indent=1).encode())


def calibrate(model: onnx.ModelProto, images: CalibrationSet, method: str, tensors: Sequence[str],
              batch_size: int = 16, progress: bool = True) -> dict[str, tuple[float, float]]:
    """Run the model on the images with ORT's calibrator for ``method``: {tensor: (low, high)} for ``tensors``.

    Only the tensors that will be quantized are observed (ORT's own selection would also record every
    output of every MatMul, e.g. the attention scores, and the DPB tables). A graph with a fixed batch
    is fed exactly that batch; a dynamic one ``batch_size`` images at a time. Each batch goes to the
    calibrator on its own: ORT's histogram collectors stack one collect_data() call's outputs into one
    array (batches of different sizes cannot share a call) and keep them in memory until the call ends,
    while histograms merge across calls. The progress bar (stderr) counts images that have been run.
    """
    fixed = fixed_batch(model)
    with tempfile.TemporaryDirectory(prefix="crossformer-calib-") as tmp:
        src = Path(tmp, "model.onnx")
        onnx.save(model, src)
        calibrator = _make_calibrator(src, Path(tmp, "augmented.onnx"), method, set(tensors))
        with tqdm(total=len(images), desc=f"calibrating ({method})", unit="img", file=sys.stderr,
                  disable=not progress) as bar:
            for batch, new in images.batches(fixed or (DET_BATCH if images.detector else batch_size),
                                             fill=fixed is not None):
                _collect(calibrator, batch)
                bar.update(new)
            bar.set_postfix_str("computing ranges")
            with contextlib.redirect_stdout(io.StringIO()):  # ORT prints its progress with print()
                data = calibrator.compute_data()
    return {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1]))) for name, td in data.items()}


def fixed_batch(model: onnx.ModelProto) -> int | None:
    """The batch size the graph's image input is fixed to, None when it is dynamic."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def _make_calibrator(src: Path, augmented: Path, method: str, tensors: set[str]):
    """ORT's calibrator class for ``method``, observing exactly ``tensors``; symmetric ranges, since the
    activations are quantized symmetrically (zero point 0)."""
    base, kw = {
        # NB, found 2026-12-05: with num_bins == num_quantized_bins ORT's KL search has one candidate, the full
        # range, so "entropy" here gives exactly minmax's ranges (checked on UPerNet-S: identical scales); every
        # INT8 number in benchmarks/ was measured so. A real KL search needs num_bins >> 128 and ORT's pure-Python
        # loop then takes seconds a tensor: not changed until it is measured.
        "entropy": (ortc.EntropyCalibrater, {"num_bins": 128, "num_quantized_bins": 128}),
        "percentile": (ortc.PercentileCalibrater, {"num_bins": 2048, "percentile": 99.999}),
        "minmax": (ortc.MinMaxCalibrater, {}),
    }[method]

    class Selected(base):
        def select_tensors_to_calibrate(self, model):
            _, value_infos = super().select_tensors_to_calibrate(model)
            missing = tensors - set(value_infos)
            if missing:
                raise ValueError(f"no type information for {sorted(missing)[:3]}...: cannot calibrate them")
            return set(tensors), value_infos

    c = Selected(src, None, augmented_model_path=str(augmented), symmetric=True, **kw)
    c.augment_graph()
    c.create_inference_session()
    return c


class _OneBatch:
    """The CalibrationDataReader protocol over a single set of feeds."""

    def __init__(self, feeds: dict[str, np.ndarray]):
        self._feeds: dict | None = feeds

    def get_next(self) -> dict | None:
        feeds, self._feeds = self._feeds, None
        return feeds


def feeds_for(graph: onnx.GraphProto, batch: np.ndarray | tuple[np.ndarray, np.ndarray]) -> dict[str, np.ndarray]:
    """The image batch as the first input; a segmenter's ``output_size`` (its second input) is the batch's own
    size, so its logits are calibrated as they run on an image that needed no AlignResize stretch; a detector's
    batch comes with its ``image_size`` rows."""
    weights = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in weights]
    if isinstance(batch, tuple):
        batch, image_size = batch
        return {names[0]: batch, "image_size": image_size}
    feeds = {names[0]: batch}
    if "output_size" in names:
        feeds["output_size"] = np.asarray(batch.shape[2:], np.int64)
    return feeds


def _collect(calibrator, batch: np.ndarray) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        calibrator.collect_data(_OneBatch(feeds_for(calibrator.model.graph, batch)))
