"""crossformer-bench --task det (bench/det.py) on the small RetinaNet: every backend answers PyTorch's detections,
the report says how it was measured; options that are not for detectors are one line."""
import json

import pytest

from tests.helpers import cli

pytest.importorskip("openvino", reason="openvino is not installed (the openvino extra)")


def test_det_bench_table_and_json(small_det_ckpt, tmp_path):
    out = tmp_path / "det.json"
    r = cli("bench", "--task", "det", "--weights", small_det_ckpt, "--sizes", "96x128", "--batch", "2",
            "--repeats", "1", "--warmup", "0", "--block", "1", "--pause", "0", "--backends", "torch,ort,ov-target-f32",
            "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "detections (score >= 0.05) matched vs PyTorch eager fp32 on random input" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["task"] == "det" and rep["model"] == "retinanet-tiny" and "retinanet_small.pth" in rep["weights"]
    assert rep["command"].startswith("crossformer-bench --task det") and rep["machine"]["cpu"]
    rows = {(row["backend"], row["batch"]): row for row in rep["results"]}
    assert len(rows) == 3
    for (_name, batch), row in rows.items():
        assert row["status"] == "ok", row
        assert row["median_ms"] > 0 and row["images_per_s"] == pytest.approx(batch * 1e3 / row["median_ms"])
        assert row["reference"] >= batch and row["matched"] == 1.0 and row["within_bar"], row
    assert rows[("ov-target-f32", 2)]["graph"] == "OpenVINO: dynamic graph compiled per shape, openvino passes"


def test_det_bench_refuses_what_it_does_not_do(capsys):
    from crossformer_deploy.cli.bench_cmd import main

    base = ["--task", "det", "--variant", "tiny"]
    for extra, words in ((["--recommend", "--calib", "x"], "--recommend, --calib: not for --task det"),
                         (["--backends", "ort,ov-bf16"], "unknown detection backend(s) ov-bf16"),
                         (["--head", "fpn"], "--head is for --task seg")):
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
