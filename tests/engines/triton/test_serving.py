"""The code Triton's Python backend runs (engines/triton/serving.py), driven through a stand-in of the stub's
``triton_python_backend_utils``: one answer per request, errors for bad ones; model.py imports without torch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from crossformer_deploy.base.images import load_batch
from crossformer_deploy.engines.open_model import read_model_info
from crossformer_deploy.engines.triton.repository import write_repository
from crossformer_deploy.engines.triton.serving import PostprocessModel, PreprocessModel, RuntimeModel, SegmentModel
from crossformer_deploy.runtime.classify import classify
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from tests.helpers import SAMPLES

NO_CLIENT = "tritonclient[grpc] is not installed (pip install 'tritonclient[http,grpc]')"
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason=NO_CLIENT)
from google.protobuf import json_format, text_format  # noqa: E402  (after the skip: tritonclient brings protobuf)

# ------------------------------------------------------------------------------------------------
# the Python models in-process, with a stand-in for the stub's triton_python_backend_utils
# ------------------------------------------------------------------------------------------------

def parse_config(model_dir) -> model_config_pb2.ModelConfig:
    with open(os.path.join(model_dir, "config.pbtxt"), encoding="utf-8") as f:
        return text_format.Parse(f.read(), model_config_pb2.ModelConfig())


def dims(tensor) -> list[int]:
    return list(tensor.dims)


class _Tensor:
    def __init__(self, name: str, array: np.ndarray):
        self.name, self.array = name, array

    def as_numpy(self) -> np.ndarray:
        return self.array


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs = {t.name: t.array for t in output_tensors}
        self.error = error


def fake_pb_utils() -> types.ModuleType:
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor, m.InferenceResponse = _Tensor, _Response
    m.TritonError = lambda msg: msg
    m.get_input_tensor_by_name = lambda request, name: request[name]
    return m


def load_served(cls, model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    config = json_format.MessageToDict(parse_config(model_dir), preserving_proto_field_name=True)
    model = cls()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(model_dir), "model_version": "1"})
    return model


def request(name: str, array: np.ndarray) -> dict:
    return {name: _Tensor(name, array)}


def test_python_models_answer_each_request(tiny_onnx, exports, tmp_path, monkeypatch):
    x = load_batch(SAMPLES, (224, 224))
    ref = OnnxRuntimeRunner(tiny_onnx).run({"image": x})["logits"]
    write_repository(tiny_onnx, "m", tmp_path, kind="python", with_preprocess=True)
    model = load_served(RuntimeModel, tmp_path / "m", monkeypatch)
    # requests of two sizes and a bad one in one execute(): each is answered, the bad one with an error
    out = model.execute([request("image", x[:2]), request("image", np.zeros((1, 3, 225, 224), np.float32)),
                         request("image", x[2:]), request("image", np.zeros((1, 3, 256, 320), np.float32))])
    np.testing.assert_allclose(out[0].outputs["logits"], ref[:2], atol=1e-5)
    assert out[1].error and "not a multiple of 32" in out[1].error and not out[1].outputs
    np.testing.assert_allclose(out[2].outputs["logits"], ref[2:], atol=1e-5)
    assert out[3].outputs["logits"].shape == (1, 10) and out[3].error is None
    # a graph fixed at batch 2 serves a batch of 3 (chunks, the last one padded)
    write_repository(exports["static"], "s", tmp_path, kind="python")
    out = load_served(RuntimeModel, tmp_path / "s", monkeypatch).execute([request("image", x)])
    np.testing.assert_allclose(out[0].outputs["logits"], ref, atol=1e-5)

    pre = load_served(PreprocessModel, tmp_path / "m_preprocess", monkeypatch)
    good = np.array([[open(p, "rb").read()] for p in SAMPLES], dtype=object)
    out = pre.execute([request("image_bytes", good), request("image_bytes", np.array([[b"\xff\xd8 junk"]], object))])
    np.testing.assert_array_equal(out[0].outputs["image"], x)
    assert "request image (7 bytes)" in out[1].error and not out[1].outputs

    post = load_served(PostprocessModel, tmp_path / "m_postprocess", monkeypatch)
    out = post.execute([request("logits", ref)])[0].outputs
    want = classify(OnnxRuntimeRunner(tiny_onnx), read_model_info(tiny_onnx), SAMPLES, (224, 224), topk=5)
    assert [json.loads(s[0]) for s in out["labels"]] == [p.to_json()["topk"] for p in want]
    np.testing.assert_allclose(out["probabilities"], [[t[2] for t in p.topk] for p in want], atol=1e-6)


def test_segment_model_answers_each_request(fpn_onnx, tmp_path, monkeypatch):
    """A segmenter on the Python backend: each JPEG request answered with crossformer-infer --task seg's class map
    (at the photo's own size); corrupt bytes or two images in one request get an error, the others an answer."""
    from crossformer_deploy.runtime.segment import segment

    runner = OnnxRuntimeRunner(fpn_onnx)
    want = {s.image: s.class_map for s in segment(runner, read_model_info(fpn_onnx), SAMPLES[:2])}
    write_repository(fpn_onnx, "seg", tmp_path, kind="python")
    model = load_served(SegmentModel, tmp_path / "seg", monkeypatch)
    jpeg = [np.array([open(p, "rb").read()], dtype=object) for p in SAMPLES[:2]]
    out = model.execute([request("image_bytes", jpeg[0]), request("image_bytes", np.array([b"\xff\xd8 junk"], object)),
                         request("image_bytes", np.concatenate(jpeg)), request("image_bytes", jpeg[1])])
    np.testing.assert_array_equal(out[0].outputs["class_map"], want[SAMPLES[0]])
    assert out[0].outputs["class_map"].dtype == np.int64 and out[0].error is None
    assert "request image (7 bytes)" in out[1].error and not out[1].outputs
    assert "one encoded image per request" in out[2].error
    np.testing.assert_array_equal(out[3].outputs["class_map"], want[SAMPLES[1]])


def test_model_py_imports_without_torch(tiny_onnx, tmp_path):
    """The stub's env has no torch: the generated model.py must import with torch unavailable."""
    write_repository(tiny_onnx, "m", tmp_path, kind="python", with_preprocess=True)
    code = ("import sys, runpy; sys.modules['torch'] = None\n"  # None: `import torch` raises ImportError
            "for f in sys.argv[1:]:\n    assert 'TritonPythonModel' in runpy.run_path(f), f\n"
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m])")
    files = [str(tmp_path / m / "1" / "model.py") for m in ("m", "m_preprocess", "m_postprocess")]
    r = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr

