"""crossformer-export / -infer / -validate / -triton-repo / -bench with --task det, on a small RetinaNet whose
classifier has a trained detector's score spread (tests/helpers.small_detector); bad input: one line, exit 2,
nothing written."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from crossformer_deploy.base.coco import COCO_NAMES
from crossformer_deploy.base.det_preprocess import det_preprocess
from crossformer_deploy.base.images import load_image
from crossformer_deploy.cli import export_cmd, infer_cmd, validate_cmd
from crossformer_deploy.model.det import create_detector
from tests.helpers import (
    DET_SCALE_SMALL,
    ROOT,
    SAMPLES,
    assert_one_line_error,
    cli,
    small_detector,
    small_mask_rcnn,
    write_det_checkpoint,
)

SAMPLE_DIR = os.path.join(ROOT, "samples")
SCALE = (128, 96)  # tests/helpers.DET_SCALE_SMALL


def _pytorch_detections(ckpt: str, path: str, score_thr: float) -> list[tuple[int, list[float], float]]:
    """What the checkpoint's PyTorch RetinaNet finds in one photo, by the same preprocessing: (label, box, score)."""
    model = create_detector(None, ckpt)
    x, row = det_preprocess(load_image(path), SCALE)
    pad = np.zeros((1, 3, 96, 128), np.float32)
    pad[0, :, :x.shape[1], :x.shape[2]] = x
    with torch.no_grad():
        dets, labels = model(torch.from_numpy(pad), torch.from_numpy(row[None]))
    keep = (labels[0] >= 0) & (dets[0, :, 4] >= score_thr)
    return [(int(lab), d[:4].tolist(), float(d[4])) for d, lab in zip(dets[0][keep], labels[0][keep])]


def test_infer_writes_png_and_json_equal_to_pytorch(small_det_onnx, small_det_ckpt, tmp_path):
    out_dir = tmp_path / "det"
    r = cli("infer", "--task", "det", SAMPLE_DIR, "--model", small_det_onnx, "--out-dir", str(out_dir), "--json",
            "--batch-size", "2")  # a batch of two photos padded together, then one alone
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    assert [os.path.basename(x["image"]) for x in records] == ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    assert sorted(os.listdir(out_dir)) == sorted(f"{s}_det.{e}" for s in ("chelsea", "coffee", "rocket")
                                                 for e in ("png", "json"))
    found = 0
    for rec in records:
        with Image.open(rec["image"]) as im, Image.open(rec["png"]) as drawn:
            assert drawn.size == im.size and drawn.mode == "RGB" and rec["size"] == [im.height, im.width]
            changed = np.asarray(drawn, np.int16) - np.asarray(im.convert("RGB"), np.int16)
        with open(rec["json"], encoding="utf-8") as f:
            assert json.load(f) == {k: v for k, v in rec.items() if k not in ("png", "json")}
        assert rec["input_size"] == [85, 128]  # 266x400 at scale 128x96
        want = _pytorch_detections(small_det_ckpt, rec["image"], 0.3)
        got = rec["detections"]
        assert [d["label"] for d in got] == [lab for lab, _, _ in want]
        assert all(d["name"] == COCO_NAMES[d["label"]] for d in got)
        for d, (_, box, score) in zip(got, want):
            assert np.allclose(d["box"], box, atol=0.006) and abs(d["score"] - score) <= 1e-4
        found += len(got)
        assert bool(changed.any()) == bool(got)  # boxes drawn where there are detections
    assert found >= 3  # the small detector finds something in these photos


def test_no_detection_is_an_empty_answer(small_det_onnx, tmp_path):
    r = cli("infer", "--task", "det", SAMPLES[0], "--model", small_det_onnx, "--out-dir", str(tmp_path),
            "--score-thr", "1")
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    assert r.stdout.startswith(f"{SAMPLES[0]}: 0 detections -> ")
    with open(tmp_path / "chelsea_det.json", encoding="utf-8") as f:
        assert json.load(f)["detections"] == []
    with Image.open(tmp_path / "chelsea_det.png") as drawn, Image.open(SAMPLES[0]) as im:
        assert np.array_equal(np.asarray(drawn), np.asarray(im.convert("RGB")))


def test_validate_matches_pytorch(small_det_onnx, small_det_ckpt):
    r = cli("validate", "--model", small_det_onnx, "--weights", small_det_ckpt, "--images", SAMPLE_DIR,
            "--batch", "1,3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] and out["rate"] == 1.0 and out["reference"] >= 6 and len(out["cases"]) == 4
    r = cli("validate", "--model", small_det_onnx, "--weights", small_det_ckpt, "--sizes", "64x96,96x64",
            "--batch", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "96x64 random" in r.stdout and r.stdout.rstrip().endswith("PASS")


def _in_process(capsys, main, *args: str) -> str:
    """The command's main() in this process: exit 2 and one error line on stderr (warnings aside)."""
    rc = main(list(args))
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert rc == 2 and len(err) == 1, (rc, err)
    return err[0]


def test_det_refusals(small_det_onnx, small_det_ckpt, tiny_onnx, golden_ckpt, seg_ckpts, tmp_path, capsys):
    out = str(tmp_path / "x.onnx")
    export = ["--task", "det", "-o", out]
    for args, words in [
        (["--weights", golden_ckpt], "image classifier checkpoint"),
        (["--weights", seg_ckpts["upernet_tiny"]], "is a segmentation checkpoint"),
        (["--weights", small_det_ckpt, "--num-classes", "3"], "has 80 classes, not 3"),
        (["--fp16", "--fp16-io"], "--fp16-io is not for --task det"),
        (["--int8", "--calib", SAMPLE_DIR, "--calib-size", "64x64"], "--calib-size is not for --task det"),
        (["--int8"], "--int8 needs --calib DIR"),
        (["--target", "tensorrt"], "--target tensorrt is not supported yet for --task det"),
        (["--static", "224x224"], "--static is not supported for --task det"),
        (["--scale", "big"], "is not LONGxSHORT"),
        (["--mode", "backbone"], "--mode and --crop-ratio are for --task classify"),
    ]:
        assert words in _in_process(capsys, export_cmd.main, *export, *args)
    assert "--scale and --arch are for --task det" in _in_process(capsys, export_cmd.main, "--scale", "1333x800",
                                                                  "-o", out)
    to = ["--out-dir", str(tmp_path)]
    for args, words in [
        (["--task", "det", SAMPLE_DIR, "--model", tiny_onnx, *to], "is a classifier, not a detector"),
        ([SAMPLE_DIR, "--model", small_det_onnx], "this model is a detector"),
        (["--task", "seg", SAMPLE_DIR, "--model", small_det_onnx, *to], "is a detector, not a segmenter"),
        (["--task", "det", SAMPLE_DIR, "--model", small_det_onnx, "--topk", "3", *to], "not for --task det"),
        (["--task", "det", SAMPLE_DIR, "--model", small_det_onnx, "--score-thr", "2", *to], "outside 0..1"),
    ]:
        assert words in _in_process(capsys, infer_cmd.main, *args)
    assert "--score-thr is for --task det" in _in_process(capsys, infer_cmd.main, SAMPLE_DIR, "--score-thr", "0.5")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    for out_dir, words in [(a_file, "is a file, not a folder"), (tmp_path / "no" / "such", "does not exist")]:
        assert words in _in_process(capsys, infer_cmd.main, "--task", "det", SAMPLE_DIR, "--model", small_det_onnx,
                                    "--out-dir", str(out_dir))
    other = write_det_checkpoint(small_detector(seed=1), str(tmp_path / "other.pth"))
    assert "is not the checkpoint this model was exported from" in _in_process(
        capsys, validate_cmd.main, "--model", small_det_onnx, "--weights", other, "--images", SAMPLE_DIR)
    assert not os.path.exists(out)
    assert sorted(os.listdir(tmp_path)) == ["file.txt", "other.pth"]  # nothing written, not even a temp file


def test_corrupt_image_is_one_line(small_det_onnx, tmp_path):
    """Through the real command: one line for the bad photo, exit 2, nothing written for it."""
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out_dir = tmp_path / "out"
    r = cli("infer", "--task", "det", str(bad), "--model", small_det_onnx, "--out-dir", str(out_dir))
    assert_one_line_error(r, str(bad))
    assert os.listdir(out_dir) == []


def test_triton_repository(small_det_onnx, tmp_path):
    """The ONNX Runtime backend serves the graph as it is and batches; the Python backend takes image bytes."""
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient not installed")
    from google.protobuf import text_format

    r = cli("triton_repo", "--model", small_det_onnx, "--name", "det", "--out", str(tmp_path / "repo"))
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "repo" / "det" / "config.pbtxt", encoding="utf-8") as f:
        text = f.read()
    cfg = text_format.Parse(text, model_config_pb2.ModelConfig())
    assert cfg.platform == "onnxruntime_onnx" and cfg.max_batch_size == 32
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("image", [3, -1, -1]), ("image_size", [4])]
    # 100 rows each: the exporter leaves the count symbolic
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("dets", [-1, 5]), ("labels", [-1])]
    assert "A detector: inputs image" in text
    refused = tmp_path / "refused"
    assert_one_line_error(cli("triton_repo", "--model", small_det_onnx, "--name", "det", "--out", str(refused),
                              "--with-preprocess"), "--backend python serves it image in, detections out")
    assert not refused.exists()
    r = cli("triton_repo", "--model", small_det_onnx, "--name", "detpy", "--out", str(tmp_path / "repo"),
            "--backend", "python")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "repo" / "detpy" / "config.pbtxt", encoding="utf-8") as f:
        cfg = text_format.Parse(f.read(), model_config_pb2.ModelConfig())
    assert cfg.backend == "python" and cfg.max_batch_size == 0
    assert [(t.name, list(t.dims)) for t in cfg.input] == [("image_bytes", [1])]
    assert [(t.name, list(t.dims)) for t in cfg.output] == [("dets", [-1, 5]), ("labels", [-1]), ("names", [-1])]
    with open(tmp_path / "repo" / "detpy" / "1" / "model.py", encoding="utf-8") as f:
        assert "import DetectModel as TritonPythonModel" in f.read()


def test_mask_rcnn_masks_drawn_and_validated(tmp_path):
    """A Mask R-CNN checkpoint through export (the arch read off the file), infer (masks pasted and blended into the
    PNG, their areas in the JSON) and validate (its masks against PyTorch's)."""
    ckpt = write_det_checkpoint(small_mask_rcnn(), str(tmp_path / "mask_rcnn_small.pth"))
    model = str(tmp_path / "mask_rcnn.onnx")
    r = cli("export", "--task", "det", "--weights", ckpt, "--scale", DET_SCALE_SMALL, "-o", model)
    assert r.returncode == 0 and "mask_rcnn detector, 5 classes" in r.stderr, r.stderr
    r = cli("infer", "--task", "det", SAMPLES[0], "--model", model, "--out-dir", str(tmp_path / "out"), "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)[0]
    assert rec["detections"] and all(d["mask_area"] >= 0 for d in rec["detections"])
    assert any(d["mask_area"] > 0 for d in rec["detections"]) and rec["detections"][0]["name"].startswith("class ")
    r = cli("validate", "--model", model, "--weights", ckpt, "--images", SAMPLE_DIR, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] and out["rate"] == 1.0 and out["reference"] >= 20 and out["mask_iou"] >= 0.98
