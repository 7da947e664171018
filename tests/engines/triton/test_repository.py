"""Triton model repositories: every config.pbtxt parses as Triton's ModelConfig; models are written atomically."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.engines.open_model import read_model_info
from crossformer_deploy.engines.tensorrt.profiles import Profile
from crossformer_deploy.engines.tensorrt.sidecar import EngineIdentity, write_sidecar
from crossformer_deploy.engines.triton.repository import (
    write_repository,
)

NO_CLIENT = "tritonclient[grpc] is not installed (pip install 'tritonclient[http,grpc]')"
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason=NO_CLIENT)
from google.protobuf import text_format  # noqa: E402  (after the skip: tritonclient brings protobuf)

# ------------------------------------------------------------------------------------------------
# stand-in models to generate repositories from
# ------------------------------------------------------------------------------------------------

def fake_onnx(path, info: ModelInfo, outputs: dict[str, list], dtype: int = TensorProto.FLOAT) -> str:
    """A stand-in graph (Identity nodes) with our metadata and the declared I/O: enough for the generator."""
    b = "batch" if info.batch is None else info.batch
    h, w = ("height", "width") if info.dynamic else info.input_size
    image = helper.make_tensor_value_info("image", dtype, [b, 3, h, w])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [b, *dims]) for n, dims in outputs.items()]
    nodes = [helper.make_node("Identity", ["image"], [n]) for n in outputs]
    model = helper.make_model(helper.make_graph(nodes, "fake", [image], outs))
    helper.set_model_props(model, info.to_props())
    onnx.save(model, str(path))
    return str(path)


def fake_plan(path, info: ModelInfo, max_batch: int, plugin: str = "abc123") -> str:
    """Engine bytes we never deserialise, plus the sidecar the generator reads (as crossformer-build-engine
    writes it)."""
    path.write_bytes(b"not a real TensorRT plan")
    profile = Profile((1, 224, 224), (8, 224, 224), (max_batch, 384, 384))
    write_sidecar(str(path), info, EngineIdentity("onnx-sha", "10.13.0", "NVIDIA H100 80GB HBM3", "9.0",
                                                  (profile,), "fp16", plugin=plugin))
    return str(path)


def tiny_info(**kw) -> ModelInfo:
    return ModelInfo(**{"variant": "tiny", "mode": "classifier", "num_classes": 10, "weights": "test", **kw})


def parse_config(model_dir) -> model_config_pb2.ModelConfig:
    with open(os.path.join(model_dir, "config.pbtxt"), encoding="utf-8") as f:
        return text_format.Parse(f.read(), model_config_pb2.ModelConfig())


def dims(tensor) -> list[int]:
    return list(tensor.dims)


DT = model_config_pb2.DataType
KIND = model_config_pb2.ModelInstanceGroup.Kind


# ------------------------------------------------------------------------------------------------
# config.pbtxt, parsed back into Triton's ModelConfig
# ------------------------------------------------------------------------------------------------

def test_onnx_repository(tiny_onnx, tmp_path):
    written = write_repository(tiny_onnx, "crossformer_tiny", tmp_path, max_batch=16, instances=2)
    cfg = parse_config(tmp_path / "crossformer_tiny")
    assert cfg.name == "crossformer_tiny" and cfg.platform == "onnxruntime_onnx" and not cfg.backend
    assert cfg.max_batch_size == 16 and cfg.HasField("dynamic_batching")
    (image,), (logits,) = cfg.input, cfg.output
    assert (image.name, image.data_type, dims(image)) == ("image", DT.TYPE_FP32, [3, -1, -1])
    assert (logits.name, logits.data_type, dims(logits)) == ("logits", DT.TYPE_FP32, [10])
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, KIND.KIND_CPU)]
    copied = tmp_path / "crossformer_tiny" / "1" / "model.onnx"
    assert copied.read_bytes() == open(tiny_onnx, "rb").read()
    assert sorted(written) == sorted([str(copied), str(tmp_path / "crossformer_tiny" / "config.pbtxt")])


def test_static_fixed_batch_and_backbone(tmp_path):
    static = fake_onnx(tmp_path / "static.onnx", tiny_info(dynamic=False, batch=2), {"logits": [10]})
    write_repository(static, "fixed", tmp_path / "repo")
    cfg = parse_config(tmp_path / "repo" / "fixed")
    # a fixed batch cannot be batched by Triton: full shapes, max_batch_size 0, no dynamic batcher
    assert cfg.max_batch_size == 0 and not cfg.HasField("dynamic_batching")
    assert dims(cfg.input[0]) == [2, 3, 224, 224] and dims(cfg.output[0]) == [2, 10]
    with pytest.raises(UsageError, match="dynamic-batch"):
        write_repository(static, "fixed2", tmp_path / "repo", with_preprocess=True)
    # the python backend pads fixed batches itself, so it batches
    write_repository(static, "fixed_py", tmp_path / "repo", kind="python")
    cfg = parse_config(tmp_path / "repo" / "fixed_py")
    assert cfg.max_batch_size == 32 and dims(cfg.input[0]) == [3, 224, 224]

    stages = {f"stage{i + 1}": [32 * 2**i, -1, -1] for i in range(4)}
    backbone = fake_onnx(tmp_path / "bb.onnx", tiny_info(mode="backbone"), stages)
    write_repository(backbone, "bb", tmp_path / "repo")
    cfg = parse_config(tmp_path / "repo" / "bb")
    assert {o.name: dims(o) for o in cfg.output} == stages
    with pytest.raises(UsageError, match="backbone"):
        write_repository(backbone, "bb2", tmp_path / "repo", with_preprocess=True)

    half = fake_onnx(tmp_path / "fp16.onnx", tiny_info(precision="fp16"), {"logits": [10]}, TensorProto.FLOAT16)
    write_repository(half, "half", tmp_path / "repo")
    assert parse_config(tmp_path / "repo" / "half").input[0].data_type == DT.TYPE_FP16
    with pytest.raises(UsageError, match="float32 images"):
        write_repository(half, "half2", tmp_path / "repo", with_preprocess=True)


def test_plan_repository(tmp_path):
    plan = fake_plan(tmp_path / "tiny.plan", tiny_info(), max_batch=16)
    assert read_model_info(plan).num_classes == 10
    written = write_repository(plan, "tiny_trt", tmp_path / "repo", with_preprocess=True)
    model = tmp_path / "repo" / "tiny_trt"
    cfg = parse_config(model)
    assert cfg.platform == "tensorrt_plan"
    assert cfg.max_batch_size == 16  # 32 asked, lowered to the engine profile's largest batch
    assert [(g.count, g.kind) for g in cfg.instance_group] == [(1, KIND.KIND_GPU)]
    assert dims(cfg.input[0]) == [3, -1, -1] and dims(cfg.output[0]) == [10]
    text = (model / "config.pbtxt").read_text()
    for needed in ("crossformer::GroupedAttention", "embedded in the plan", "--backend-config=tensorrt,plugins=",
                   "TensorRT 10.13.0"):
        assert needed in text and needed in (model / "README.md").read_text()
    assert (model / "1" / "model.plan").read_bytes() == b"not a real TensorRT plan"
    assert (model / "1" / "model.plan.json").exists() and str(model / "1" / "model.plan") in written
    assert parse_config(tmp_path / "repo" / "tiny_trt_ensemble").max_batch_size == 16
    with pytest.raises(UsageError, match="engine"):
        write_repository(plan, "x", tmp_path / "repo", kind="python")


def test_python_and_ensemble_repository(tiny_onnx, tmp_path):
    write_repository(tiny_onnx, "tiny", tmp_path, kind="python", with_preprocess=True, max_batch=8, topk=3,
                     execution_env="$$TRITON_MODEL_DIRECTORY/env.tar.gz")
    cfgs = {name: parse_config(tmp_path / name) for name in ("tiny", "tiny_preprocess", "tiny_postprocess",
                                                              "tiny_ensemble")}
    for name in ("tiny", "tiny_preprocess", "tiny_postprocess"):
        cfg = cfgs[name]
        assert cfg.backend == "python" and cfg.max_batch_size == 8
        assert cfg.parameters["EXECUTION_ENV_PATH"].string_value == "$$TRITON_MODEL_DIRECTORY/env.tar.gz"
        source = (tmp_path / name / "1" / "model.py").read_text()
        compile(source, "model.py", "exec")
        assert "import torch" not in source
    assert (tmp_path / "tiny" / "1" / "model.onnx").exists()
    pre, post, ens = cfgs["tiny_preprocess"], cfgs["tiny_postprocess"], cfgs["tiny_ensemble"]
    assert (pre.input[0].name, pre.input[0].data_type, dims(pre.input[0])) == ("image_bytes", DT.TYPE_STRING, [1])
    assert (pre.output[0].name, dims(pre.output[0])) == ("image", [3, 224, 224])
    assert pre.parameters["height"].string_value == "224" and json.loads(pre.parameters["mean"].string_value)
    assert [(o.name, o.data_type, dims(o)) for o in post.output] == [
        ("labels", DT.TYPE_STRING, [1]), ("probabilities", DT.TYPE_FP32, [3]), ("class_ids", DT.TYPE_INT64, [3])]
    assert ens.platform == "ensemble" and ens.max_batch_size == 8
    assert [o.name for o in ens.output] == ["labels", "probabilities", "class_ids"]
    steps = ens.ensemble_scheduling.step
    assert [s.model_name for s in steps] == ["tiny_preprocess", "tiny", "tiny_postprocess"]
    assert dict(steps[0].output_map) == {"image": "image"} and dict(steps[1].input_map) == {"image": "image"}
    assert dict(steps[1].output_map) == {"logits": "logits"} and dict(steps[2].input_map) == {"logits": "logits"}
    assert (tmp_path / "tiny_ensemble" / "1").is_dir()
    # without an env tarball: no EXECUTION_ENV_PATH, and the config says the stub uses python3 from PATH
    write_repository(tiny_onnx, "plain", tmp_path, kind="python")
    assert "EXECUTION_ENV_PATH" not in parse_config(tmp_path / "plain").parameters
    assert "first python3 on tritonserver's PATH" in (tmp_path / "plain" / "config.pbtxt").read_text()


def test_overwrite_and_atomic_write(tiny_onnx, tmp_path, monkeypatch):
    write_repository(tiny_onnx, "m", tmp_path)
    with pytest.raises(UsageError, match="already exists; pass --overwrite"):
        write_repository(tiny_onnx, "m", tmp_path, kind="python")
    write_repository(tiny_onnx, "m", tmp_path, kind="python", overwrite=True)
    assert parse_config(tmp_path / "m").backend == "python"

    def broken_copy(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("crossformer_deploy.engines.triton.repository.shutil.copyfile", broken_copy)
    with pytest.raises(OSError):
        write_repository(tiny_onnx, "m", tmp_path, overwrite=True)
    with pytest.raises(OSError):
        write_repository(tiny_onnx, "new", tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no half-written model, no staging dir left behind
    assert parse_config(tmp_path / "m").backend == "python"  # the old model is untouched


def test_cli(tiny_onnx, tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "crossformer_deploy.cli.triton_repo_cmd", *args],
                              capture_output=True, text=True, timeout=120)

    r = run("--model", tiny_onnx, "--name", "cf", "--out", str(tmp_path), "--backend", "python", "--with-preprocess")
    assert r.returncode == 0, r.stderr
    assert "cf, cf_ensemble, cf_postprocess, cf_preprocess" in r.stdout
    for args, fragment in [(("--name", "cf"), "already exists"), (("--name", "bad name"), "model name"),
                           (("--name", "x", "--backend", "tensorrt"), "needs an engine")]:
        r = run("--model", tiny_onnx, "--out", str(tmp_path), *args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and fragment in lines[0], r.stderr
    r = run("--model", str(tmp_path / "missing.onnx"), "--name", "x", "--out", str(tmp_path))
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr

