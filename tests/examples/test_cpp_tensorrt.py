"""examples/cpp: make_input.py against our preprocessing, and the TensorRT host compiled against a stand-in
of the TensorRT 10 declarations it uses (examples/cpp/stand_in/)."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.engines.support import INFO, fake_engine
from tests.helpers import ROOT, SAMPLE

CPP = os.path.join(ROOT, "examples", "cpp")



# -- examples/cpp ------------------------------------------------------------------------------------------

def test_make_input_matches_our_preprocessing(exports, tmp_path):
    from crossformer_deploy.base.images import load_batch

    raw, labels = str(tmp_path / "x.raw"), str(tmp_path / "labels.txt")
    r = subprocess.run([sys.executable, os.path.join(CPP, "make_input.py"), SAMPLE, "--model", exports["dynamic"],
                        "-o", raw, "--labels", labels], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{raw} 1x3x224x224 --labels {labels}" in r.stdout
    x = np.fromfile(raw, "<f4").reshape(1, 3, 224, 224)
    np.testing.assert_array_equal(x, load_batch([SAMPLE], (224, 224)))
    assert len(open(labels).read().splitlines()) == 10
    # a fixed-batch model (here through an engine's sidecar) gets its batch, padded
    plan = fake_engine(tmp_path, info=dataclasses.replace(INFO, batch=2, dynamic=False))
    r = subprocess.run([sys.executable, os.path.join(CPP, "make_input.py"), SAMPLE, "--model", plan, "-o", raw,
                        "--labels", labels], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    y = np.fromfile(raw, "<f4").reshape(2, 3, 224, 224)
    np.testing.assert_array_equal(y[0], x[0])
    assert not y[1].any()


STAND_IN = os.path.join(CPP, "stand_in")  # the stand-in TensorRT headers and library source


def _cuda_include() -> str | None:
    for base in [os.environ.get("CUDA_HOME"), "/usr/local/cuda", *sorted(
            (os.path.join("/usr/local", d) for d in os.listdir("/usr/local") if d.startswith("cuda-")), reverse=True)]:
        if base and os.path.isfile(os.path.join(base, "include", "cuda_runtime_api.h")):
            return os.path.join(base, "include")
    return None


@pytest.fixture(scope="module")
def mock_tensorrt(tmp_path_factory):
    cuda = _cuda_include()
    if not shutil.which("g++") or cuda is None:
        pytest.skip("needs g++ and the CUDA headers (cuda_runtime_api.h) to compile examples/cpp")
    root = tmp_path_factory.mktemp("mock_tensorrt")
    (root / "include").mkdir()
    (root / "lib").mkdir()
    for header in ("NvInfer.h", "NvInferPlugin.h"):
        shutil.copy(os.path.join(STAND_IN, header), root / "include" / header)
    stub = os.path.join(STAND_IN, "nvinfer_stub.cpp")
    r = subprocess.run(["g++", "-shared", "-fPIC", "-I", str(root / "include"), "-I", cuda, stub,
                        "-o", str(root / "lib" / "libnvinfer.so")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    shutil.copy(root / "lib" / "libnvinfer.so", root / "lib" / "libnvinfer_plugin.so")
    return {"root": root, "cuda": cuda}


def test_cpp_example_compiles_cleanly(mock_tensorrt):
    r = subprocess.run(["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-fsyntax-only",
                        "-DCF_WITH_NVINFER_PLUGIN=1", "-I", str(mock_tensorrt["root"] / "include"),
                        "-I", mock_tensorrt["cuda"], os.path.join(CPP, "classify.cpp")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_cpp_example_cmake_build_and_host_logic(mock_tensorrt, tmp_path):
    if not shutil.which("cmake"):
        pytest.skip("needs cmake")
    build_dir = tmp_path / "build"
    r = subprocess.run(["cmake", "-S", CPP, "-B", str(build_dir), f"-DTensorRT_ROOT={mock_tensorrt['root']}"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode and "CUDAToolkit" in r.stdout + r.stderr:
        pytest.skip("CMake's FindCUDAToolkit found no CUDA toolkit here")
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run(["cmake", "--build", str(build_dir)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    exe = str(build_dir / "classify")
    env = {**os.environ, "LD_LIBRARY_PATH": str(mock_tensorrt["root"] / "lib")}

    def classify(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, timeout=60)

    mock_plan, bad_plan, raw = tmp_path / "m.plan", tmp_path / "bad.plan", tmp_path / "x.raw"
    mock_plan.write_bytes(b"MOCK engine")
    bad_plan.write_bytes(b"garbage")
    np.zeros((1, 3, 224, 224), np.float32).tofile(raw)
    assert classify().returncode == 2 and "usage: classify" in classify().stderr
    r = classify(str(bad_plan), str(raw), "1x3x224x224")
    assert r.returncode == 2 and "classify: error: could not deserialise" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x416x416")
    assert r.returncode == 2 and "shape 1x3x416x416 is outside every optimisation profile" in r.stderr
    r = classify(str(mock_plan), str(raw), "2x3x224x224")
    assert r.returncode == 2 and "holds 602112 bytes, shape 2x3x224x224 needs 1204224" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x224")
    assert r.returncode == 2 and "shape must be BxCxHxW" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x224x224", "--bogus")
    assert r.returncode == 2 and "unknown argument --bogus" in r.stderr
    # past the host-side checks the GPU work starts: no GPU here -> a CUDA error; with one -> 5 lines per image
    r = classify(str(mock_plan), str(raw), "1x3x224x224", "--labels", str(tmp_path / "missing.txt"))
    assert r.returncode == 2 and "cannot open" in r.stderr
    r = classify(str(mock_plan), str(raw), "1x3x224x224")
    assert (r.returncode == 2 and "classify: error: cudaStreamCreate" in r.stderr) or (
        r.returncode == 0 and r.stdout.startswith("image 0")), r.stdout + r.stderr
