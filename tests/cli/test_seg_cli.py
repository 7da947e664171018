"""crossformer-export / -infer / -validate with --task seg through the real commands; bad input: one line, exit 2,
nothing written."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import ROOT, assert_one_line_error, cli

SAMPLES = os.path.join(ROOT, "samples")


def test_export_reads_the_head_and_validate_passes(fpn_onnx, seg_ckpts):
    r = cli("validate", "--model", fpn_onnx, "--weights", seg_ckpts["fpn_tiny_g14"], "--sizes", "160x224",
            "--output-size", "150x210", "--batch", "1,2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] and len(out["cases"]) == 2
    assert all(c["pixel_agreement"] >= 0.9999 and c["max_abs"] <= 1e-4 for c in out["cases"])
    # the default cases: the export size, and 512x704 back to 512x683
    r = cli("validate", "--model", fpn_onnx, "--weights", seg_ckpts["fpn_tiny_g14"])
    assert r.returncode == 0 and "512x683" in r.stdout, r.stdout + r.stderr
    # another checkpoint than the export's: refused
    assert_one_line_error(cli("validate", "--model", fpn_onnx, "--weights", seg_ckpts["upernet_tiny"]),
                          "is not the checkpoint this model was exported from")


def test_infer_writes_class_maps_and_overlays(fpn_onnx, tmp_path):
    out_dir = tmp_path / "seg"
    r = cli("infer", "--task", "seg", SAMPLES, os.path.join(SAMPLES, "chelsea.jpg"), "--model", fpn_onnx,
            "--out-dir", str(out_dir), "--json")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [os.path.basename(x["image"]) for x in records] == ["chelsea.jpg", "coffee.jpg", "rocket.jpg",
                                                                "chelsea.jpg"]
    for rec in records:
        with Image.open(rec["image"]) as im:
            size = im.size
        classes, over = Image.open(rec["class_map"]), Image.open(rec["overlay"])
        assert classes.mode == "P" and classes.size == size and over.size == size and over.mode == "RGB"
        assert np.asarray(classes).max() < 5 and rec["input_size"][0] == 512
    assert sorted(os.listdir(out_dir)) == sorted(f"{s}_{k}.png" for s in ("chelsea", "coffee", "rocket")
                                                 for k in ("classes", "overlay"))


def test_seg_refusals(fpn_onnx, seg_ckpts, golden_ckpt, tiny_onnx, tmp_path):
    out = tmp_path / "x.onnx"
    det = tmp_path / "det.pth"
    sd = torch.load(seg_ckpts["upernet_tiny"], weights_only=False)["state_dict"]
    torch.save({"state_dict": {**sd, "rpn_head.rpn_cls.weight": torch.zeros(3, 256, 1, 1)}}, det)
    for args, words in [
        (["--weights", golden_ckpt], "image classifier checkpoint"),
        (["--weights", str(det)], "detection checkpoint (rpn_head.*)"),
        (["--weights", seg_ckpts["upernet_tiny"], "--head", "fpn"], "holds a UPerNet head"),
        (["--weights", seg_ckpts["upernet_tiny"], "--variant", "s"], "not CrossFormer-S"),
        (["--static", "500x512"], "height 500 is not a multiple of 32 (nearest: 480 or 512)"),
        (["--mode", "backbone"], "--mode and --crop-ratio are for --task classify"),
        (["--grouping", "7,7/x"], "is not G,G,G,G/I,I,I,I"),
    ]:
        r = cli("export", "--task", "seg", *args, "-o", str(out))
        assert_one_line_error(r, words)
        assert not os.path.exists(out) and not [f for f in os.listdir(tmp_path) if f.startswith(".x.onnx")]
    assert_one_line_error(cli("export", "--head", "fpn", "-o", str(out)), "are for --task seg")
    assert_one_line_error(cli("infer", "--task", "seg", SAMPLES, "--model", tiny_onnx, "--out-dir", str(tmp_path)),
                          "is a classifier, not a segmenter")
    assert_one_line_error(cli("infer", SAMPLES, "--model", fpn_onnx), "this model is a segmenter")
    assert_one_line_error(cli("infer", "--task", "seg", SAMPLES, "--model", fpn_onnx, "--size", "224"),
                          "are for classifiers")
    assert_one_line_error(cli("infer", "--task", "seg", SAMPLES, "--model", fpn_onnx, "--out-dir",
                              str(tmp_path / "no" / "such")), "output directory does not exist")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".png")]


def test_triton_repository(fpn_onnx, tmp_path):
    """The ONNX Runtime backend serves a segmenter as the graph is (image + output_size in, class_map out), the
    Python backend image bytes in, class map out; --with-preprocess (a classifier's pipeline) refuses in one line
    and writes nothing."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed")
    from google.protobuf import text_format

    r = cli("triton_repo", "--model", fpn_onnx, "--name", "seg", "--out", str(tmp_path / "repo"))
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "repo" / "seg" / "config.pbtxt", encoding="utf-8") as f:
        text = f.read()
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("image", [-1, 3, -1, -1]), ("output_size", [2])]
    assert (cfg.output[0].name, list(cfg.output[0].dims)) == ("class_map", [-1, -1, -1])
    assert "one request\n# per original size" in text and "fixed at None" not in text
    out = tmp_path / "refused"
    assert_one_line_error(cli("triton_repo", "--model", fpn_onnx, "--name", "seg", "--out", str(out),
                              "--with-preprocess"), "--backend python serves it image in, class map out")
    assert not out.exists()
    # the Python backend: encoded image in, class map out (engines/triton/serving.SegmentModel)
    r = cli("triton_repo", "--model", fpn_onnx, "--name", "segpy", "--out", str(tmp_path / "repo"), "--backend",
            "python")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "repo" / "segpy" / "config.pbtxt", encoding="utf-8") as f:
        cfg = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
    assert cfg.backend == "python" and cfg.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("image_bytes", [1])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("class_map", [-1, -1])]
    with open(tmp_path / "repo" / "segpy" / "1" / "model.py", encoding="utf-8") as f:
        assert "import SegmentModel as TritonPythonModel" in f.read()


def test_int8_export_defaults_to_the_fc1_placement(seg_ckpts, tmp_path):
    """--task seg --int8 quantizes only the MLPs' fc1 unless told otherwise (placement.py), and says so; naming
    --int8-placement all gets every layer int8 and the warning that it missed its bar."""
    import onnx

    from crossformer_deploy.export.onnx_export import read_info

    base = ["export", "--task", "seg", "--weights", seg_ckpts["fpn_tiny_g14"], "--grouping", "14,14,7,7/16,8,2,1",
            "--int8", "--calib", SAMPLES, "--calib-count", "1", "--calib-cache", str(tmp_path / "c.json")]
    for flags, only, words in (([], ["/mlp/fc1/"], "note: INT8 segmenter, placement mlp-fc1"),
                               (["--int8-placement", "all"], None, "warning: INT8 segmenters with every layer")):
        out = tmp_path / f"q{len(flags)}.onnx"
        r = cli(*base, *flags, "-o", str(out))
        assert r.returncode == 0 and words in r.stderr, r.stderr
        assert read_info(onnx.load(str(out))).extra["int8"].get("int8_only") == only
