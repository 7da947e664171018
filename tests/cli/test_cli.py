"""Every bad input through the real commands: exit 2, one line on stderr, no traceback."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from crossformer_deploy import create_model
from tests.helpers import ROOT, assert_one_line_error, cli

SAMPLE = os.path.join(ROOT, "samples", "chelsea.jpg")


@pytest.fixture(scope="module")
def tiny_static(tmp_path_factory, golden_ckpt):
    path = str(tmp_path_factory.mktemp("cli") / "static.onnx")
    r = cli("export", "--weights", golden_ckpt, "--static", "224x224", "--batch", "2", "-o", path)
    assert r.returncode == 0, r.stderr
    return path


def test_infer_json_and_batching(tiny_onnx):
    r = cli("infer", SAMPLE, os.path.join(ROOT, "samples"), "--model", tiny_onnx, "--json", "--topk", "3",
            "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out) == 4 and all(len(p["topk"]) == 3 for p in out)
    assert [os.path.basename(p["image"]) for p in out] == ["chelsea.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"]
    probs = [t["prob"] for t in out[0]["topk"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6


def test_image_alone_and_in_a_batch_with_another(tiny_onnx):
    """A batch row must not see its neighbours (nor be swapped with them): each image alone (batch size 1)
    vs the two together in one batch of two."""
    other = os.path.join(ROOT, "samples", "rocket.jpg")
    alone = [json.loads(cli("infer", p, "--model", tiny_onnx, "--json", "--topk", "10", "--batch-size", "1").stdout)[0]
             for p in (other, SAMPLE)]
    r = cli("infer", other, SAMPLE, "--model", tiny_onnx, "--json", "--topk", "10", "--batch-size", "2")
    together = json.loads(r.stdout)
    assert alone[0]["topk"] != alone[1]["topk"]  # two different images: a swap would show
    for a, b in zip(alone, together):
        assert a["image"] == b["image"]
        assert [t["class"] for t in a["topk"]] == [t["class"] for t in b["topk"]]
        assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["topk"], b["topk"])) <= 1e-5


def test_infer_static_batch_pads_last_batch(tiny_static, tiny_onnx):
    a = json.loads(cli("infer", os.path.join(ROOT, "samples"), "--model", tiny_static, "--json").stdout)
    b = json.loads(cli("infer", os.path.join(ROOT, "samples"), "--model", tiny_onnx, "--json").stdout)
    assert len(a) == 3
    for pa, pb in zip(a, b):
        assert [t["class"] for t in pa["topk"]] == [t["class"] for t in pb["topk"]]
        assert all(abs(x["prob"] - y["prob"]) < 1e-5 for x, y in zip(pa["topk"], pb["topk"]))


def test_validate_passes_and_fails(tiny_onnx, golden_ckpt, tmp_path):
    r = cli("validate", "--model", tiny_onnx, "--weights", golden_ckpt, "--sizes", "224,64x96", "--batch", "1,2",
            "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["passed"] and len(rep["cases"]) == 4 and max(c["max_abs"] for c in rep["cases"]) <= 1e-4
    # Another checkpoint of the same architecture: validation must notice.
    other = tmp_path / "other.pth"
    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    sd["head.bias"] = sd["head.bias"] + 1.0
    torch.save({"model": sd}, other)
    r = cli("validate", "--model", tiny_onnx, "--weights", str(other))
    assert_one_line_error(r, "not the checkpoint this model was exported from")


def test_bad_images(tiny_onnx, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(open(SAMPLE, "rb").read()[:2000])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(cli("infer", str(tmp_path / "missing.jpg"), "--model", tiny_onnx), "missing.jpg")
    assert_one_line_error(cli("infer", str(corrupt), "--model", tiny_onnx), "corrupt image", "corrupt.jpg")
    assert_one_line_error(cli("infer", str(text), "--model", tiny_onnx), "not an image", "notes.png")
    assert_one_line_error(cli("infer", str(empty), "--model", tiny_onnx), "no images", "empty")


def test_bad_sizes_and_shapes(tiny_onnx, tiny_static):
    assert_one_line_error(cli("infer", SAMPLE, "--model", tiny_onnx, "--size", "225"), "225", "224 or 256")
    assert_one_line_error(cli("infer", SAMPLE, "--model", tiny_static, "--size", "256"), "height 224 only")
    assert_one_line_error(cli("export", "--variant", "tiny", "--static", "100x224", "-o", "/tmp/x.onnx"),
                          "96 or 128")


def test_bad_model_files(tmp_path, tiny_onnx):
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(open(tiny_onnx, "rb").read()[:5000])
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00garbage" * 100)
    assert_one_line_error(cli("infer", SAMPLE, "--model", str(trunc)), "truncated")
    assert_one_line_error(cli("infer", SAMPLE, "--model", str(junk)), "junk.onnx")
    assert_one_line_error(cli("infer", SAMPLE, "--model", str(tmp_path / "none.onnx")), "not found")
    assert_one_line_error(cli("validate", "--model", str(trunc)), "truncated")


def test_export_errors(tmp_path, golden_ckpt):
    t_ckpt = tmp_path / "t.pth"
    torch.save({"model": create_model("t").state_dict()}, t_ckpt)
    assert_one_line_error(cli("export", "--variant", "s", "--weights", str(t_ckpt), "-o", str(tmp_path / "a.onnx")),
                          "CrossFormer-T", "not CrossFormer-S")
    assert_one_line_error(cli("export", "--variant", "tiny", "-o", str(tmp_path / "no" / "dir" / "a.onnx")),
                          "output directory does not exist")
    assert sorted(os.listdir(tmp_path)) == ["t.pth"]


def test_wrong_rank_and_size_through_runner(tiny_onnx):
    from crossformer_deploy.base.errors import InputSizeError
    from crossformer_deploy.runtime.onnxruntime_runner import OnnxRuntimeRunner

    with OnnxRuntimeRunner(tiny_onnx) as r:
        with pytest.raises(InputSizeError, match="needs rank 4"):
            r.run({"image": np.zeros((3, 224, 224), np.float32)})
        # the dynamic graph itself would answer at 225x224: the runner refuses, naming valid sizes
        with pytest.raises(InputSizeError, match=r"225x224 is not a multiple of 32 \(height 225 -> 224 or 256\)"):
            r.run({"image": np.zeros((1, 3, 225, 224), np.float32)})


def test_interrupted_write_leaves_nothing(tmp_path):
    from crossformer_deploy.base.fileio import atomic_path

    target = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        open(tmp, "wb").write(b"half")
        raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []


def test_image_modes(tmp_path):
    from crossformer_deploy.base.images import load_image, preprocess

    rgb = Image.open(SAMPLE).convert("RGB")
    cases = {
        "gray.png": rgb.convert("L"),
        "rgba.png": rgb.convert("RGBA"),
        "cmyk.jpg": rgb.convert("CMYK"),
        "p.png": rgb.convert("P"),
        "i16.png": Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = load_image(str(tmp_path / name))
        assert out.mode == "RGB" and out.size == rgb.size, name
        assert preprocess(out).shape == (3, 224, 224)
    # 16-bit grayscale maps back onto the 8-bit one
    a = np.asarray(load_image(str(tmp_path / "i16.png")), np.int32)
    b = np.asarray(load_image(str(tmp_path / "gray.png")), np.int32)
    assert np.abs(a - b).max() <= 1
    # EXIF orientation 6 (the camera was turned: rotate 90 degrees clockwise to view) is applied, the right
    # way round: the pixels, not just the size (the other rotation has the same size). PNG keeps them exact.
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb.save(tmp_path / "rot.png", exif=exif)
    got = np.asarray(load_image(str(tmp_path / "rot.png")))
    assert (got == np.asarray(rgb.transpose(Image.Transpose.ROTATE_270))).all()
    assert not (got == np.asarray(rgb.transpose(Image.Transpose.ROTATE_90))).all()


def test_resize_crop_matches_eval_transform():
    from crossformer_deploy.base.images import resize_and_crop

    im = Image.new("RGB", (400, 266))
    # torchvision Resize(256) on 400x266 -> (384, 256) [int(256 * 400 / 266)], CenterCrop(224)
    assert resize_and_crop(im, (224, 224)).size == (224, 224)
    im = Image.linear_gradient("L").convert("RGB").resize((300, 200))
    out = np.asarray(resize_and_crop(im, (224, 224)))
    ref = np.asarray(im.resize((384, 256), Image.BICUBIC).crop((80, 16, 304, 240)))
    assert (out == ref).all()

