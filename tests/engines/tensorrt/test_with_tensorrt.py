"""With TensorRT and a GPU (skipped where TensorRT cannot be imported): builds, parity, profiles, the CLI."""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

from crossformer_deploy.base.errors import InputSizeError, UsageError
from crossformer_deploy.engines.tensorrt import device
from crossformer_deploy.engines.tensorrt.build import (
    build,
    build_engine,
)
from crossformer_deploy.engines.tensorrt.sidecar import (
    read_sidecar,
    write_sidecar,
)
from tests.helpers import SAMPLE, cli, one_error_line

# -- with TensorRT and a GPU (skipped where TensorRT cannot be imported) -------------------------------------

@pytest.fixture(scope="module")
def trt_device():
    pytest.importorskip("tensorrt", reason="TensorRT is not installed (download stubs only on this machine)")
    try:
        return device.current_device_identity()
    except UsageError as e:
        pytest.skip(f"TensorRT imports but: {e}")


def _ort(path: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return s.run(None, {"image": x})[0]


def assert_parity(got: np.ndarray, want: np.ndarray, precision: str = "fp32", what: object = "") -> None:
    """ENGINE_TOLERANCES (scale-aware; tests/test_parity_bounds.py shows each one fails real bugs)."""
    from crossformer_deploy.runtime.parity import ENGINE_TOLERANCES, compare

    (c,) = compare({"logits": want}, {"logits": got}, ENGINE_TOLERANCES[precision])
    assert c.passed, (precision, what, c)


@pytest.fixture(scope="module")
def parity_exports(tmp_path_factory):
    """CrossFormer-S with logits of tens of units and a trained-size position bias (helpers.parity_model), as a
    checkpoint and as fp32 / fp16 / int8 graphs for --target tensorrt."""
    import torch

    from tests.helpers import parity_model

    d = tmp_path_factory.mktemp("trt_parity")
    model = parity_model()
    ckpt = str(d / "s.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    out = {"model": model, "dir": d}
    calib = ["--int8", "--calib", os.path.dirname(SAMPLE)]
    for precision, extra in (("fp32", []), ("fp16", ["--fp16"]), ("int8", calib)):
        path = str(d / f"{precision}.onnx")
        r = cli("export", "--weights", ckpt, "--target", "tensorrt", *extra, "-o", path, cache=str(d / "cache"))
        assert r.returncode == 0, r.stderr
        out[precision] = path
    return out


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_tensorrt_parity_on_full_size_model(trt_device, parity_exports, precision, tmp_path):
    """TensorRT (the GroupedAttention plugin in every block) vs PyTorch fp32, bounds that a zeroed position bias
    or LDA run as SDA fail (polygraphy's CreateConfig leaves TF32 off: fp32 engines are fp32)."""
    import torch

    from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner

    plan = str(tmp_path / f"{precision}.plan")
    build(parity_exports[precision], plan, "min:1x224x224,opt:4x224x224,max:4x224x320", cache_dir=str(tmp_path / "c"))
    rng = np.random.default_rng(0)
    with TensorRTRunner(plan) as runner:
        for b, h, w in ((4, 224, 224), (2, 224, 320)):
            x = rng.standard_normal((b, 3, h, w), dtype=np.float32)
            with torch.no_grad():
                want = parity_exports["model"](torch.from_numpy(x)).numpy()
            assert_parity(runner.run({"image": x})["logits"], want, precision, (b, h, w))


def test_tensorrt_build_run_and_parity(trt_device, exports, tmp_path):
    from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner

    plan = str(tmp_path / "dyn.plan")
    cache = str(tmp_path / "cache")
    shapes = "min:1x64x64,opt:2x224x224,max:4x320x448"
    res = build(exports["dynamic"], plan, shapes, cache_dir=cache)
    assert not res.cached and res.identity.device == trt_device
    assert os.path.isfile(os.path.join(cache, "tensorrt", os.listdir(os.path.join(cache, "tensorrt"))[0]))
    rng = np.random.default_rng(0)
    with TensorRTRunner(plan) as runner:
        assert [s.name for s in runner.inputs] == ["image"] and [s.name for s in runner.outputs] == ["logits"]
        # sizes of both small-map switch cases and a non-square one, none of them the export size
        for b, h, w in ((1, 224, 224), (2, 224, 288), (1, 64, 96), (3, 320, 448)):
            x = rng.standard_normal((b, 3, h, w)).astype(np.float32)
            got = runner.run({"image": x})["logits"]
            want = _ort(exports["dynamic"], x)
            assert_parity(got, want, "fp32", (b, h, w))
        with pytest.raises(InputSizeError, match="outside the engine's profile max 4x3x320x448"):
            runner.run({"image": np.zeros((1, 3, 352, 448), np.float32)})
    assert build(exports["dynamic"], str(tmp_path / "again.plan"), shapes, cache_dir=cache).cached


def test_tensorrt_static_and_multi_profile(trt_device, exports, tmp_path):
    from crossformer_deploy.engines.tensorrt.runner import TensorRTRunner

    static_plan = build_engine(exports["static"], str(tmp_path / "static.plan"), cache_dir=str(tmp_path / "c"))
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with TensorRTRunner(static_plan) as r:
        assert_parity(r.run({"image": x})["logits"], _ort(exports["static"], x))
    multi = build_engine(exports["dynamic"], str(tmp_path / "multi.plan"),
                         ["1x224x224", "min:1x64x64,opt:1x96x96,max:2x128x128"], cache_dir=str(tmp_path / "c"))
    with TensorRTRunner(multi) as r:
        for shape in ((1, 3, 224, 224), (2, 3, 64, 96), (1, 3, 224, 224)):  # switches profile and back
            x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
            assert_parity(r.run({"image": x})["logits"], _ort(exports["dynamic"], x), "fp32", shape)


def test_tensorrt_refuses_tampered_sidecar_and_cli_roundtrip(trt_device, exports, tmp_path):
    plan = str(tmp_path / "m.plan")
    r = cli("build_engine", "--onnx", exports["dynamic"], "--engine", plan, cache=str(tmp_path / "c"))
    assert r.returncode == 0, r.stderr
    a = cli("infer", SAMPLE, "--model", plan, "--json", cache=str(tmp_path / "c"))
    b = cli("infer", SAMPLE, "--model", exports["dynamic"], "--json", cache=str(tmp_path / "c"))
    assert a.returncode == 0, a.stderr
    classes = [[t["class"] for t in json.loads(r.stdout)[0]["topk"]] for r in (a, b)]
    assert classes[0] == classes[1]
    side = read_sidecar(plan)
    write_sidecar(plan, side.info, dataclasses.replace(side.identity, tensorrt_version="0.0.1"), side.engine_sha256)
    line = one_error_line(cli("infer", SAMPLE, "--model", plan, cache=str(tmp_path / "c")))
    assert "was built by TensorRT 0.0.1" in line
