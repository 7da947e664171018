"""Triton model repositories: every config.pbtxt parses as Triton's ModelConfig, and the Python-backend +
ensemble repository is served by a real tritonserver (from nvidia-pytriton) and answers like the local runtime.

The serving tests need tritonclient[http,grpc] here and build (once, cached) the stub's Python env with
crossformer_deploy.engines.triton_env (PyPI access the first time); without them they skip, saying why.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from crossformer_deploy.engines.identity import EngineIdentity, write_sidecar
from crossformer_deploy.engines.profiles import Profile
from crossformer_deploy.engines.triton_repo import (
    PostprocessModel,
    PreprocessModel,
    RuntimeModel,
    write_repository,
)
from crossformer_deploy.errors import UsageError
from crossformer_deploy.export.metadata import ModelInfo
from crossformer_deploy.runtime.classify import classify
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from crossformer_deploy.runtime.open import read_model_info
from crossformer_deploy.runtime.preprocess import load_batch

NO_CLIENT = "tritonclient[grpc] is not installed (pip install 'tritonclient[http,grpc]')"
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason=NO_CLIENT)
from google.protobuf import json_format, text_format  # noqa: E402  (after the skip: tritonclient brings protobuf)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = [os.path.join(ROOT, "samples", f) for f in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
SERVER_START_S = 120
REQUESTS = 20


# ------------------------------------------------------------------------------------------------
# models to generate repositories from
# ------------------------------------------------------------------------------------------------

def export(golden_ckpt: str, path: str, *extra: str) -> str:
    r = subprocess.run([sys.executable, "-m", "crossformer_deploy.cli.export_cmd", "--weights", golden_ckpt,
                        *extra, "-o", path], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory, golden_ckpt) -> str:
    return export(golden_ckpt, str(tmp_path_factory.mktemp("triton") / "tiny.onnx"))


@pytest.fixture(scope="module")
def tiny_static(tmp_path_factory, golden_ckpt) -> str:
    return export(golden_ckpt, str(tmp_path_factory.mktemp("triton") / "static.onnx"), "--static", "224x224",
                  "--batch", "2")


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
                   "NOT run here", "TensorRT 10.13.0"):
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

    monkeypatch.setattr("crossformer_deploy.engines.triton_repo.shutil.copyfile", broken_copy)
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


# ------------------------------------------------------------------------------------------------
# the Python models in-process, with a stand-in for the stub's triton_python_backend_utils
# ------------------------------------------------------------------------------------------------

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


def test_python_models_answer_each_request(tiny_onnx, tiny_static, tmp_path, monkeypatch):
    x = load_batch(SAMPLES, (224, 224))
    ref = OnnxRuntimeRunner(tiny_onnx).run({"image": x})["logits"]
    write_repository(tiny_onnx, "m", tmp_path, kind="python", with_preprocess=True)
    model = load_served(RuntimeModel, tmp_path / "m", monkeypatch)
    # requests of two sizes and a bad one in one execute(): each is answered, the bad one with an error
    out = model.execute([request("image", x[:2]), request("image", np.zeros((1, 3, 225, 224), np.float32)),
                         request("image", x[2:]), request("image", np.zeros((1, 3, 256, 320), np.float32))])
    np.testing.assert_allclose(out[0].outputs["logits"], ref[:2], atol=1e-5)
    assert out[1].error and "multiples of 32" in out[1].error and not out[1].outputs
    np.testing.assert_allclose(out[2].outputs["logits"], ref[2:], atol=1e-5)
    assert out[3].outputs["logits"].shape == (1, 10) and out[3].error is None
    # a graph fixed at batch 2 serves a batch of 3 (chunks, the last one padded)
    write_repository(tiny_static, "s", tmp_path, kind="python")
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


def test_model_py_imports_without_torch(tiny_onnx, tmp_path):
    """The stub's env has no torch: the generated model.py must import with torch unavailable."""
    write_repository(tiny_onnx, "m", tmp_path, kind="python", with_preprocess=True)
    code = ("import sys, runpy; sys.modules['torch'] = None\n"  # None: `import torch` raises ImportError
            "for f in sys.argv[1:]:\n    assert 'TritonPythonModel' in runpy.run_path(f), f\n"
            "assert not any(m == 'torch' or m.startswith('torch.') for m in sys.modules if sys.modules[m])")
    files = [str(tmp_path / m / "1" / "model.py") for m in ("m", "m_preprocess", "m_postprocess")]
    r = subprocess.run([sys.executable, "-c", code, *files], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------------
# a real tritonserver on loopback
# ------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def triton_env():
    pytest.importorskip("tritonclient.http", reason="tritonclient[http] is not installed")
    pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] is not installed")
    from crossformer_deploy.engines.triton_env import ensure_env

    try:
        env = ensure_env()
    except UsageError as e:  # no PyPI, or no stub for this Python: say exactly what
        pytest.skip(f"no Triton serving env: {e}")
    missing = env.missing_libraries()
    if missing:
        pytest.skip(f"tritonserver cannot start here, missing shared libraries: {', '.join(missing)}")
    return env


@pytest.fixture(scope="module")
def server(triton_env, tiny_onnx, tmp_path_factory):
    import tritonclient.http as httpclient

    work = tmp_path_factory.mktemp("served")
    write_repository(tiny_onnx, "tiny", work / "repo", kind="python", with_preprocess=True, max_batch=8)
    http_port, grpc_port = free_port(), free_port()
    log_path = work / "tritonserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(triton_env.command(str(work / "repo"), http_port, grpc_port), env=triton_env.environ(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, httpclient.InferenceServerClient(f"127.0.0.1:{http_port}"), log_path)
        yield types.SimpleNamespace(http=f"127.0.0.1:{http_port}", grpc=f"127.0.0.1:{grpc_port}", log=log_path)
    finally:
        stop(proc)


def wait_ready(proc: subprocess.Popen, client, log_path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"tritonserver exited with {proc.returncode}:\n{tail(log_path)}")
        with contextlib.suppress(Exception):  # connection refused until the endpoints are up
            if client.is_server_ready():
                return
        time.sleep(0.5)
    pytest.fail(f"tritonserver not ready after {SERVER_START_S} s:\n{tail(log_path)}")


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM (Triton unloads the models and stops their stubs), then SIGKILL the server's own process
    group (it and the stubs it started) if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def tail(path, n: int = 40) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return "".join(f.readlines()[-n:])


@pytest.fixture(scope="module")
def clients(server):
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    return {"http": (httpclient, httpclient.InferenceServerClient(server.http, network_timeout=60)),
            "grpc": (grpcclient, grpcclient.InferenceServerClient(server.grpc))}


def infer(clients, protocol: str, model: str, name: str, array: np.ndarray, datatype: str = "FP32"):
    module, client = clients[protocol]
    inp = module.InferInput(name, list(array.shape), datatype)
    inp.set_data_from_numpy(array)
    return client.infer(model, [inp])


@pytest.fixture(scope="module")
def local(tiny_onnx):
    """The answers of the in-process runtime, on the same ONNX and images."""
    runner = OnnxRuntimeRunner(tiny_onnx).load()
    x = load_batch(SAMPLES, (224, 224))
    wide = load_batch(SAMPLES[:2], (256, 320))
    preds = classify(runner, read_model_info(tiny_onnx), SAMPLES, (224, 224), topk=5)
    return types.SimpleNamespace(runner=runner, x=x, logits=runner.run({"image": x})["logits"], wide=wide,
                                 wide_logits=runner.run({"image": wide})["logits"], preds=preds)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_logits_match_runtime(clients, local, protocol):
    got = infer(clients, protocol, "tiny", "image", local.x).as_numpy("logits")
    assert got is not None and got.shape == local.logits.shape  # DESIGN.md §5: numpy 2 gave empty outputs
    np.testing.assert_allclose(got, local.logits, atol=1e-5, rtol=0)
    got = infer(clients, protocol, "tiny", "image", local.wide).as_numpy("logits")  # another size, same model
    np.testing.assert_allclose(got, local.wide_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_ensemble_matches_classify(clients, local, protocol):
    data = np.array([[open(p, "rb").read()] for p in SAMPLES], dtype=object)
    r = infer(clients, protocol, "tiny_ensemble", "image_bytes", data, "BYTES")
    labels = [json.loads(row[0]) for row in r.as_numpy("labels")]
    assert labels == [p.to_json()["topk"] for p in local.preds]
    np.testing.assert_allclose(r.as_numpy("probabilities"), [[t[2] for t in p.topk] for p in local.preds],
                               atol=1e-5, rtol=0)
    np.testing.assert_array_equal(r.as_numpy("class_ids"), [[t[0] for t in p.topk] for p in local.preds])


def test_concurrent_requests_are_batched_correctly(server, local):
    """Single-image requests in flight together (the dynamic batcher hands several to one execute())."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(server.http, concurrency=len(SAMPLES) * 2, network_timeout=60)
    pending = []
    for i in list(range(len(SAMPLES))) * 2:
        inp = httpclient.InferInput("image", [1, 3, 224, 224], "FP32")
        inp.set_data_from_numpy(local.x[i:i + 1])
        pending.append((i, client.async_infer("tiny", [inp])))
    for i, req in pending:
        np.testing.assert_allclose(req.get_result().as_numpy("logits")[0], local.logits[i], atol=1e-5, rtol=0)
    client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_bad_requests_get_errors_and_server_survives(clients, local, protocol):
    module, client = clients[protocol]
    with pytest.raises(module.InferenceServerException, match="multiples of 32, got 225x224"):
        infer(clients, protocol, "tiny", "image", np.zeros((1, 3, 225, 224), np.float32))
    corrupt = np.array([[b"\xff\xd8\xff\xe0 not really a jpeg"]], dtype=object)
    with pytest.raises(module.InferenceServerException, match="request image"):
        infer(clients, protocol, "tiny_ensemble", "image_bytes", corrupt, "BYTES")
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny") and client.is_model_ready("tiny_preprocess")
    got = infer(clients, protocol, "tiny", "image", local.x[:1]).as_numpy("logits")
    np.testing.assert_allclose(got, local.logits[:1], atol=1e-5, rtol=0)


def test_latency_in_process_vs_triton(clients, local, capsys):
    """Printed, never asserted: the machine is shared and timings vary. The paths take turns within each
    round so that load from other processes falls on all of them alike."""
    x = local.x[:1]
    jpeg = np.array([[open(SAMPLES[0], "rb").read()]], dtype=object)
    paths = {"in-process": lambda: local.runner.run({"image": x}),
             "Triton HTTP": lambda: infer(clients, "http", "tiny", "image", x),
             "Triton gRPC": lambda: infer(clients, "grpc", "tiny", "image", x),
             "gRPC ensemble from JPEG bytes": lambda: infer(clients, "grpc", "tiny_ensemble", "image_bytes", jpeg,
                                                            "BYTES")}
    times: dict[str, list[float]] = {k: [] for k in paths}
    for call in paths.values():
        call()  # warm-up
    for _ in range(REQUESTS):
        for name, call in paths.items():
            t0 = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - t0) * 1e3)
    ms = {k: statistics.median(v) for k, v in times.items()}
    base = ms["in-process"]
    with capsys.disabled():
        print(f"\n[triton latency] tiny CrossFormer, batch 1, 224x224, median of {REQUESTS} requests each: "
              + " | ".join(f"{k} {v:.2f} ms ({v / base:.2f}x)" for k, v in ms.items()))
