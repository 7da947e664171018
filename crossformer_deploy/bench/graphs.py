"""The graphs of one (size, batch) case, each made once into a temp dir, its failure remembered.

A graph is an export (dynamic, static at the case's size, static with a free batch) and a recipe on it
(``export.recipe``: target passes and precision), or NNCF's quantization of another graph. ``export_args``
writes the crossformer-export flags that make the same graph, for --recommend.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import torch
from onnxruntime.quantization import CalibrationDataReader, quantize_static
from PIL import Image

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.bench.official import PeerFactory
from crossformer_deploy.export.onnx_export import export, save_onnx
from crossformer_deploy.export.precision.calibration import CalibrationSet
from crossformer_deploy.export.precision.placement import ALL, BF16_HYBRID
from crossformer_deploy.export.recipe import Int8Options, Recipe, apply

NNCF_MISSING = "NNCF is not installed (pip install nncf): OpenVINO's own INT8 needs it"
CALIB_COUNT = 64  # images drawn from the calibration folder, for our INT8 and NNCF alike
EXPORTS = ("dynamic", "static", "static-anybatch", "peer")


@dataclass(frozen=True)
class GraphSpec:
    """How one graph is made: ``export`` (dynamic; static at the case's size and batch; static with a free batch,
    which INT8 calibration needs to feed its own batches; ``peer``: the peer model, the authors' when the bench
    has their code, exported by plain ``torch.onnx.export`` at the case's shape), then the ``target`` passes and
    ``precision`` of a recipe (``export.recipe``). ``quantizer`` (``nncf``, ``nncf-head-float``, ``ort-qdq``):
    that tool's post-training INT8 of graph ``of`` instead (``export`` and ``target`` then say how that graph was
    made)."""

    export: str
    target: str = "plain"
    precision: str = "fp32"
    quantizer: str | None = None
    of: str | None = None
    placement: str = ALL  # an INT8 recipe's placement (export/precision/placement.py)


GRAPHS: dict[str, GraphSpec] = {
    "plain": GraphSpec("dynamic"),
    "static": GraphSpec("static"),
    "static-anybatch": GraphSpec("static-anybatch"),
    "peer": GraphSpec("peer"),
    "target-onnxruntime": GraphSpec("static", "onnxruntime"),
    "target-openvino": GraphSpec("static", "openvino"),
    "target-openvino-anybatch": GraphSpec("static-anybatch", "openvino"),
    "fp16": GraphSpec("static", "onnxruntime", "fp16"),
    "int8-onnxruntime": GraphSpec("static-anybatch", "onnxruntime", "int8"),
    "int8-openvino": GraphSpec("static-anybatch", "openvino", "int8"),
    "int8-openvino-hybrid": GraphSpec("static-anybatch", "openvino", "int8", placement=BF16_HYBRID),
    "nncf-peer": GraphSpec("peer", quantizer="nncf", of="peer"),
    "nncf-peer-head-float": GraphSpec("peer", quantizer="nncf-head-float", of="peer"),
    "ort-qdq-peer": GraphSpec("peer", quantizer="ort-qdq", of="peer"),
    "nncf-target-openvino": GraphSpec("static-anybatch", "openvino", quantizer="nncf-head-float",
                                      of="target-openvino-anybatch"),
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
        if spec.placement != ALL:
            args.append(f"--int8-placement {spec.placement}")
    return " ".join([*args, "-o model.onnx"])


class CaseGraphs:
    """Model files of one case in ``tmpdir`` by key of ``GRAPHS``."""

    def __init__(self, model, info: ModelInfo, size: tuple[int, int], batch: int, tmpdir: str,
                 plain_path: Callable[[], str], calib_dir: str | None = None, peer: PeerFactory | None = None):
        self.model, self.info, self.size, self.batch, self.tmpdir = model, info, size, batch, tmpdir
        self.calib_dir = calib_dir
        self.peer = peer  # the authors' model at a size; None: ours stands in for it
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
        if spec.quantizer:
            path, desc = self.get(spec.of)
            batch = self.batch if spec.export in ("static", "peer") else 1
            images = CalibrationSet.from_folder(self.calibration_dir(), self.info, CALIB_COUNT, self.size)
            if spec.quantizer == "ort-qdq":
                out = self._path(key)
                ort_quantize_static(path, images, batch, out)
                return out, f"{desc} -> onnxruntime.quantization.quantize_static (QDQ, defaults)"
            out = self._path(key, ".xml")
            head_float = spec.quantizer == "nncf-head-float"
            nncf_quantize(path, images, batch, out, head_float)
            return out, f"{desc} -> nncf.quantize(TRANSFORMER{', head float' if head_float else ''})"
        if spec.export == "peer":
            return self._export_peer()
        if spec.target == "plain" and spec.precision == "fp32":
            return self._export(spec.export)
        path, desc = self.get({"dynamic": "plain"}.get(spec.export, spec.export))
        proto = apply(onnx.load(path), self._recipe(spec))
        out = self._path(key)
        save_onnx(proto, out, check=False)  # the passes check their own output; the runtime is the test here
        step = {"fp16": " -> to_fp16", "int8": " -> quantize_int8"}.get(spec.precision, "")
        step += f" ({spec.placement})" if spec.precision == "int8" and spec.placement != ALL else ""
        return out, f"{desc} -> run_pipeline({spec.target}){step}"

    def _recipe(self, spec: GraphSpec) -> Recipe:
        int8 = None
        if spec.precision == "int8":
            # One range cache per run and placement: the openvino and onnxruntime target graphs are the same graph
            # today, so the second quantization reuses the first one's calibration (a placement quantizes other
            # tensors: its own cache, not one overwriting the other's).
            name = "int8_ranges.json" if spec.placement == ALL else f"int8_ranges_{spec.placement}.json"
            int8 = Int8Options(self.calibration_dir(), count=CALIB_COUNT, size=self.size,
                               cache_path=os.path.join(self.tmpdir, name), progress=False, placement=spec.placement)
        return Recipe(spec.target, spec.precision, int8=int8)

    def _path(self, key: str, ext: str = ".onnx") -> str:
        return os.path.join(self.tmpdir, f"{key.replace('-', '_')}_{self.size[0]}x{self.size[1]}_b{self.batch}{ext}")

    def _export(self, kind: str) -> tuple[str, str]:
        batch = self.batch if kind == "static" else None
        info = ModelInfo(**{**asdict(self.info), "input_size": self.size, "dynamic": False, "batch": batch})
        path = self._path(kind)
        export(self.model, path, info)
        return path, f"plain static {batch or 'B'}x3x{self.size[0]}x{self.size[1]}"

    def _export_peer(self) -> tuple[str, str]:
        """What a user of the authors' code deploys: their model, ``torch.onnx.export`` at the case's shape."""
        model = self.peer(self.size) if self.peer else self.model
        who = "the authors' model" if self.peer else "our model (no --official: the authors' code not given)"
        x = torch.randn(self.batch, 3, *self.size)
        path = self._path("peer")
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # the TorchScript-based exporter: its graph of their model runs faster in OpenVINO than the dynamo
            # exporter's (docs/measurements.md), and the peers get their best
            torch.onnx.export(model, (x,), path, dynamo=False, input_names=["image"], output_names=["logits"])
        return path, f"{who}, torch.onnx.export {self.batch}x3x{self.size[0]}x{self.size[1]}"

    def calibration_dir(self) -> str:
        """--calib, else a few seeded noise images: ranges for timing, not for accuracy (see README)."""
        return self.calib_dir or noise_images(self.tmpdir, self.size, 8)


def noise_images(tmpdir: str, size: tuple[int, int], count: int) -> str:
    """``tmpdir``/calib holding ``count`` seeded noise PNGs of ``size`` (made once): what the benches calibrate
    their INT8 paths on without --calib, enough to time them, not to judge them."""
    folder = os.path.join(tmpdir, "calib")
    if not os.path.isdir(folder):
        os.makedirs(folder)
        rng = np.random.default_rng(1)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(os.path.join(folder, f"{i}.png"))
    return folder


def _batches(images: CalibrationSet, batch: int) -> list[np.ndarray]:
    return [b for b, _ in images.batches(batch, fill=True)]


def nncf_quantize(path: str, images: CalibrationSet, batch: int, out_xml: str, head_float: bool = False) -> None:
    """NNCF PTQ (``ModelType.TRANSFORMER``, otherwise its defaults) of the ONNX model at ``path`` into OpenVINO IR
    ``out_xml``, calibrated on the images our INT8 calibrates on; ``head_float``: the classifier head ignored."""
    try:  # optional: the openvino extra
        import nncf
    except ImportError:
        raise UsageError(NNCF_MISSING) from None
    import openvino as ov  # NNCF's own dependency: present wherever nncf is

    nncf.set_log_level(logging.ERROR)
    model = ov.Core().read_model(path)
    kw = {"ignored_scope": nncf.IgnoredScope(patterns=[".*/head/.*"], validate=False)} if head_float else {}
    data = _batches(images, batch)
    quantized = nncf.quantize(model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(data) * batch, **kw)
    ov.save_model(quantized, out_xml)


def ort_quantize_static(path: str, images: CalibrationSet, batch: int, out: str) -> None:
    """ONNX Runtime's own INT8 of the ONNX model at ``path``: ``quantize_static`` with its defaults (QDQ)."""
    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.data = iter(_batches(images, batch))

        def get_next(self) -> dict | None:
            x = next(self.data, None)
            return None if x is None else {"image": x}

    with contextlib.redirect_stdout(io.StringIO()):
        quantize_static(path, out, Reader())
