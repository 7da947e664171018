"""CrossFormer++ against the authors' main-branch code: fixtures made by tests/fixtures/make_golden_pp.py.

The bound is test_model_golden's scale-aware one (float32 rounding of the longest dot product, per
sublayer on the residual path). Each fixture exercises what sets CrossFormer++ apart: padded LDA with a fixed
group size (stage 1 56 -> 64, stage 2 28 -> 32 at 224), amplitude cooling layers (block 2 of stages 1-3 of
pp-tiny), the one-group small-map rule at rectangular sizes (a 14x20 stage-3 map at 224x320, 4x6 at 64x96),
and the S2 detection backbone (G 7, I 8/4/2/1). The last tests show the bound sees a wrong layout rule or a
missing cooling layer.
"""
import json
import os

import pytest
import torch

from crossformer_deploy import create_model
from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.config import VARIANTS, CrossFormerConfig, Family
from crossformer_deploy.model.crossformer import CrossFormer, CrossFormerBlock
from tests.helpers import EPS, ROOT, assert_close, k_model

DATA = os.path.join(ROOT, "tests", "data")
PP_CKPT = os.path.join(DATA, "golden_pp_tiny.pth")
# The S2 fixtures run pp-tiny's backbone tensors with S2's G and I, as the authors' detection configs run
# pp-s's; a checkpoint does not record G and I, so they are given, as a user of a custom config would.
S2_TINY = CrossFormerConfig(32, (4, 4, 4, 2), (1, 2, 4, 8), group_sizes=7, intervals=(8, 4, 2, 1),
                            family="crossformer++", name="s2-tiny")
BACKBONE_SIZES = ["96x160", "224x320", "64x96", "224x288"]
S2_SIZES = ["224x320", "96x160", "64x96", "256x416"]


def k_pp(cfg: CrossFormerConfig, stage: int, head: bool = False) -> float:
    """k_model plus one sublayer per cooling layer (conv + LN) up to ``stage``."""
    acl = sum(cfg.has_acl(i, j) for i in range(stage + 1) for j in range(cfg.depths[i]))
    return k_model(cfg, stage, head) + EPS * (cfg.mlp_ratios[stage] * cfg.stage_dim(stage)) ** 0.5 * acl


@pytest.fixture(scope="module")
def pp_cases():
    return torch.load(os.path.join(DATA, "golden_pp_cases.pt"), weights_only=True)


def _features(m, x):
    with torch.no_grad():
        return m(x)


def test_classifier_224(pp_cases):
    m = create_model(None, PP_CKPT)
    assert m.cfg.name == "pp-tiny" and m.cfg.family is Family.CROSSFORMER_PP  # the family read off the ex_conv keys
    assert_close(_features(m, pp_cases["cls_224_x"]), pp_cases["cls_224_y"], k_pp(m.cfg, 3, head=True), "logits")


@pytest.mark.parametrize("hw", BACKBONE_SIZES)
def test_backbone_sizes(pp_cases, hw):
    m = create_model(None, PP_CKPT, mode="backbone")
    feats = _features(m, pp_cases[f"bb_{hw}_x"])
    for i, f in enumerate(feats):
        ref = pp_cases[f"bb_{hw}_y{i}"]
        assert f.shape == ref.shape
        assert_close(f, ref, k_pp(m.cfg, i), f"{hw} stage {i + 1}")


@pytest.fixture(scope="module")
def s2_ckpt(tmp_path_factory):
    """pp-tiny's backbone in the mmdet layout (``backbone.`` prefix, a neck key beside it)."""
    sd = torch.load(PP_CKPT, weights_only=True)["model"]
    sd = {"backbone." + k: v for k, v in sd.items() if not k.startswith(("norm.", "head."))}
    path = tmp_path_factory.mktemp("s2") / "mask_rcnn_s2.pth"
    torch.save({"meta": {"epoch": 12}, "state_dict": {**sd, "neck.lateral_convs.0.conv.weight": torch.zeros(1)}},
               path)
    return path


@pytest.mark.parametrize("hw", S2_SIZES)
def test_s2_backbone_sizes(pp_cases, s2_ckpt, hw):
    m = create_model(S2_TINY, s2_ckpt, mode="backbone")
    feats = _features(m, pp_cases[f"s2_{hw}_x"])
    for i, f in enumerate(feats):
        assert_close(f, pp_cases[f"s2_{hw}_y{i}"], k_pp(m.cfg, i), f"S2 {hw} stage {i + 1}")


@pytest.mark.parametrize("key", ["pblk_13x19_g4_i2", "pblk_30x45_g4_i4", "pblk_15x22_g7_i8", "pblk_9x20_g4_i2"])
def test_padded_lda_block(pp_cases, key):
    """Odd maps: LDA pads to a multiple of G*I (13x19 at G 4, I 2 -> 16x24; 15x22 at G 7, I 8 -> 56x56)."""
    h, w = (int(v) for v in key.split("_")[1].split("x"))
    G, interval, acl = (int(v) for v in pp_cases[key + "_meta"])
    x = pp_cases[key + "_x"]
    dim = x.shape[-1]
    prefix = key + "_sd."
    sd = {k[len(prefix):]: v for k, v in pp_cases.items() if k.startswith(prefix)}
    heads = sd["attn.pos.pos3.2.weight"].shape[0]
    blk = CrossFormerBlock(dim, heads, G, interval, lda=True, mlp_ratio=4.0, family=Family.CROSSFORMER_PP,
                           acl=bool(acl)).eval()
    blk.load_state_dict(sd)
    with torch.no_grad():
        y = blk(x, h, w)
    assert_close(y, pp_cases[key + "_y"], EPS * (4 * dim) ** 0.5 * (2 + acl), key)


def test_stateless_small_then_large(pp_cases):
    """The authors' backbone keeps a small map's SDA switch for good; ours decides per call."""
    m = create_model(None, PP_CKPT, mode="backbone")
    _features(m, pp_cases["bb_64x96_x"])
    feats = _features(m, pp_cases["bb_224x320_x"])
    for i, f in enumerate(feats):
        assert_close(f, pp_cases[f"bb_224x320_y{i}"], k_pp(m.cfg, i), f"after a small map, stage {i + 1}")


def _exceeds(m, pp_cases, hw="224x320") -> list[int]:
    feats = _features(m, pp_cases[f"bb_{hw}_x"])
    bad = []
    for i, f in enumerate(feats):
        ref = pp_cases[f"bb_{hw}_y{i}"]
        if (f - ref).abs().max() > k_pp(m.cfg, i) * ref.abs().max():
            bad.append(i + 1)
    return bad


def test_bound_sees_the_original_layout_rule(pp_cases):
    """CrossFormer's layout (LDA over the whole map, min(H, W) square groups on small maps) fails the bound."""
    m = create_model(None, PP_CKPT, mode="backbone")
    for blk in m.modules():
        if isinstance(blk, CrossFormerBlock):
            blk.family = Family.CROSSFORMER
    assert _exceeds(m, pp_cases) == [1, 2, 3, 4]


def test_bound_sees_a_missing_cooling_layer(pp_cases):
    m = create_model(None, PP_CKPT, mode="backbone")
    m.layers[0].blocks[2].acl = False
    assert _exceeds(m, pp_cases) == [1, 2, 3, 4]


def test_full_variants_have_the_authors_tensors():
    """Keys, shapes and parameter counts of every released CrossFormer++ (built on the meta device)."""
    with open(os.path.join(DATA, "official_pp_keys.json")) as f:
        official = json.load(f)
    for name, want in official.items():
        variant, mode = (name.split("_")[0], "backbone") if name.endswith("_backbone") else (name, "classifier")
        with torch.device("meta"):
            m = CrossFormer(VARIANTS[variant], mode=mode)
        shapes = {k: list(v.shape) for k, v in m.state_dict().items()}
        assert shapes == want["shapes"], name
        assert sum(p.numel() for p in m.parameters()) == want["params"], name


def test_variant_is_read_off_the_tensors(tmp_path):
    """pp-b and b differ only by the cooling layers; pp-s's backbone weights are pp-s2's."""
    for variant, mode, expect in [("pp-b", "classifier", "pp-b"), ("b", "classifier", "b"),
                                  ("pp-s", "backbone", "pp-s2"), ("pp-h", "classifier", "pp-h")]:
        with torch.device("meta"):
            sd = CrossFormer(VARIANTS[variant], mode=mode).state_dict()
        from crossformer_deploy.model.checkpoint import infer_config

        cfg, classes = infer_config(sd)
        assert cfg.name == expect and (classes is None) == (mode == "backbone"), (variant, cfg.name)


def test_wrong_family_is_one_line(tmp_path):
    m = create_model("pp-tiny", None, num_classes=10)
    p = tmp_path / "pp.pth"
    torch.save({"model": m.state_dict()}, p)
    with pytest.raises(CheckpointError, match=r"holds CrossFormer\+\+ \(pp-tiny\).*not CrossFormer \(tiny\)") as e:
        create_model("tiny", p)
    assert "\n" not in str(e.value)
    s = create_model("s", None)
    p2 = tmp_path / "s.pth"
    torch.save({"model": s.state_dict()}, p2)
    with pytest.raises(CheckpointError, match=r"holds CrossFormer-S .*not CrossFormer\+\+-S "):
        create_model("pp-s", p2)
