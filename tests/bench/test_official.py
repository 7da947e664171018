"""The authors' model as the bench's peer (bench/official.py): loaded from a file the user names, holding our
weights, exported by plain torch.onnx.export at the case's shape; its refusals in one line.

CI has no copy of the authors' code, so a stand-in file with their constructor's signature (our model inside)
exercises the loader; with ``CROSSFORMER_OFFICIAL`` set to the folder ``shared/reference/prepare_official.sh``
writes, the real file is loaded and compared with ours too."""
import os
import textwrap

import numpy as np
import onnx
import pytest
import torch

from crossformer_deploy.base.errors import UsageError
from crossformer_deploy.base.model_info import ModelInfo
from crossformer_deploy.bench.graphs import GRAPHS, CaseGraphs
from crossformer_deploy.bench.official import load_official
from crossformer_deploy.model.factory import build_model
from crossformer_deploy.model.synthetic import trained_like

# their CrossFormer's keyword arguments (models/crossformer.py, branch crossformer); the body is ours
STAND_IN = '''
import dataclasses
from timm.models.layers import DropPath, to_2tuple, trunc_normal_  # what their file imports: the stand-in's job
from crossformer_deploy.model.config import get_config
from crossformer_deploy.model.crossformer import CrossFormer as Ours


class CrossFormer(Ours):
    def __init__(self, img_size=224, patch_size=[4], in_chans=3, num_classes=1000, embed_dim=96,
                 depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], group_size=[7], crs_interval=[8],
                 mlp_ratio=4.0, drop_path_rate=0.1, merge_size=[[2], [2], [2]]{extra}):
        cfg = dataclasses.replace(get_config("tiny"), embed_dim=embed_dim, depths=tuple(depths),
                                  num_heads=tuple(num_heads), group_sizes=tuple(group_size),
                                  intervals=tuple(crs_interval))
        super().__init__(cfg, num_classes=num_classes)
        self.seen_img_size = img_size
'''


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.fixture(scope="module")
def tiny():
    return trained_like(build_model("tiny", seed=0), seed=1)


def test_loads_our_weights_and_refuses_other_sizes(tmp_path, tiny):
    make = load_official(write(tmp_path, "cf.py", STAND_IN.format(extra="")), tiny.cfg, tiny.state_dict(),
                         tiny.num_classes)
    peer = make((64, 64))
    assert peer.seen_img_size == 64 and not peer.training
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(peer(x), tiny(x), rtol=0, atol=0)
    with pytest.raises(UsageError, match="square images only"):
        make((64, 96))


def test_refusals(tmp_path, tiny):
    sd, n = tiny.state_dict(), tiny.num_classes
    cases = [
        (str(tmp_path / "none.py"), "no such file"),
        (write(tmp_path, "broken.py", "import not_a_module_anywhere\n"), "could not load the authors' CrossFormer"),
        (write(tmp_path, "pp.py", STAND_IN.format(extra=", use_acl=False")), "is the authors' CrossFormer++"),
    ]
    for path, words in cases:
        with pytest.raises(UsageError, match=words):
            load_official(path, tiny.cfg, sd, n)
    other = {k: v for k, v in sd.items() if not k.startswith("head.")}
    make = load_official(write(tmp_path, "cf2.py", STAND_IN.format(extra="")), tiny.cfg, other, n)
    with pytest.raises(UsageError, match=r"does not take these weights: 2 missing"):
        make((64, 64))


def test_peer_graph_is_a_plain_static_export_of_their_model(tmp_path, tiny):
    """The peers' graph is their model exported by torch.onnx.export at the case's shape, not our export."""
    import onnxruntime as ort

    make = load_official(write(tmp_path, "cf.py", STAND_IN.format(extra="")), tiny.cfg, tiny.state_dict(),
                         tiny.num_classes)
    calls = []

    def factory(size):
        calls.append(size)
        return make(size)

    info = ModelInfo(variant="tiny", mode="classifier", num_classes=tiny.num_classes, weights="seeded")
    graphs = CaseGraphs(tiny, info, (64, 64), 2, str(tmp_path),
                        plain_path=lambda: pytest.fail("no dynamic export wanted"), peer=factory)
    path, desc = graphs.get("peer")
    assert calls == [(64, 64)] and desc == "the authors' model, torch.onnx.export 2x3x64x64"
    g = onnx.load(path).graph
    assert [d.dim_value for d in g.input[0].type.tensor_type.shape.dim] == [2, 3, 64, 64]
    assert not any(n.domain == "crossformer" for n in g.node)  # none of our passes
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"image": x})[0]
    with torch.no_grad():
        ref = tiny(torch.from_numpy(x)).numpy()
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())
    assert {GRAPHS[k].of for k in ("nncf-peer", "nncf-peer-head-float", "ort-qdq-peer")} == {"peer"}


@pytest.mark.skipif(not os.environ.get("CROSSFORMER_OFFICIAL"), reason="the authors' code is not here "
                    "(set CROSSFORMER_OFFICIAL to the folder shared/reference/prepare_official.sh writes)")
def test_the_authors_file_equals_ours():
    model = trained_like(build_model("s", seed=0), seed=5)
    make = load_official(os.path.join(os.environ["CROSSFORMER_OFFICIAL"], "crossformer_cls.py"), model.cfg,
                         model.state_dict(), model.num_classes)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        ref, got = model(x), make((224, 224))(x)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
