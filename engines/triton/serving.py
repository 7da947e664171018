"""The code Triton runs: ``TritonPythonModel`` classes that the generated ``model.py`` files import inside
Triton's Python-backend stub (``triton_python_backend_utils`` is the stub's module).

It runs in the serving environment (``env.py``: numpy < 2, ONNX Runtime, Pillow, no torch), so it imports only
the torch-free base and ONNX Runtime's runner.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence

import numpy as np

from crossformer_deploy.base.coco import det_class_names
from crossformer_deploy.base.det_preprocess import det_batch
from crossformer_deploy.base.errors import CrossFormerError, ImageError, InputSizeError
from crossformer_deploy.base.images import load_image, preprocess
from crossformer_deploy.base.labels import class_names
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.base.sizes import check_size
from crossformer_deploy.runtime.classify import Prediction, fill_batch, top_k
from crossformer_deploy.runtime.detect import check_detector, det_inputs, detections, run_detector
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from crossformer_deploy.runtime.segment import check_segmenter, run_segmenter, seg_inputs


def check_image_shape(shape: Sequence[int], info: ModelInfo) -> None:
    """InputSizeError for a batch the model cannot take. ONNX Runtime does not refuse an H of 225 by
    itself (the dynamic graph pads and answers), so the served model checks what the CLI checks."""
    if len(shape) != 4 or shape[1] != 3:
        raise InputSizeError(f"image must be [batch, 3, height, width], got {list(shape)}")
    h, w = shape[2], shape[3]
    if not info.dynamic and (h, w) != tuple(info.input_size):
        raise InputSizeError(f"this model takes {info.input_size[0]}x{info.input_size[1]} images only, got {h}x{w}")
    check_size(h, w, info.stride, "image size")


def decode_image(data: bytes):
    """Encoded bytes -> RGB PIL image via load_image (EXIF orientation, mode conversions); ImageError if
    they do not decode."""
    buf = io.BytesIO(data)
    try:
        return load_image(buf)  # Pillow opens file objects as well as paths
    except ImageError as e:
        raise ImageError(str(e).replace(str(buf), f"request image ({len(data)} bytes)")) from None


class _ServedModel:
    """What the three Python models share: parameters from config.pbtxt, one response per request."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils  # provided by the stub; absent anywhere else

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        self.params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.setup()

    def setup(self) -> None:
        pass

    def execute(self, requests: list) -> list:
        """Answer each request, or give it an error response: an exception raised out of execute() would
        fail every request of the batch, and a bad image in one request must not cost the others."""
        answers = self.answer(requests)
        return [self._response(a) for a in answers]

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        raise NotImplementedError

    def input(self, request, name: str) -> np.ndarray:
        return self.pb.get_input_tensor_by_name(request, name).as_numpy()

    def _response(self, answer: dict[str, np.ndarray] | Exception):
        if isinstance(answer, Exception):
            msg = str(answer) if isinstance(answer, CrossFormerError) else f"{type(answer).__name__}: {answer}"
            return self.pb.InferenceResponse(output_tensors=[], error=self.pb.TritonError(msg))
        return self.pb.InferenceResponse(output_tensors=[self.pb.Tensor(k, v) for k, v in answer.items()])


class RuntimeModel(_ServedModel):
    """The CrossFormer graph (1/model.onnx) on OnnxRuntimeRunner; requests of one size run as one batch."""

    def setup(self) -> None:
        self.runner = OnnxRuntimeRunner(os.path.join(self.version_dir, "model.onnx")).load()
        self.info = ModelInfo.from_props(self.runner.metadata())

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception | None] = [None] * len(requests)
        by_size: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
        for i, request in enumerate(requests):
            try:
                x = self.input(request, "image")
                check_image_shape(x.shape, self.info)
                by_size.setdefault(x.shape[1:], []).append((i, x))
            except Exception as e:  # this request's own fault: answer it with the error
                answers[i] = e
        for items in by_size.values():
            try:
                outs = self.run_batch(np.concatenate([x for _, x in items]))
            except Exception as e:
                for i, _ in items:
                    answers[i] = e
                continue
            start = 0
            for i, x in items:
                answers[i] = {k: v[start:start + len(x)] for k, v in outs.items()}
                start += len(x)
        return answers  # type: ignore[return-value]

    def run_batch(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run a batch; a fixed-batch graph runs it in chunks of its batch, the last one padded."""
        step = self.info.batch
        if step is None:
            return self.runner.run({"image": x})
        parts = [self.runner.run({"image": fill_batch(x[s:s + step], step)}) for s in range(0, len(x), step)]
        return {k: np.concatenate([p[k] for p in parts])[: len(x)] for k in parts[0]}


class PreprocessModel(_ServedModel):
    """Encoded image bytes [batch, 1] -> ``image`` [batch, 3, H, W] with crossformer_deploy's preprocess."""

    def setup(self) -> None:
        p = self.params
        self.size = (int(p["height"]), int(p["width"]))
        self.crop_ratio = float(p["crop_ratio"])
        self.mean, self.std = json.loads(p["mean"]), json.loads(p["std"])

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                images = [self.preprocess(b) for b in self.input(request, "image_bytes").reshape(-1)]
                answers.append({"image": np.stack(images)})
            except Exception as e:
                answers.append(e)
        return answers

    def preprocess(self, data: bytes) -> np.ndarray:
        return preprocess(decode_image(bytes(data)), self.size, self.crop_ratio, self.mean, self.std)


class PostprocessModel(_ServedModel):
    """``logits`` -> top-k: labels (JSON per image, crossformer-infer's format), probabilities, class ids."""

    def setup(self) -> None:
        self.k = int(self.params["topk"])
        self.names = class_names(int(self.params["num_classes"]))

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                answers.append(self.top_k(self.input(request, "logits")))
            except Exception as e:
                answers.append(e)
        return answers

    def top_k(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        rows = top_k(logits, self.k, self.names)
        labels = [json.dumps(Prediction("", row).to_json()["topk"]).encode() for row in rows]
        return {"labels": np.array(labels, dtype=object).reshape(-1, 1),
                "probabilities": np.array([[p for _, _, p in row] for row in rows], np.float32),
                "class_ids": np.array([[c for c, _, _ in row] for row in rows], np.int64)}



class SegmentModel(_ServedModel):
    """A segmenter, image in, class map out: encoded bytes [1] -> AlignResize and mean/std (base/seg_preprocess.py,
    what crossformer-infer --task seg does) -> the graph (1/model.onnx) -> ``class_map`` [H0, W0] (int64) at the
    image's own size. One image a request: every image has its own input size."""

    def setup(self) -> None:
        self.runner = OnnxRuntimeRunner(os.path.join(self.version_dir, "model.onnx")).load()
        self.info = ModelInfo.from_props(self.runner.metadata())
        check_segmenter(self.info, "1/model.onnx")

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                answers.append({"class_map": self.segment(self.input(request, "image_bytes").reshape(-1))})
            except Exception as e:
                answers.append(e)
        return answers

    def segment(self, data: np.ndarray) -> np.ndarray:
        if len(data) != 1:
            raise InputSizeError(f"send one encoded image per request (image_bytes [1]), got {len(data)}")
        x, original = seg_inputs(decode_image(bytes(data[0])), self.info)
        return run_segmenter(self.runner, self.info, x[None], original)["class_map"][0]


class DetectModel(_ServedModel):
    """A detector, image in, detections out: encoded bytes [1] -> mmdet's test pipeline (base/det_preprocess.py,
    what crossformer-infer --task det does) -> the graph (1/model.onnx) -> the image's detections by descending
    score: ``dets`` [N, 5] (x1, y1, x2, y2, score in the image's pixels), ``labels`` [N], ``names`` [N] and, for
    Mask R-CNN, ``masks`` [N, H0, W0] uint8 pasted at the image's size. Every detection the graph keeps (score >
    0.05); an image with none gets N = 0. One image a request: every image has its own input size."""

    def setup(self) -> None:
        self.runner = OnnxRuntimeRunner(os.path.join(self.version_dir, "model.onnx")).load()
        self.info = ModelInfo.from_props(self.runner.metadata())
        check_detector(self.info, "1/model.onnx")
        self.names = det_class_names(self.info.num_classes)

    def answer(self, requests: list) -> list[dict[str, np.ndarray] | Exception]:
        answers: list[dict[str, np.ndarray] | Exception] = []
        for request in requests:
            try:
                answers.append(self.detect(self.input(request, "image_bytes").reshape(-1)))
            except Exception as e:
                answers.append(e)
        return answers

    def detect(self, data: np.ndarray) -> dict[str, np.ndarray]:
        if len(data) != 1:
            raise InputSizeError(f"send one encoded image per request (image_bytes [1]), got {len(data)}")
        x, row = det_inputs(decode_image(bytes(data[0])), self.info)
        image, image_size = det_batch([(x, row)], self.info.stride)
        out = run_detector(self.runner, self.info, image, image_size)
        size = (int(row[2]), int(row[3]))
        found = detections(out, 0, size, self.names, score_thr=0.0)
        answer = {"dets": np.array([[*d.box, d.score] for d in found], np.float32).reshape(-1, 5),
                  "labels": np.array([d.label for d in found], np.int64),
                  "names": np.array([d.name.encode() for d in found], dtype=object)}
        if "masks" in out:
            answer["masks"] = (np.stack([d.mask for d in found]).astype(np.uint8) if found
                               else np.zeros((0, *size), np.uint8))
        return answer
