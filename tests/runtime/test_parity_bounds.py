"""The parity bounds engines are held to (``ENGINE_TOLERANCES``) can fail.

The TensorRT parity tests (tests/engines/tensorrt/test_with_tensorrt.py) need TensorRT and a GPU. Their bounds are
shown here, on ONNX Runtime, to pass the faithful export and to fail two real bugs injected into the model before
export: the position bias zeroed, and LDA blocks run as SDA. The model is CrossFormer-S with logits spanning tens of
units and a position bias of a trained model's size (``helpers.parity_model``): on the tiny golden model (logits
~0.3) a 2e-2 bound passed both bugs.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import export
from crossformer_deploy.runtime.parity import ENGINE_TOLERANCES, compare
from tests.helpers import lda_as_sda, ort_session, parity_model, zero_position_bias

FAULTS = {"faithful": lambda m: m, "zeroed position bias": zero_position_bias, "LDA as SDA": lda_as_sda}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """PyTorch reference logits and ONNX Runtime logits of each (faulty) export, at 224 and 224x320."""
    d = tmp_path_factory.mktemp("parity")
    model = parity_model()
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((4, 3, 224, 224), dtype=np.float32),
          rng.standard_normal((2, 3, 224, 320), dtype=np.float32)]
    with torch.no_grad():
        ref = [model(torch.from_numpy(x)).numpy() for x in xs]
    got = {}
    info = ModelInfo(variant="s", mode="classifier", num_classes=1000, weights="test")
    for name, fault in FAULTS.items():
        path = str(d / f"{name.replace(' ', '_')}.onnx")
        export(fault(copy.deepcopy(model)), path, info)
        sess = ort_session(path)
        got[name] = [sess.run(None, {"image": x})[0] for x in xs]
    return ref, got


def test_parity_model_has_logits_of_a_trained_scale(outputs):
    ref, _ = outputs
    assert min(float(r.max() - r.min()) for r in ref) > 10


@pytest.mark.parametrize("precision", list(ENGINE_TOLERANCES))
@pytest.mark.parametrize("fault", list(FAULTS))
def test_engine_bound_passes_faithful_and_fails_faults(outputs, precision, fault):
    ref, got = outputs
    passed = [all(c.passed for c in compare({"logits": r}, {"logits": g}, ENGINE_TOLERANCES[precision]))
              for r, g in zip(ref, got[fault])]
    if fault == "faithful":
        assert all(passed), f"{precision} bound fails a faithful fp32 export"
    else:
        assert not any(passed), f"{precision} bound passes the fault '{fault}'"
