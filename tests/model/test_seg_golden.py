"""The whole segmenter in PyTorch against MMSegmentation 1.2.2 + the authors' backbone (golden_seg.pt).

Three tiny configs (UPerNet and Semantic FPN on CrossFormer, UPerNet on CrossFormer++ with S2's grouping; the
FPN one with FPN-S's released G 14 / I 16) from mmseg-layout checkpoints, at three inputs: 96x128, 160x224 with
logits back to 150x210 (AlignResize's case: the original is not a multiple of 32) and a batch of two 64x64
(stage-4 maps 3x4, 5x7, 2x2: none divisible by 3 and 6 on both sides, so the PPM bins are uneven).
"""
import pytest
import torch

from crossformer_deploy.model.seg import create_segmenter
from tests.helpers import k_model, seg_grouping

MODELS = ["upernet_tiny", "fpn_tiny_g14", "upernet_pp_tiny"]


def bound(model) -> float:
    """The backbone's rounding bound (tests/helpers.k_model) with the head's 5 sublayers on top."""
    return k_model(model.cfg, model.cfg.num_stages - 1) * 1.25


@pytest.fixture(scope="module")
def models(golden_seg, seg_ckpts):
    return {n: create_segmenter(None, seg_ckpts[n], grouping=seg_grouping(golden_seg["models"][n])) for n in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_released_layout_loads_strictly(name, models, golden_seg):
    model = models[name]
    entry = golden_seg["models"][name]
    assert model.seg_cfg.head == entry["head"] and model.num_classes == golden_seg["num_classes"]
    assert model.seg_cfg.channels == entry["channels"]
    own = set(model.state_dict())
    heads = {k for k in entry["heads"] if not k.startswith("auxiliary_head.")}
    assert heads <= own and not {k for k in own if k.startswith("auxiliary_head.")}


@pytest.mark.parametrize("name", MODELS)
def test_pytorch_equals_mmseg(name, models, golden_seg):
    model = models[name]
    for case, x in golden_seg["inputs"].items():
        ref = golden_seg["models"][name]["logits"][case]
        with torch.no_grad():
            got = model.logits(x, tuple(golden_seg["ori"][case]))
        assert got.shape == ref.shape
        diff, scale = (got - ref).abs().max().item(), ref.abs().max().item()
        assert diff <= bound(model) * scale, f"{name} {case}: {diff:.3g} > {bound(model):.3g} * {scale:.3g}"
        assert torch.equal(model(x, torch.tensor(golden_seg["ori"][case])), ref.argmax(1))


def test_fpn_grouping_matters(golden_seg, seg_ckpts):
    """Group sizes leave no trace in a checkpoint: Semantic FPN-S's (G 14, I 16) run with the default G 7 is
    silently another model, which is why the released configs' table exists."""
    wrong = create_segmenter(None, seg_ckpts["fpn_tiny_g14"])  # tiny: the default 7 / 8, 4, 2, 1
    x = golden_seg["inputs"]["96x128"]
    ref = golden_seg["models"]["fpn_tiny_g14"]["logits"]["96x128"]
    with torch.no_grad():
        diff = (wrong.logits(x) - ref).abs().max().item()
    assert diff > 100 * bound(wrong) * ref.abs().max().item()
