"""The graphs of one (size, batch) case: exported into a temp dir once each, their failure remembered."""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable
from dataclasses import asdict

import numpy as np
import onnx

from ..export.metadata import ModelInfo
from ..export.onnx_export import export, save_onnx

NNCF_MISSING = "NNCF is not installed (pip install nncf): OpenVINO's own INT8 needs it"


class CaseGraphs:
    """Model files of one case in ``tmpdir`` by key ("static", "target-openvino", "nncf-plain", ...)."""

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
                    self._memo[key] = getattr(self, "_" + key.replace("-", "_"))()
            except Exception as e:  # becomes the skip note of every backend needing it
                self._memo[key] = e
        got = self._memo[key]
        if isinstance(got, Exception):
            raise got
        return got

    def _path(self, key: str, ext: str = ".onnx") -> str:
        return os.path.join(self.tmpdir, f"{key}_{self.size[0]}x{self.size[1]}_b{self.batch}{ext}")

    def _static(self, batch: int | None = -1) -> tuple[str, str]:
        batch = self.batch if batch == -1 else batch
        info = ModelInfo(**{**asdict(self.info), "input_size": self.size, "dynamic": False, "batch": batch})
        path = self._path("static" if batch else "static_anybatch")
        export(self.model, path, info)
        return path, f"plain static {batch or 'B'}x3x{self.size[0]}x{self.size[1]}"

    def _static_anybatch(self) -> tuple[str, str]:
        # INT8 calibration feeds batches of its own size, which a fixed-batch graph refuses.
        return self._static(batch=None)

    def _derived(self, key: str, base: str, steps: list[tuple[str, Callable[[onnx.ModelProto], onnx.ModelProto]]]
                 ) -> tuple[str, str]:
        path, desc = self.get(base)
        proto = onnx.load(path)
        for what, make in steps:
            proto = make(proto)
            desc += f" -> {what}"
        path = self._path(key)
        save_onnx(proto, path, check=False)  # the passes check their own output; the runtime is the test here
        return path, desc

    @staticmethod
    def _passes(target: str) -> list[tuple[str, Callable]]:
        from ..export.pipeline import run_pipeline

        return [(f"run_pipeline({target})", lambda p: run_pipeline(p, target))]

    def _target_onnxruntime(self) -> tuple[str, str]:
        return self._derived("target_onnxruntime", "static", self._passes("onnxruntime"))

    def _target_openvino(self) -> tuple[str, str]:
        return self._derived("target_openvino", "static", self._passes("openvino"))

    def _target_openvino_anybatch(self) -> tuple[str, str]:
        return self._derived("target_openvino_anybatch", "static-anybatch", self._passes("openvino"))

    def _fp16(self) -> tuple[str, str]:
        from ..export.precision.fp16 import to_fp16

        return self._derived("fp16", "static", [*self._passes("onnxruntime"), ("to_fp16", to_fp16)])

    def calibration_dir(self) -> str:
        """--calib, else a few seeded noise images: ranges for timing, not for accuracy (see README)."""
        if self.calib_dir:
            return self.calib_dir
        folder = os.path.join(self.tmpdir, "calib")
        if not os.path.isdir(folder):
            from PIL import Image

            os.makedirs(folder)
            rng = np.random.default_rng(1)
            for i in range(8):
                Image.fromarray(rng.integers(0, 256, (*self.size, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
        return folder

    def _int8(self, target: str) -> tuple[str, str]:
        from ..export.precision.int8 import quantize_int8

        # One range cache per run: the openvino and onnxruntime target graphs are the same graph today,
        # so the second quantization reuses the first one's calibration.
        cache = os.path.join(self.tmpdir, "int8_ranges.json")
        quantize = ("quantize_int8", lambda p: quantize_int8(p, None, self.calibration_dir(), count=CALIB_COUNT,
                                                             size=self.size, cache_path=cache, progress=False))
        return self._derived(f"int8_{target}", "static-anybatch", [*self._passes(target), quantize])

    def _int8_onnxruntime(self) -> tuple[str, str]:
        return self._int8("onnxruntime")

    def _int8_openvino(self) -> tuple[str, str]:
        return self._int8("openvino")

    def _nncf(self, base: str) -> tuple[str, str]:
        """OpenVINO's own INT8: NNCF post-training quantization, transformer preset, calibrated on the images
        our INT8 calibrates on (same folder, same count, same preprocessing). Written as OpenVINO IR."""
        path, desc = self.get(base)
        out = self._path("nncf_" + base.replace("-", "_"), ".xml")
        nncf_quantize(path, self.calibration_dir(), self.info, self.size, out)
        return out, f"{desc} -> nncf.quantize(TRANSFORMER)"

    def _nncf_plain(self) -> tuple[str, str]:
        return self._nncf("plain")

    def _nncf_target_openvino(self) -> tuple[str, str]:
        return self._nncf("target-openvino-anybatch")


CALIB_COUNT = 64  # images drawn from the calibration folder, for our INT8 and NNCF alike


def nncf_quantize(path: str, calib_dir: str, info: ModelInfo, size: tuple[int, int], out_xml: str) -> None:
    """NNCF PTQ (``ModelType.TRANSFORMER``) of the ONNX model at ``path`` into OpenVINO IR ``out_xml``."""
    try:
        import nncf
    except ImportError:
        from ..errors import UsageError

        raise UsageError(NNCF_MISSING) from None
    import logging

    import openvino as ov

    from ..export.precision.calibration import CalibrationSet

    nncf.set_log_level(logging.ERROR)
    images = CalibrationSet.from_folder(calib_dir, info, CALIB_COUNT, size)
    data = [batch for batch, _ in images.batches(1)]
    model = ov.Core().read_model(path)
    quantized = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(data))
    ov.save_model(quantized, out_xml)
