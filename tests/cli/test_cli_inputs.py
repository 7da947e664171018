"""The inputs users bring, through the real commands: folders with bad files in them, missing or
unreadable paths, huge images, unwritable output folders, and an export without -o."""
import json
import os
import shutil
import struct
import subprocess
import zlib

import pytest
from PIL import Image

from tests.helpers import ROOT, assert_one_line_error, cli, error_lines

SAMPLES = os.path.join(ROOT, "samples")
SAMPLE = os.path.join(SAMPLES, "chelsea.jpg")


@pytest.fixture(scope="module")
def as_user():
    """A command prefix under which permission bits hold. Tests run as root, who reads a chmod-000 file
    and writes into a read-only folder; without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH root cannot."""
    if os.geteuid() != 0:
        return ()
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--")
    if not shutil.which("setpriv") or subprocess.run([*prefix, "true"]).returncode:
        pytest.skip("running as root and cannot drop CAP_DAC_OVERRIDE (setpriv)")
    return prefix


def huge_png(path) -> None:
    """A PNG header claiming 20000x20000 pixels: over twice Pillow's MAX_IMAGE_PIXELS, refused on open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.fixture
def photos(tmp_path):
    """Three readable images (one behind a symlinked folder) and one of each kind of unreadable file."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(SAMPLE, root / "a_cat.jpg")
    shutil.copy(os.path.join(SAMPLES, "coffee.jpg"), root / "sub" / "coffee.jpg")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(os.path.join(SAMPLES, "rocket.jpg"), outside / "rocket.jpg")
    os.symlink(outside, root / "linked")            # followed
    os.symlink(outside, root / "sub" / "again")      # the same folder: walked once
    os.symlink(root, root / "sub" / "loop")          # a loop: not walked again
    (root / "b_corrupt.jpg").write_bytes(open(SAMPLE, "rb").read()[:2000])
    (root / "c_notes.png").write_text("not an image")
    huge_png(root / "d_huge.png")
    shutil.copy(SAMPLE, root / "e_locked.jpg")
    os.chmod(root / "e_locked.jpg", 0)
    os.symlink(tmp_path / "gone.jpg", root / "f_missing.jpg")
    return root


def test_folder_goes_on_past_bad_files(photos, tiny_onnx, as_user):
    r = cli("infer", str(photos), "--model", tiny_onnx, "--json", prefix=as_user)
    assert r.returncode == 1, r.stderr
    got = sorted(os.path.relpath(p["image"], photos) for p in json.loads(r.stdout))
    assert got == ["a_cat.jpg", "linked/rocket.jpg", "sub/coffee.jpg"]
    lines = error_lines(r)
    why = {"b_corrupt.jpg": "corrupt image", "c_notes.png": "not an image", "d_huge.png": "image too large",
           "e_locked.jpg": "permission denied", "f_missing.jpg": "no such file"}
    for name, reason in why.items():
        hits = [ln for ln in lines if name in ln]
        assert len(hits) == 1 and reason in hits[0], (name, lines)
    assert lines[-1] == "crossformer-infer: 8 images, 5 failed" and len(lines) == 6, lines


def test_strict_stops_at_the_first(photos, tiny_onnx, as_user):
    r = cli("infer", str(photos), "--model", tiny_onnx, "--strict", prefix=as_user)
    assert_one_line_error(r, "corrupt image", "b_corrupt.jpg")
    assert r.stdout == ""


def test_single_bad_image_is_one_line(tmp_path, tiny_onnx, as_user):
    huge_png(tmp_path / "huge.png")
    assert_one_line_error(cli("infer", str(tmp_path / "huge.png"), "--model", tiny_onnx), "image too large", "huge.png")
    locked = tmp_path / "locked.jpg"
    shutil.copy(SAMPLE, locked)
    os.chmod(locked, 0)
    assert_one_line_error(cli("infer", str(locked), "--model", tiny_onnx, prefix=as_user),
                          "permission denied", "locked.jpg")
    # one good, one missing: the good one is classified, exit 1
    r = cli("infer", SAMPLE, str(tmp_path / "nope.jpg"), "--model", tiny_onnx)
    assert r.returncode == 1 and r.stdout.startswith(SAMPLE), r.stderr
    assert error_lines(r)[-2:] == [f"crossformer-infer: error: no such file or directory: {tmp_path / 'nope.jpg'}",
                                   "crossformer-infer: 2 images, 1 failed"]


def test_missing_or_folder_weights(tmp_path):
    assert_one_line_error(cli("infer", SAMPLE, "--weights", str(tmp_path / "missing.pth")),
                          "checkpoint not found", "missing.pth")
    assert_one_line_error(cli("infer", SAMPLE, "--weights", str(tmp_path)), "is a directory")
    assert_one_line_error(cli("export", "--weights", str(tmp_path), "-o", str(tmp_path / "x.onnx")),
                          "is a directory")


def test_unwritable_output_folder_fails_before_any_work(tmp_path, tiny_onnx, as_user):
    out = tmp_path / "readonly"
    out.mkdir()
    os.chmod(out, 0o555)
    bad_ckpt = tmp_path / "bad.pth"
    bad_ckpt.write_bytes(b"not a checkpoint")
    # the checkpoint is bad too: naming the output proves the output was checked first
    r = cli("export", "--weights", str(bad_ckpt), "-o", str(out / "m.onnx"), prefix=as_user)
    assert_one_line_error(r, "cannot write to", "readonly")
    r = cli("export", "--weights", str(bad_ckpt), cwd=str(out), prefix=as_user)  # default name in a read-only cwd
    assert_one_line_error(r, "cannot write to", "readonly")
    r = cli("triton_repo", "--model", tiny_onnx, "--name", "m", "--out", str(out / "repo"), prefix=as_user)
    assert_one_line_error(r, "cannot write to", "readonly")
    r = cli("build_engine", "--onnx", tiny_onnx, "--engine", str(out / "m.plan"), prefix=as_user)
    assert_one_line_error(r, "cannot write to", "readonly")
    assert os.listdir(out) == []


def test_export_without_output_names_the_file(tmp_path):
    r = cli("export", "--variant", "tiny", "--fp16", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "crossformer-tiny-fp16.onnx")
    assert os.listdir(tmp_path) == ["crossformer-tiny-fp16.onnx"]


def test_default_output_names():
    from crossformer_deploy.cli.export_cmd import default_output, parser

    def name(*argv: str) -> str:
        args = parser().parse_args(list(argv))
        return default_output(args.variant, args, (256, 320) if args.static else (224, 224))

    assert name("--variant", "s") == "crossformer-s.onnx"
    assert name("--variant", "s", "--fp16") == "crossformer-s-fp16.onnx"
    assert (name("--variant", "s", "--mode", "backbone", "--int8", "--calib", "d", "--target", "openvino")
            == "crossformer-s-backbone-int8-openvino.onnx")
    assert (name("--variant", "b", "--static", "256x320", "--batch", "4", "--target", "onnxruntime")
            == "crossformer-b-onnxruntime-256x320-b4.onnx")


def test_folder_listing_without_a_model(tmp_path):
    """list_images on its own: a symlink loop ends, each folder once, an unlistable folder reported."""
    from crossformer_deploy.base.errors import ImageError
    from crossformer_deploy.base.images import list_images

    (tmp_path / "a").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "a" / "x.png")
    os.symlink(tmp_path, tmp_path / "a" / "up")
    os.symlink(tmp_path / "a", tmp_path / "link_a")
    assert list_images([str(tmp_path)]) == [str(tmp_path / "a" / "x.png")]
    errors = []
    assert list_images([str(tmp_path / "none"), str(tmp_path)], errors.append) == [str(tmp_path / "a" / "x.png")]
    assert [str(e) for e in errors] == [f"no such file or directory: {tmp_path / 'none'}"]
    with pytest.raises(ImageError, match="no such file or directory"):
        list_images([str(tmp_path / "none"), str(tmp_path)])


def test_hashing_a_bad_path_is_a_one_line_error(tmp_path):
    """sha256_file backs every command that hashes an input: a CrossFormerError (one line, exit 2) that is
    still an OSError for the callers that catch those."""
    from crossformer_deploy.base.errors import CrossFormerError
    from crossformer_deploy.base.fileio import sha256_file

    with pytest.raises(CrossFormerError, match="is a directory"):
        sha256_file(tmp_path)
    with pytest.raises(OSError, match="no such file"):
        sha256_file(tmp_path / "missing.bin")
