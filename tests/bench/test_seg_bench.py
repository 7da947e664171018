"""crossformer-bench --task seg (bench/seg.py) on the tiny segmenter: every backend answers PyTorch's class map,
the report says how it was measured; options that are not for segmenters are one line."""
import json
import os

import pytest

from tests.helpers import ROOT, assert_one_line_error, cli

pytest.importorskip("openvino", reason="openvino is not installed (the openvino extra)")


def test_seg_bench_table_and_json(tmp_path):
    out = tmp_path / "seg.json"
    r = cli("bench", "--task", "seg", "--variant", "tiny", "--head", "fpn", "--sizes", "160x224", "--batch", "1,2",
            "--repeats", "1", "--warmup", "0", "--block", "1", "--pause", "0", "--backends",
            "torch,ort,ort-target,ov-f32,ov-target-f32", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "class map pixels and logits vs PyTorch eager fp32" in r.stdout
    rep = json.loads(out.read_text())
    assert rep["task"] == "seg" and rep["model"] == "fpn-tiny" and "conv_seg fitted" in rep["weights"]
    assert rep["command"].startswith("crossformer-bench --task seg") and rep["machine"]["cpu"]
    rows = {(row["backend"], row["batch"]): row for row in rep["results"]}
    assert len(rows) == 10
    for (_name, batch), row in rows.items():
        assert row["status"] == "ok", row
        assert row["median_ms"] > 0 and row["images_per_s"] == pytest.approx(batch * 1e3 / row["median_ms"])
        assert row["pixels"] >= 0.9999 and row["max_abs"] <= 1e-3 and row["within_bar"], row
    assert rows[("ov-target-f32", 1)]["graph"] == "OpenVINO: dynamic graph compiled per shape, openvino passes"
    assert rows[("torch", 1)]["vs_torch"] == 1.0


def test_seg_bench_refuses_what_it_does_not_do(tmp_path):
    base = ["bench", "--task", "seg", "--variant", "tiny", "--head", "fpn"]
    assert_one_line_error(cli(*base, "--recommend", "--profile"), "--profile, --recommend: not for --task seg")
    assert_one_line_error(cli(*base, "--backends", "ort,ov-int9"), "unknown segmentation backend(s) ov-int9")
    assert_one_line_error(cli(*base, "--calib", str(tmp_path / "none")), "--calib")
    assert_one_line_error(cli("bench", "--variant", "tiny", "--head", "fpn"), "--head is for --task seg")


def test_seg_bench_int8_paths(tmp_path):
    """The INT8 backends build the export's INT8 graphs (the segmenters' default placement, and all) from --calib
    images and are scored against the 98 % pixel bar."""
    out = tmp_path / "seg.json"
    r = cli("bench", "--task", "seg", "--variant", "tiny", "--head", "upernet", "--sizes", "160x224", "--repeats", "1",
            "--warmup", "0", "--block", "1", "--pause", "0", "--backends", "torch,ort-int8,ov-int8,ov-int8-all",
            "--calib", os.path.join(ROOT, "samples"), "--json", str(out))
    assert r.returncode == 0, r.stderr
    rows = {row["backend"]: row for row in json.loads(out.read_text())["results"]}
    for name in ("ort-int8", "ov-int8", "ov-int8-all"):
        row = rows[name]
        assert row["status"] == "ok" and row["precision"] == "int8" and row["median_ms"] > 0, row
        assert 0.5 < row["pixels"] <= 1.0 and row["within_bar"] == (row["pixels"] >= 0.98), row
    assert rows["ov-int8"]["graph"].endswith("INT8 (mlp-fc1 placement)")
    assert rows["ov-int8-all"]["graph"].endswith("INT8 (all placement)")
    # two placements, two graphs: the logits differ (the same graph twice would give the same numbers)
    assert rows["ov-int8"]["max_abs"] != rows["ov-int8-all"]["max_abs"]
