"""Our model against the authors' code: fixtures made by tests/fixtures/make_golden.py."""

import pytest
import torch

from crossformer_deploy import create_model
from crossformer_deploy.model.crossformer import CrossFormerBlock
from tests.helpers import assert_close, k_block, k_model


def test_classifier_224(golden_cases, golden_ckpt):
    m = create_model(None, golden_ckpt)
    with torch.no_grad():
        y = m(golden_cases["cls_224_x"])
    assert_close(y, golden_cases["cls_224_y"], k_model(m.cfg, 3, head=True), "logits")


@pytest.mark.parametrize("hw", ["96x160", "224x320", "64x96", "224x288"])
def test_backbone_sizes(golden_cases, golden_ckpt, hw):
    m = create_model(None, golden_ckpt, mode="backbone")
    with torch.no_grad():
        feats = m(golden_cases[f"bb_{hw}_x"])
    assert len(feats) == 4
    for i, f in enumerate(feats):
        ref = golden_cases[f"bb_{hw}_y{i}"]
        assert f.shape == ref.shape
        assert_close(f, ref, k_model(m.cfg, i), f"stage {i + 1}")


@pytest.mark.parametrize("key,h,w,dim,heads,interval", [
    ("blk_13x19_i4", 13, 19, 64, 2, 4), ("blk_11x9_i2", 11, 9, 64, 2, 2), ("blk_15x22_i8", 15, 22, 32, 1, 8)])
def test_padded_lda_block(golden_cases, key, h, w, dim, heads, interval):
    blk = CrossFormerBlock(dim, heads, 7, interval, lda=True, mlp_ratio=4.0).eval()
    prefix = key + "_sd."
    blk.load_state_dict({k[len(prefix):]: v for k, v in golden_cases.items() if k.startswith(prefix)})
    x = golden_cases[key + "_x"]
    with torch.no_grad():
        y = blk(x, h, w)
    assert_close(y, golden_cases[key + "_y"], k_block(dim), key)


def test_stateless_small_then_large(golden_cases, golden_ckpt):
    """A small map switches blocks to SDA for that call only; the authors' backbone keeps the switch."""
    m = create_model(None, golden_ckpt, mode="backbone")
    fresh = create_model(None, golden_ckpt, mode="backbone")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        m(golden_cases["bb_64x96_x"])
        out = m(golden_cases["bb_224x320_x"])
        ref = fresh(golden_cases["bb_224x320_x"])
    for a, b in zip(out, ref):
        assert torch.equal(a, b)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
