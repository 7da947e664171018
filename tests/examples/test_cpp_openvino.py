"""examples/cpp/classify_openvino: built with CMake against the openvino wheel, run for real, equal to Python.

What is checked: the host builds without TensorRT or CUDA; its pixels (decode + Pillow-exact resize and
crop, dumped with --dump-pixels) are bit-equal to crossformer_deploy's preprocessing; its logits equal the
Python OpenVINO runner's on the same input within 1e-4 (CrossFormer-T, dynamic, a batch of 3 at 224 and a
batch of 2 at 256x320; the trained digits model, static 64x64 with a fixed batch of 4, from images, from
--raw and from OpenVINO IR); the digits model names the right digits; bad input is one line on stderr and
a non-zero exit. Skipped only without cmake, g++, the openvino wheel's CMake files, libjpeg or libpng.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from crossformer_deploy.base.images import load_batch, load_image, resize_and_crop
from crossformer_deploy.base.labels import class_names
from crossformer_deploy.runtime.openvino_runner import OpenVINORunner  # imports openvino only when used
from tests.helpers import cli

pytest.importorskip("openvino", reason="the OpenVINO host needs the openvino wheel (its headers and libraries)")


def _repo_root() -> str:
    """The checkout holding examples/cpp, wherever under tests/ this file lives."""
    d = os.path.dirname(os.path.abspath(__file__))
    while not os.path.isdir(os.path.join(d, "examples", "cpp")) and os.path.dirname(d) != d:
        d = os.path.dirname(d)
    return d


ROOT = _repo_root()
CPP = os.path.join(ROOT, "examples", "cpp")
DIGITS_CKPT = os.path.join(ROOT, "examples", "digits", "crossformer_digits.pth")
SAMPLES = [os.path.join(ROOT, "samples", f) for f in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
TOL = 1e-4


def _openvino_cmake_dir() -> str | None:
    import openvino

    d = os.path.join(os.path.dirname(openvino.__file__), "cmake")
    return d if os.path.isfile(os.path.join(d, "OpenVINOConfig.cmake")) else None


@pytest.fixture(scope="session")
def build_started(tmp_path_factory):
    """Configure now and start the build in the background: it compiles while the models are exported."""
    if not (shutil.which("cmake") and shutil.which("g++")):
        pytest.skip("needs cmake and g++")
    ov_dir = _openvino_cmake_dir()
    if ov_dir is None:
        pytest.skip("the openvino wheel has no cmake/OpenVINOConfig.cmake")
    build = tmp_path_factory.mktemp("cpp_openvino")
    # the documented command: OpenVINO alone, no TensorRT_ROOT, no CUDA
    r = subprocess.run(["cmake", "-S", CPP, "-B", str(build), f"-DOpenVINO_DIR={ov_dir}"],
                       capture_output=True, text=True, timeout=300)
    if "classify_openvino not built" in r.stdout:  # libjpeg / libpng development files missing
        pytest.skip(next(line for line in r.stdout.splitlines() if "classify_openvino not built" in line))
    assert r.returncode == 0, r.stdout + r.stderr
    proc = subprocess.Popen(["cmake", "--build", str(build), "-j", str(min(2, os.cpu_count() or 1))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    yield build, proc
    if proc.poll() is None:  # the session ended before the build was waited for: stop it, make and g++ too
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()


@pytest.fixture(scope="session")
def host(build_started) -> str:
    build, proc = build_started
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "warning" not in out.lower(), out  # -Wall -Wextra clean
    return str(build / "classify_openvino")


@pytest.fixture(scope="session")
def t_onnx(build_started, tmp_path_factory) -> str:
    """CrossFormer-T (random weights), dynamic batch and size, exported by the CLI."""
    path = str(tmp_path_factory.mktemp("cpp_t") / "t.onnx")
    r = cli("export", "--variant", "t", "-o", path)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="session")
def digits_onnx(build_started, tmp_path_factory) -> str:
    """The trained digits model as the C++ host meets a fixed graph: static 64x64, batch 4, no crop
    (crop ratio 1: the 64x64 digits go in untouched, as the model was trained)."""
    path = str(tmp_path_factory.mktemp("cpp_digits") / "digits.onnx")
    r = cli("export", "--weights", DIGITS_CKPT, "--static", "64x64", "--batch", "4", "--crop-ratio", "1.0", "-o", path)
    assert r.returncode == 0, r.stderr
    return path


def run(host: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([host, *map(str, args)], capture_output=True, text=True, timeout=300)


def logits_of(r: subprocess.CompletedProcess) -> np.ndarray:
    assert r.returncode == 0, r.stderr
    return np.array([p["logits"] for p in json.loads(r.stdout)], np.float32)


def python_logits(model: str, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """The Python OpenVINO runner on x (in batches of a fixed-batch graph, the last one zero-padded)."""
    bs = batch or len(x)
    out = []
    with OpenVINORunner(model, static_shape=(bs, *x.shape[1:])) as runner:
        for i in range(0, len(x), bs):
            chunk = x[i:i + bs]
            padded = np.concatenate([chunk, np.zeros((bs - len(chunk), *x.shape[1:]), x.dtype)])
            out.append(next(iter(runner.run({"image": padded}).values()))[: len(chunk)])
    return np.concatenate(out)


def one_error_line(r: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1, (r.returncode, r.stderr)
    assert lines[0].startswith("classify_openvino: error: "), lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.mark.parametrize("size", [(224, 224), (256, 320)], ids=["224-b3", "256x320-b2"])
def test_crossformer_t_equals_python(t_onnx, host, tmp_path, size):
    """A dynamic CrossFormer-T at two sizes (square: shorter side to size/0.875; not square: cover), several
    images as one batch: pixels bit-equal, logits within 1e-4 of the Python runner, the same top-5 names."""
    images = SAMPLES if size == (224, 224) else SAMPLES[:2]
    labels, pixels = tmp_path / "labels.txt", tmp_path / "pixels.u8"
    r = subprocess.run([sys.executable, os.path.join(CPP, "write_labels.py"), "--model", t_onnx, "-o", str(labels)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    h, w = size
    r = run(host, t_onnx, *images, "--size", f"{h}x{w}", "--json", "--labels", labels, "--dump-pixels", pixels)
    got = logits_of(r)
    assert "error" not in r.stderr, r.stderr

    px = np.fromfile(pixels, np.uint8).reshape(len(images), h, w, 3)
    for i, path in enumerate(images):
        np.testing.assert_array_equal(px[i], np.asarray(resize_and_crop(load_image(path), size)), err_msg=path)
    want = python_logits(t_onnx, load_batch(images, size))
    assert got.shape == want.shape == (len(images), 1000)
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()
    names = class_names(1000)
    for pred, row in zip(json.loads(r.stdout), want):
        assert [t["class"] for t in pred["topk"]] == list(np.argsort(-row, kind="stable")[:5])
        assert [t["label"] for t in pred["topk"]] == [names[t["class"]] for t in pred["topk"]]


def test_digits_names_the_digit(digits_onnx, host, digits_data, tmp_path):
    """The trained model, static 64x64 and a fixed batch of 4 (10 images: 3 batches, the last padded):
    each digit named, logits equal to Python's, from PNGs, from --raw, and from OpenVINO IR."""
    import openvino as ov

    paths = digits_data.export_image_folder(tmp_path / "digits", "test", limit=10)
    truth = [int(os.path.basename(os.path.dirname(p))) for p in paths]
    x, _ = digits_data.load_split("test")
    x = x[:10].numpy()

    r = run(host, digits_onnx, *paths, "--json", "--topk", "1")
    got = logits_of(r)
    assert [p["topk"][0]["class"] for p in json.loads(r.stdout)] == truth
    assert [p["topk"][0]["label"] for p in json.loads(r.stdout)] == [f"class {d}" for d in truth]
    want = python_logits(digits_onnx, x, batch=4)  # load_split: the model's training input, no resize
    assert np.abs(got - want).max() <= TOL, np.abs(got - want).max()
    assert np.abs(want).max() > 2  # a trained model: logits of a few units, not noise around zero

    raw = tmp_path / "x.raw"
    x.astype("<f4").tofile(raw)
    assert np.abs(logits_of(run(host, digits_onnx, "--raw", raw, "--json")) - want).max() <= TOL

    xml = str(tmp_path / "digits.xml")  # IR keeps the ONNX metadata in its rt_info
    ov.save_model(ov.Core().read_model(digits_onnx), xml, compress_to_fp16=False)
    r = run(host, xml, *paths[:4], "--json", "--repeat", "3")
    assert np.abs(logits_of(r) - want[:4]).max() <= TOL
    assert r.stderr.startswith("classify_openvino: 3 runs of batch 4 at 64x64: median ") and r.stderr.count("\n") == 1

    table = run(host, digits_onnx, paths[0], "--topk", "2").stdout.splitlines()  # crossformer-infer's layout
    assert table[0] == paths[0] and len(table) == 3 and table[1].endswith(f"class {truth[0]} ({truth[0]})")


def test_bad_input_is_one_line(host, digits_onnx, tmp_path):
    good = SAMPLES[0]
    truncated, text, empty_model = tmp_path / "cut.jpg", tmp_path / "notes.png", tmp_path / "empty.onnx"
    truncated.write_bytes(open(good, "rb").read()[:4000])
    text.write_text("not a picture\n")
    empty_model.write_bytes(b"")
    broken_model = tmp_path / "broken.onnx"
    broken_model.write_bytes(open(digits_onnx, "rb").read()[:3000])

    one_error_line(run(host, digits_onnx, truncated), f"corrupt image {truncated}")
    one_error_line(run(host, digits_onnx, text), "not an image (or a format this host", str(text))
    one_error_line(run(host, digits_onnx, tmp_path / "nope.jpg"), "no such file")
    one_error_line(run(host, tmp_path / "missing.onnx", good), f"model file not found: {tmp_path / 'missing.onnx'}")
    one_error_line(run(host, empty_model, good), "model file is empty")
    one_error_line(run(host, broken_model, good), "OpenVINO cannot read this model")
    one_error_line(run(host, digits_onnx, good, "--size", "100"), "height 100 is not a multiple of 32 (nearest: 96 or")
    one_error_line(run(host, digits_onnx, good, "--size", "96"), "size 96x96 is outside this static graph: it takes")
    one_error_line(run(host, digits_onnx, good, "--size", "64xq"), "is not N or HxW")
    one_error_line(run(host, digits_onnx, "--raw", truncated), "not a whole number of 3x64x64 float32 images")
    one_error_line(run(host, digits_onnx, good, "--labels", tmp_path / "nope.txt"), "cannot open labels file")
    one_error_line(run(host, digits_onnx, good, "--bogus"), "unknown argument --bogus")
    # one bad image among good ones: its line, the others classified, exit 1 (crossformer-infer's rule)
    r = run(host, digits_onnx, truncated, good)
    one_error_line(r, "corrupt image", code=1)
    assert r.stdout.startswith(good + "\n")
    assert run(host).returncode == 2 and "usage: classify_openvino" in run(host).stderr
