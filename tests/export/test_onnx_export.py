"""Dynamic-shape ONNX export matches PyTorch at sizes and batches the export never saw."""
import numpy as np
import onnx
import pytest

from crossformer_deploy import create_model
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.export.onnx_export import export, read_info
from crossformer_deploy.model.factory import build_model
from tests.helpers import ort_session, per_size_constants, perturb, torch_out

TOL = 1e-4
SIZES = [(224, 224), (256, 320), (320, 448)]
SWITCH_SIZES = [(64, 96), (224, 288), (32, 64)]  # maps smaller than G: LDA -> SDA inside the graph


@pytest.fixture(scope="session")
def tiny(golden_ckpt):
    return create_model(None, golden_ckpt)


@pytest.fixture(scope="session")
def tiny_dynamic(tmp_path_factory, tiny):
    path = str(tmp_path_factory.mktemp("export") / "tiny.onnx")
    export(tiny, path, ModelInfo("tiny", "classifier", 10, "golden"))
    return path


@pytest.fixture(scope="session")
def s_model():
    return perturb(build_model("s", seed=0))


@pytest.fixture(scope="session")
def s_dynamic(tmp_path_factory, s_model):
    path = str(tmp_path_factory.mktemp("export") / "s.onnx")
    export(s_model, path, ModelInfo("s", "classifier", 1000, "perturbed"))
    return path


@pytest.mark.parametrize("h,w", SIZES + SWITCH_SIZES)
@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_dynamic_matches_torch(tiny, tiny_dynamic, h, w, batch):
    x = np.random.default_rng(h * w + batch).standard_normal((batch, 3, h, w), dtype=np.float32)
    got = ort_session(tiny_dynamic).run(None, {"image": x})[0]
    assert np.abs(got - torch_out(tiny, x)[0]).max() <= TOL


@pytest.mark.parametrize("h,w", SIZES)
@pytest.mark.parametrize("batch", [1, 3])
def test_s_dynamic_matches_torch(s_model, s_dynamic, h, w, batch):
    x = np.random.default_rng(batch).standard_normal((batch, 3, h, w), dtype=np.float32)
    ref = torch_out(s_model, x)[0]
    assert np.abs(ref).max() > 1.0  # perturbed weights: logits large enough for the bound to mean something
    got = ort_session(s_dynamic).run(None, {"image": x})[0]
    assert np.abs(got - ref).max() <= TOL


def test_backbone_dynamic(tmp_path, golden_ckpt):
    model = create_model(None, golden_ckpt, mode="backbone")
    path = str(tmp_path / "bb.onnx")
    export(model, path, ModelInfo("tiny", "backbone", 0, "golden"))
    sess = ort_session(path)
    assert [o.name for o in sess.get_outputs()] == ["stage1", "stage2", "stage3", "stage4"]
    for h, w in [(96, 160), (64, 96)]:
        x = np.random.default_rng(0).standard_normal((2, 3, h, w), dtype=np.float32)
        for got, ref in zip(sess.run(None, {"image": x}), torch_out(model, x)):
            assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL


def test_static_equals_dynamic(tmp_path, tiny, tiny_dynamic):
    path = str(tmp_path / "static.onnx")
    export(tiny, path, ModelInfo("tiny", "classifier", 10, "golden", input_size=(256, 320), dynamic=False, batch=2))
    sess = ort_session(path)
    assert [d.dim_value for d in onnx.load(path).graph.input[0].type.tensor_type.shape.dim] == [2, 3, 256, 320]
    x = np.random.default_rng(5).standard_normal((2, 3, 256, 320), dtype=np.float32)
    a = sess.run(None, {"image": x})[0]
    b = ort_session(tiny_dynamic).run(None, {"image": x})[0]
    assert np.abs(a - b).max() <= 1e-5
    # the check below has teeth: a fixed-size graph does hold per-size tables
    assert per_size_constants(onnx.load(path))


def test_dynamic_graph_has_no_per_size_constants(tiny_dynamic, s_dynamic):
    for path in (tiny_dynamic, s_dynamic):
        assert per_size_constants(onnx.load(path)) == []


def test_metadata(tiny_dynamic):
    proto = onnx.load(tiny_dynamic)
    info = read_info(proto)
    assert (info.variant, info.mode, info.num_classes, info.dynamic, info.batch) == ("tiny", "classifier", 10,
                                                                                    True, None)
    props = {p.key for p in proto.metadata_props}
    assert {"mean", "std", "crop_ratio", "input_layout", "dynamic_axes", "version"} <= props
    onnx.checker.check_model(proto, full_check=True)
