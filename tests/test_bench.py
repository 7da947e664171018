"""crossformer-bench and the OpenVINO runner, on the tiny model (seconds, not minutes)."""
import importlib.util
import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

from crossformer_deploy.bench import Result, check_backends, format_table, goal
from crossformer_deploy.errors import InputSizeError, UsageError
from crossformer_deploy.model.factory import build_model

from .helpers import cli
from .test_cli import SAMPLE

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (the openvino extra)")
FIELDS = {"size", "batch", "backend", "status", "note", "graph", "precision", "build_s", "median_ms", "p90_ms",
          "images_per_s", "vs_torch", "vs_ov_bf16", "max_abs", "cosine", "within_tolerance"}


def test_bench_cli_table_and_json(tmp_path):
    backends = "torch,ort,ov-f32,tensorrt" if HAS_OPENVINO else "torch,ort,tensorrt"
    out = tmp_path / "bench.json"
    r = cli("bench", "--variant", "tiny", "--sizes", "64", "--batch", "1", "--repeats", "2", "--warmup", "1",
            "--backends", backends, "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "median ms" in r.stdout and "x torch" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["command"].startswith("crossformer-bench --variant tiny")
    m = rep["machine"]
    assert m["cpu"] and m["logical_cpus"] >= 1 and m["torch"] == torch.__version__
    assert {"amx_tile", "avx512_bf16", "avx512_vnni"} <= set(m["flags"])
    assert (m["openvino"] is not None) == HAS_OPENVINO
    rows = {row["backend"]: row for row in rep["results"]}
    assert list(rows) == backends.split(",")
    for name in backends.split(",")[:-1]:
        row = rows[name]
        assert set(row) == FIELDS and row["status"] == "ok", row
        assert row["size"] == "64x64" and row["batch"] == 1
        assert 0 < row["p90_ms"] and 0 < row["median_ms"] <= row["p90_ms"]
        assert row["images_per_s"] == pytest.approx(1e3 / row["median_ms"])
        assert row["vs_torch"] == pytest.approx(rows["torch"]["median_ms"] / row["median_ms"])
        assert row["max_abs"] <= 1e-4 and row["cosine"] > 0.99999 and row["within_tolerance"], row
        assert row["vs_ov_bf16"] is None  # ov-bf16 was not run: no ratio invented
    # a backend that cannot be built here is a note, not a crash (a GPU box with TensorRT would run it)
    assert rows["tensorrt"]["status"] in ("ok", "skipped")
    assert rep["goal"] == []  # no ov-bf16 reference in this run


def test_bench_bad_arguments(tmp_path, capsys):
    # In-process (main(argv)): these fail before any model is built, so a subprocess would only add start-up.
    from crossformer_deploy.cli.bench_cmd import main

    cases = [(["--backends", "torch,ov-fp64"], ("unknown backend 'ov-fp64'", "ov-bf16")),
             (["--sizes", "65"], ("65 is not a multiple of 32",)),
             (["--json", str(tmp_path / "no" / "x.json")], ("output directory does not exist",)),
             (["--calib", str(tmp_path / "none")], ("not a folder of images",))]
    for args, fragments in cases:
        assert main(["--variant", "tiny", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("crossformer-bench: error: "), err
        assert all(f in err[0] for f in fragments), err[0]


def test_goal_and_table():
    rows = [Result("224x224", 1, "torch", "ok", median_ms=90.0, p90_ms=95.0, within_tolerance=True),
            Result("224x224", 1, "ov-bf16", "ok", median_ms=30.0, p90_ms=31.0, within_tolerance=True),
            Result("224x224", 1, "ort-int8", "ok", median_ms=10.0, p90_ms=11.0, within_tolerance=False),
            Result("224x224", 1, "ov-int8", "ok", median_ms=24.0, p90_ms=25.0, within_tolerance=True),
            Result("224x224", 1, "ort-fp16", "skipped", note="to_fp16 is not available")]
    for r in rows:
        if r.median_ms:
            r.vs_ov_bf16 = 30.0 / r.median_ms
    g = goal(rows)  # ort-int8 is fastest but outside its tolerance: it does not count
    assert g["best"] == "ov-int8" and g["vs_ov_bf16"] == pytest.approx(1.25) and g["met"]
    text = format_table({"results": [asdict(r) for r in rows], "goal": [g], "profiles": []})
    assert "outside tolerance" in text and "skipped: to_fp16 is not available" in text
    assert "best ov-int8 is 1.25x OpenVINO bf16 (bar 1.2x): met" in text
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        check_backends(["torch", "nope"])


def test_openvino_runner_import_and_missing_package(tiny_onnx):
    code = ("import sys; sys.modules['openvino'] = None; "
            "import crossformer_deploy.runtime.openvino_runner as m; m.OpenVINORunner(sys.argv[1])")
    r = subprocess.run([sys.executable, "-c", code, tiny_onnx], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "OpenVINO is not installed: pip install openvino" in r.stderr
    assert "ModuleNotFoundError" not in r.stderr.splitlines()[-1]


@needs_openvino
@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static-reshape"])
def test_openvino_runner_matches_pytorch(tiny_onnx, golden_ckpt, static):
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    model = build_model(None, golden_ckpt)
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 224, 224), (2, 3, 256, 320)]:
        x = rng.standard_normal(shape, dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        with OpenVINORunner(tiny_onnx, threads=2, static_shape=shape if static else None) as r:
            assert r.effective_precision == "f32"
            assert r.inputs[0].shape == (shape if static else (None, 3, None, None))
            got = r.run({"image": x})["logits"]
            assert np.abs(got - ref).max() <= 1e-4, shape
            if static:
                with pytest.raises(InputSizeError, match="height"):
                    r.run({"image": np.zeros((shape[0], 3, 64, 64), np.float32)})


@needs_openvino
def test_openvino_runner_errors(tmp_path, tiny_onnx):
    from crossformer_deploy.errors import ModelFileError
    from crossformer_deploy.runtime.openvino_runner import OpenVINORunner

    with pytest.raises(UsageError, match="unknown OpenVINO precision"):
        OpenVINORunner(tiny_onnx, precision_hint="fp64")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="OpenVINO cannot read"):
        OpenVINORunner(str(junk)).load()
    with pytest.raises(UsageError, match="cannot reshape"):
        OpenVINORunner(tiny_onnx, static_shape=(1, 3, 224)).load()


@needs_openvino
def test_infer_and_validate_with_openvino(tiny_onnx, golden_ckpt):
    ov = cli("infer", SAMPLE, "--model", tiny_onnx, "--provider", "openvino", "--json", "--topk", "3")
    ort = cli("infer", SAMPLE, "--model", tiny_onnx, "--json", "--topk", "3")
    assert ov.returncode == 0 and ort.returncode == 0, ov.stderr + ort.stderr
    a, b = json.loads(ov.stdout)[0]["topk"], json.loads(ort.stdout)[0]["topk"]
    assert [t["class"] for t in a] == [t["class"] for t in b]
    assert all(abs(x["prob"] - y["prob"]) < 1e-5 for x, y in zip(a, b))
    r = cli("validate", "--model", tiny_onnx, "--weights", golden_ckpt, "--provider", "openvino",
            "--sizes", "224,64x96", "--batch", "1,2", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["passed"] and len(rep["cases"]) == 4 and max(c["max_abs"] for c in rep["cases"]) <= 1e-4
