"""The graphs of one (size, batch) case, each made once into a temp dir, its failure remembered.

A graph is an export (dynamic, static at the case's size, static with a free batch) and a recipe on it
(``export.recipe``: target passes and precision), or NNCF's quantization of another graph. ``export_args``
writes the crossformer-export flags that make the same graph, for --recommend.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from PIL import Image

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import export, save_onnx
from crossformer_deploy.export.precision.calibration import CalibrationSet
from crossformer_deploy.export.recipe import Int8Options, Recipe, apply

NNCF_MISSING = "NNCF is not installed (pip install nncf): OpenVINO's own INT8 needs it"
CALIB_COUNT = 64  # images drawn from the calibration folder, for our INT8 and NNCF alike
EXPORTS = ("dynamic", "static", "static-anybatch")


@dataclass(frozen=True)
class GraphSpec:
    """How one graph is made: ``export`` (dynamic; static at the case's size and batch; static with a free batch,
    which INT8 calibration needs to feed its own batches), then the ``target`` passes and ``precision`` of a
    recipe (``export.recipe``). ``nncf_of``: NNCF's post-training quantization of that graph instead (``export``
    and ``target`` then say how that graph was made)."""

    export: str
    target: str = "plain"
    precision: str = "fp32"
    nncf_of: str | None = None


GRAPHS: dict[str, GraphSpec] = {
    "plain": GraphSpec("dynamic"),
    "static": GraphSpec("static"),
    "static-anybatch": GraphSpec("static-anybatch"),
    "target-onnxruntime": GraphSpec("static", "onnxruntime"),
    "target-openvino": GraphSpec("static", "openvino"),
    "target-openvino-anybatch": GraphSpec("static-anybatch", "openvino"),
    "fp16": GraphSpec("static", "onnxruntime", "fp16"),
    "int8-onnxruntime": GraphSpec("static-anybatch", "onnxruntime", "int8"),
    "int8-openvino": GraphSpec("static-anybatch", "openvino", "int8"),
    "nncf-plain": GraphSpec("dynamic", nncf_of="plain"),
    "nncf-target-openvino": GraphSpec("static-anybatch", "openvino", nncf_of="target-openvino-anybatch"),
}


def export_args(spec: GraphSpec, size: str, batch: int) -> str:
    """The crossformer-export flags (after --variant / --weights) that write ``spec``'s ONNX graph."""
    args = []
    if spec.export != "dynamic":
        args.append(f"--static {size}")
    if spec.export == "static":
        args.append(f"--batch {batch}")
    if spec.target != "plain":
        args.append(f"--target {spec.target}")
    if spec.precision == "fp16":
        args.append("--fp16")
    if spec.precision == "int8":
        args.append("--int8 --calib CALIB_DIR")
    return " ".join([*args, "-o model.onnx"])


class CaseGraphs:
    """Model files of one case in ``tmpdir`` by key of ``GRAPHS``."""

    def __init__(self, model, info: ModelInfo, size: tuple[int, int], batch: int, tmpdir: str,
                 plain_path: Callable[[], str], calib_dir: str | None = None):
        self.model, self.info, self.size, self.batch, self.tmpdir = model, info, size, batch, tmpdir
        self.calib_dir = calib_dir
        self.plain = plain_path  # the dynamic export is size-independent: one per run
        self._memo: dict[str, tuple[str, str] | Exception] = {}

    def get(self, key: str) -> tuple[str, str]:
        """(path, description) of graph ``key``; raises the error that made it fail, every time."""
        if key == "plain":
            return self.plain(), "plain dynamic"
        if key not in self._memo:
            try:
                # Graph tools (Polygraphy, graphsurgeon, NNCF) print on stdout: keep stdout for the table.
                with contextlib.redirect_stdout(sys.stderr):
                    self._memo[key] = self._make(key, GRAPHS[key])
            except Exception as e:  # becomes the skip note of every backend needing it
                self._memo[key] = e
        got = self._memo[key]
        if isinstance(got, Exception):
            raise got
        return got

    def _make(self, key: str, spec: GraphSpec) -> tuple[str, str]:
        if spec.nncf_of:
            path, desc = self.get(spec.nncf_of)
            out = self._path(key, ".xml")
            nncf_quantize(path, self.calibration_dir(), self.info, self.size, out)
            return out, f"{desc} -> nncf.quantize(TRANSFORMER)"
        if spec.target == "plain" and spec.precision == "fp32":
            return self._export(spec.export)
        path, desc = self.get({"dynamic": "plain"}.get(spec.export, spec.export))
        proto = apply(onnx.load(path), self._recipe(spec))
        out = self._path(key)
        save_onnx(proto, out, check=False)  # the passes check their own output; the runtime is the test here
        step = {"fp16": " -> to_fp16", "int8": " -> quantize_int8"}.get(spec.precision, "")
        return out, f"{desc} -> run_pipeline({spec.target}){step}"

    def _recipe(self, spec: GraphSpec) -> Recipe:
        int8 = None
        if spec.precision == "int8":
            # One range cache per run: the openvino and onnxruntime target graphs are the same graph today,
            # so the second quantization reuses the first one's calibration.
            int8 = Int8Options(self.calibration_dir(), count=CALIB_COUNT, size=self.size,
                               cache_path=os.path.join(self.tmpdir, "int8_ranges.json"), progress=False)
        return Recipe(spec.target, spec.precision, int8=int8)

    def _path(self, key: str, ext: str = ".onnx") -> str:
        return os.path.join(self.tmpdir, f"{key.replace('-', '_')}_{self.size[0]}x{self.size[1]}_b{self.batch}{ext}")

    def _export(self, kind: str) -> tuple[str, str]:
        batch = self.batch if kind == "static" else None
        info = ModelInfo(**{**asdict(self.info), "input_size": self.size, "dynamic": False, "batch": batch})
        path = self._path(kind)
        export(self.model, path, info)
        return path, f"plain static {batch or 'B'}x3x{self.size[0]}x{self.size[1]}"

    def calibration_dir(self) -> str:
        """--calib, else a few seeded noise images: ranges for timing, not for accuracy (see README)."""
        if self.calib_dir:
            return self.calib_dir
        folder = os.path.join(self.tmpdir, "calib")
        if not os.path.isdir(folder):
            os.makedirs(folder)
            rng = np.random.default_rng(1)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (*self.size, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
        return folder


def nncf_quantize(path: str, calib_dir: str, info: ModelInfo, size: tuple[int, int], out_xml: str) -> None:
    """NNCF PTQ (``ModelType.TRANSFORMER``) of the ONNX model at ``path`` into OpenVINO IR ``out_xml``, calibrated
    on the images our INT8 calibrates on (same folder, same count, same preprocessing)."""
    try:  # optional: the openvino extra
        import nncf
    except ImportError:
        raise UsageError(NNCF_MISSING) from None
    import openvino as ov  # NNCF's own dependency: present wherever nncf is

    nncf.set_log_level(logging.ERROR)
    images = CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT, size)
    data = [batch for batch, _ in images.batches(1)]
    model = ov.Core().read_model(path)
    quantized = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(data))
    ov.save_model(quantized, out_xml)
