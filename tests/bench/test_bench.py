"""crossformer-bench and the OpenVINO runner, on the tiny model (seconds, not minutes)."""
import importlib.util
import json
import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

from crossformer_deploy.base.errors import InputSizeError, UsageError
from crossformer_deploy.bench import Result, check_backends, format_table, goal, recommend
from crossformer_deploy.bench.run import _ratios
from crossformer_deploy.model.factory import build_model
from tests.helpers import SAMPLE, cli

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (the openvino extra)")
FIELDS = {"size", "batch", "backend", "status", "note", "graph", "precision", "build_s", "median_ms", "p90_ms",
          "images_per_s", "vs_torch", "vs_peer", "max_abs", "cosine", "within_tolerance"}


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
        peer = "ov-f32" if HAS_OPENVINO and rows["ov-f32"]["median_ms"] < rows["ort"]["median_ms"] else "ort"
        assert row["vs_peer"] == pytest.approx(rows[peer]["median_ms"] / row["median_ms"])  # the fastest peer
    # a backend that cannot be built here is a note, not a crash (a GPU box with TensorRT would run it)
    assert rows["tensorrt"]["status"] in ("ok", "skipped")
    assert rep["goal"] == []  # none of our paths in this run: no goal invented
    assert [(r["precision"], r["backend"]) for r in rep["recommendations"]] == [("fp32", min(
        (n for n in backends.split(",")[:-1]), key=lambda n: rows[n]["median_ms"]))]


@needs_openvino
def test_bench_int8_peers_and_recommend(tmp_path):
    """The INT8 peers are NNCF (defaults; head float) and ORT's quantize_static on the peer graph (a plain static
    export: ours stands in without --official), calibrated on the images our INT8 calibrates on; NNCF on our
    openvino-target graph is ours; --recommend names the export command of the fastest path."""
    pytest.importorskip("nncf", reason="NNCF is not installed (the openvino extra)")
    out = tmp_path / "bench.json"
    backends = "ort,ort-qdq-int8,ov-nncf-int8,ov-nncf-int8-head-float,ov-target-nncf-int8,ov-int8,ov-int8-hybrid"
    r = cli("bench", "--variant", "tiny", "--sizes", "64", "--repeats", "1", "--warmup", "0", "--block", "1",
            "--pause", "0", "--backends", backends, "--recommend", "--json", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads(out.read_text())
    rows = {row["backend"]: row for row in rep["results"]}
    peer = "our model (no --official: the authors' code not given), torch.onnx.export 1x3x64x64"
    for name, tail in (("ov-nncf-int8", "nncf.quantize(TRANSFORMER)"),
                       ("ov-nncf-int8-head-float", "nncf.quantize(TRANSFORMER, head float)"),
                       ("ort-qdq-int8", "onnxruntime.quantization.quantize_static (QDQ, defaults)")):
        assert rows[name]["status"] == "ok", rows[name]
        assert peer in rows[name]["graph"] and tail in rows[name]["graph"], rows[name]["graph"]
        assert rows[name]["cosine"] > 0.5
    assert "head float" not in rows["ov-nncf-int8"]["graph"]  # the defaults row is NNCF's defaults
    assert rows["ov-target-nncf-int8"]["graph"].startswith("OpenVINO CPU: plain static Bx3x64x64 -> run_pipeline")
    assert "nncf.quantize(TRANSFORMER, head float)" in rows["ov-target-nncf-int8"]["graph"]
    assert rows["ov-int8-hybrid"]["status"] == "ok" and "quantize_int8 (bf16-hybrid)" in rows["ov-int8-hybrid"]["graph"]
    assert rep["machine"]["nncf"]
    assert "fastest path within each precision's bar on this machine:" in r.stdout
    assert {rec["precision"] for rec in rep["recommendations"]} <= {"fp32", "int8"}
    assert all(rec["export"].startswith("crossformer-export --variant tiny") for rec in rep["recommendations"]
               if rec["backend"] not in ("ort", "ort-qdq-int8", "ov-nncf-int8", "ov-nncf-int8-head-float"))


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
            Result("224x224", 1, "ov-nncf-int8", "ok", median_ms=20.0, p90_ms=21.0, within_tolerance=False),
            Result("224x224", 1, "ort", "ok", median_ms=60.0, p90_ms=61.0, within_tolerance=True),
            Result("224x224", 1, "ort-target", "ok", median_ms=62.0, p90_ms=63.0, within_tolerance=True),
            Result("224x224", 1, "ort-int8", "ok", median_ms=10.0, p90_ms=11.0, within_tolerance=False),
            Result("224x224", 1, "ov-int8", "ok", median_ms=24.0, p90_ms=25.0, within_tolerance=True),
            Result("224x224", 1, "ort-fp16", "skipped", note="emulated, skipped: no avx512_bf16")]
    _ratios(rows)
    # the NNCF peer is fastest but outside its bar: the fastest faithful peer is ov-bf16; ort-int8 is ours and
    # fastest but outside its bar: ov-int8 is our fastest faithful path
    assert [r.vs_peer for r in rows[:2]] == [pytest.approx(30 / 90), 1.0]
    g = goal(rows)
    assert g["best"] == "ov-int8" and g["best_peer"] == "ov-bf16" and g["vs_peer"] == pytest.approx(1.25)
    assert g["met"] and g["ort_target_vs_plain"] == pytest.approx(60 / 62) and g["ort_target_not_slower"]
    report = {"model": "s", "results": [asdict(r) for r in rows], "goal": [g], "profiles": []}
    text = format_table(report)
    assert "outside tolerance" in text and "skipped: emulated, skipped: no avx512_bf16" in text
    assert ("ours ov-int8 is 1.25x the fastest faithful peer ov-bf16 (bar 1.2x): met; ort-target 0.97x plain "
            "ORT (bar 0.95x): met") in text
    rec = {r["precision"]: r for r in recommend(report)}
    assert {p: r["backend"] for p, r in rec.items()} == {"fp32": "ort", "bf16": "ov-bf16", "int8": "ov-int8"}
    assert rec["int8"]["export"] == ("crossformer-export --variant s --weights W --static 224x224 --target openvino "
                                     "--int8 --calib CALIB_DIR -o model.onnx")
    rows[6].within_tolerance = False  # then our fastest faithful path is ort-target, slower than the peer
    g = goal(rows)
    assert g["best"] == "ort-target" and g["vs_peer"] == pytest.approx(30 / 62) and not g["met"]
    rows[4].within_tolerance = False  # no faithful path of ours left: no goal
    assert goal(rows) is None
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        check_backends(["torch", "nope"])


def test_bf16_is_skipped_where_it_would_be_emulated():
    from crossformer_deploy.bench.machine import emulated

    assert emulated("bf16", frozenset({"avx2", "fma"})) == "this CPU has neither avx512_bf16 nor amx_bf16"
    assert emulated("bf16", frozenset({"avx2", "avx512_bf16"})) is None
    assert emulated("bf16", frozenset({"avx2", "amx_bf16"})) is None
    assert emulated("int8", frozenset({"avx2"})) is None and emulated("fp32", frozenset({"avx2"})) is None
    from crossformer_deploy.bench.backends import Context, EmulatedError, build

    zen3 = Context(model=None, graphs=None, threads=2, shape=(1, 3, 64, 64), flags=frozenset({"avx2", "fma"}))
    for name in ("torch-bf16", "ov-bf16", "ov-target-bf16"):
        with pytest.raises(EmulatedError, match="emulated, skipped: this CPU has neither avx512_bf16 nor amx_bf16"):
            build(name, zen3)  # refused before anything is built (model and graphs are None here)


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
    from crossformer_deploy.base.errors import ModelFileError
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


def test_export_args_name_the_int8_placement():
    """--recommend prints the export flags of the winner: the hybrid placement's flag must be among them."""
    from crossformer_deploy.bench.config import BACKENDS
    from crossformer_deploy.bench.graphs import GRAPHS, export_args

    hybrid = export_args(GRAPHS[BACKENDS["ov-int8-hybrid"].graph], "224x224", 8)
    assert "--int8 --calib CALIB_DIR --int8-placement bf16-hybrid" in hybrid and "--target openvino" in hybrid
    assert "--int8-placement" not in export_args(GRAPHS[BACKENDS["ov-int8"].graph], "224x224", 8)
