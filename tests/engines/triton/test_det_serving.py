"""A detector on Triton's Python backend (engines/triton/serving.DetectModel), driven through the stand-in of the
stub's module: each photo answered with crossformer-infer --task det's detections, bad requests with an error."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient is not installed")

from crossformer_deploy.engines.open_model import read_model_info
from crossformer_deploy.engines.triton.repository import write_repository
from crossformer_deploy.engines.triton.serving import DetectModel
from crossformer_deploy.runtime.detect import detect
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from tests.engines.triton.test_serving import load_served, request
from tests.helpers import SAMPLES


def test_detect_model_answers_each_request(small_det_onnx, tmp_path, monkeypatch):
    want = {r.image: r.detections for r in detect(OnnxRuntimeRunner(small_det_onnx), read_model_info(small_det_onnx),
                                                   SAMPLES[:2], score_thr=0.0)}
    write_repository(small_det_onnx, "det", tmp_path, kind="python")
    model = load_served(DetectModel, tmp_path / "det", monkeypatch)
    jpeg = [np.array([open(p, "rb").read()], dtype=object) for p in SAMPLES[:2]]
    out = model.execute([request("image_bytes", jpeg[0]), request("image_bytes", np.array([b"\xff\xd8 junk"], object)),
                         request("image_bytes", np.concatenate(jpeg)), request("image_bytes", jpeg[1])])
    for answer, path in ((out[0], SAMPLES[0]), (out[3], SAMPLES[1])):
        assert answer.error is None and set(answer.outputs) == {"dets", "labels", "names"}
        dets = want[path]
        assert len(dets) >= 1 and answer.outputs["dets"].shape == (len(dets), 5)
        np.testing.assert_array_equal(answer.outputs["dets"], [[*d.box, d.score] for d in dets])
        assert answer.outputs["labels"].tolist() == [d.label for d in dets]
        assert [n.decode() for n in answer.outputs["names"]] == [d.name for d in dets]
    assert "request image (7 bytes)" in out[1].error and not out[1].outputs
    assert "one encoded image per request" in out[2].error
