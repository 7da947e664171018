"""The Python-backend + ensemble repository served by a real tritonserver (from nvidia-pytriton), answering like
the local runtime. Needs tritonclient[http,grpc] here and builds (once, cached) the stub's Python env with
crossformer_deploy.engines.triton.env (PyPI access the first time); without them the tests skip, saying why.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import time
import types

import numpy as np
import pytest

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.images import load_batch
from crossformer_deploy.engines.open_model import read_model_info
from crossformer_deploy.engines.triton.repository import write_repository
from crossformer_deploy.runtime.classify import classify
from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner
from tests.helpers import SAMPLES

NO_CLIENT = "tritonclient[grpc] is not installed (pip install 'tritonclient[http,grpc]')"
model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason=NO_CLIENT)


SERVER_START_S = 120
REQUESTS = 20


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
    from crossformer_deploy.engines.triton.env import ensure_env

    try:
        env = ensure_env()
    except UsageError as e:  # no PyPI, or no stub for this Python: say exactly what
        pytest.skip(f"no Triton serving env: {e}")
    missing = env.missing_libraries()
    if missing:
        pytest.skip(f"tritonserver cannot start here, missing shared libraries: {', '.join(missing)}")
    return env


@pytest.fixture(scope="module")
def server(triton_env, tiny_onnx, fpn_onnx, tmp_path_factory):
    import tritonclient.http as httpclient

    work = tmp_path_factory.mktemp("served")
    write_repository(tiny_onnx, "tiny", work / "repo", kind="python", with_preprocess=True, max_batch=8)
    write_repository(fpn_onnx, "seg", work / "repo", kind="python")
    http_port, grpc_port = free_port(), free_port()
    log_path = work / "tritonserver.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(triton_env.command(str(work / "repo"), http_port, grpc_port), env=triton_env.environ(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=work)
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
    assert got is not None and got.shape == local.logits.shape  # docs/triton.md: numpy 2 gave empty outputs
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


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_segmenter_matches_infer(clients, fpn_onnx, protocol):
    """A segmenter served image in, class map out: crossformer-infer --task seg's map for each photo."""
    from crossformer_deploy.runtime.segment import segment

    for s in segment(OnnxRuntimeRunner(fpn_onnx), read_model_info(fpn_onnx), SAMPLES[:2]):
        data = np.array([open(s.image, "rb").read()], dtype=object)
        got = infer(clients, protocol, "seg", "image_bytes", data, "BYTES").as_numpy("class_map")
        np.testing.assert_array_equal(got, s.class_map)


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
    with pytest.raises(module.InferenceServerException, match="225x224 is not a multiple of 32"):
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

