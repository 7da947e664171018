"""OpenVINO parity on full-size CrossFormer-S with perturbed weights (logits of order 10, not 1e-1).

The tiny model's logits are so small that a 1.1x attention scale moves them by 9e-5 and passes any
fp32 bound; on perturbed S the same bug moves them by 0.12 (measured), far outside the bound below.
"""
import importlib.util

import numpy as np
import pytest

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import export
from crossformer_deploy.model.attention import Attention
from crossformer_deploy.model.factory import build_model
from tests.helpers import k_model, perturb, torch_out

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                reason="openvino is not installed (the openvino extra)")

SIZE = (224, 320)  # not the export size (224x224): OpenVINO reshapes the dynamic graph


@pytest.fixture(scope="module")
def s_model():
    return perturb(build_model("s", seed=0))


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).standard_normal((2, 3, *SIZE), dtype=np.float32)


def _openvino(model, path, x) -> np.ndarray:
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    export(model, path, ModelInfo("s", "classifier", 1000, "perturbed"))
    with OpenVINORunner(path, threads=2, precision_hint="f32") as r:
        return r.run({"image": x})["logits"]


def _excess(got: np.ndarray, ref: np.ndarray, k: float) -> float:
    """max|got - ref| / (k * max|ref|): <= 1 passes the scale-aware bound (see test_model_golden)."""
    return float(np.abs(got - ref).max() / (k * np.abs(ref).max()))


def test_openvino_matches_torch_on_s(s_model, x, tmp_path):
    ref = torch_out(s_model, x)[0]
    assert np.abs(ref).max() > 1.0
    got = _openvino(s_model, str(tmp_path / "s.onnx"), x)
    excess = _excess(got, ref, k_model(s_model.cfg, 3, head=True))
    print(f"OpenVINO vs PyTorch on S: {excess:.4f} of the bound")
    assert excess <= 1.0


def test_the_bound_catches_a_wrong_attention_scale(s_model, x, tmp_path):
    """The bug the tiny model cannot show: every attention's scale 1.1x too large."""
    ref = torch_out(s_model, x)[0]
    scales = {a: a.scale for a in s_model.modules() if isinstance(a, Attention)}
    try:
        for a, scale in scales.items():
            a.scale = scale * 1.1
        got = _openvino(s_model, str(tmp_path / "s_scale.onnx"), x)
    finally:
        for a, scale in scales.items():
            a.scale = scale
    excess = _excess(got, ref, k_model(s_model.cfg, 3, head=True))
    print(f"OpenVINO with a 1.1x attention scale vs PyTorch on S: {excess:.1f}x the bound")
    assert excess > 1.0
