import importlib.util
import os

import pytest
import torch

DATA = os.path.join(os.path.dirname(__file__), "data")
GOLDEN_CKPT = os.path.join(DATA, "golden_tiny.pth")
DIGITS = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "digits")
DIGITS_CKPT = os.path.join(DIGITS, "crossformer_digits.pth")

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def golden_cases():
    return torch.load(os.path.join(DATA, "golden_cases.pt"), weights_only=True)


@pytest.fixture(scope="session")
def golden_ckpt():
    return GOLDEN_CKPT


@pytest.fixture(scope="session")
def digits_data():
    """examples/digits/data.py (the trained model's data split), imported from its folder."""
    pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")
    spec = importlib.util.spec_from_file_location("digits_data", os.path.join(DIGITS, "data.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, golden_ckpt):
    """The tiny golden model exported by crossformer-export (dynamic), once per session; read-only."""
    from tests.helpers import cli

    path = str(tmp_path_factory.mktemp("tiny") / "tiny.onnx")
    r = cli("export", "--weights", golden_ckpt, "-o", path)
    assert r.returncode == 0, r.stderr
    return path


@pytest.fixture(scope="session")
def exports(tmp_path_factory, golden_ckpt):
    """The tiny golden model exported dynamic and static (224x224, batch 2), once per session; read-only."""
    from .helpers import cli

    d = tmp_path_factory.mktemp("engines")
    cache = str(d / "cache")
    out = {"dir": d, "cache": cache}
    for key, extra in (("dynamic", []), ("static", ["--static", "224x224", "--batch", "2"])):
        path = str(d / f"{key}.onnx")
        r = cli("export", "--weights", golden_ckpt, *extra, "-o", path, env_extra={"CROSSFORMER_DEPLOY_CACHE": cache})
        assert r.returncode == 0, r.stderr
        out[key] = path
    return out


@pytest.fixture(scope="session")
def golden_seg():
    """mmseg's outputs for three tiny segmenters (tests/fixtures/mm_oracle/make_golden_seg.py)."""
    from tests.helpers import GOLDEN_SEG

    return torch.load(GOLDEN_SEG, weights_only=True)


@pytest.fixture(scope="session")
def seg_ckpts(tmp_path_factory, golden_seg):
    """{name: path} of the golden segmenters as mmseg checkpoint files; read-only."""
    from tests.helpers import write_seg_checkpoint

    d = tmp_path_factory.mktemp("seg_ckpts")
    return {name: write_seg_checkpoint(golden_seg, name, str(d / f"{name}.pth")) for name in golden_seg["models"]}


@pytest.fixture(scope="session")
def fpn_onnx(tmp_path_factory, seg_ckpts):
    """The golden Semantic FPN with logits, exported by the command (head, variant, classes off the file)."""
    from tests.helpers import cli

    path = str(tmp_path_factory.mktemp("seg") / "fpn.onnx")
    r = cli("export", "--task", "seg", "--weights", seg_ckpts["fpn_tiny_g14"], "--grouping", "14,14,7,7/16,8,2,1",
            "--logits", "-o", path)
    assert r.returncode == 0, r.stderr
    assert "fpn segmenter" in r.stderr
    return path


@pytest.fixture(scope="session")
def small_det_ckpt(tmp_path_factory):
    """A small RetinaNet's mmdet checkpoint (tests/helpers.small_detector); read-only."""
    from tests.helpers import small_detector, write_det_checkpoint

    return write_det_checkpoint(small_detector(), str(tmp_path_factory.mktemp("det_ckpt") / "retinanet_small.pth"))


@pytest.fixture(scope="session")
def small_det_onnx(tmp_path_factory, small_det_ckpt):
    """The small RetinaNet exported by crossformer-export --task det (classes and variant off the file), recording
    the small resize bound DET_SCALE_SMALL so that photos run at about 96x128."""
    from tests.helpers import DET_SCALE_SMALL, cli

    path = str(tmp_path_factory.mktemp("det") / "retinanet_small.onnx")
    r = cli("export", "--task", "det", "--weights", small_det_ckpt, "--scale", DET_SCALE_SMALL, "-o", path)
    assert r.returncode == 0, r.stderr
    assert "retinanet detector, 80 classes, scale 128x96" in r.stderr and "warning" not in r.stderr
    return path
