"""Reading the authors' MMSegmentation checkpoints: head, backbone, classes off the file; one-line refusals."""
import pytest
import torch

from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.config import get_config
from crossformer_deploy.model.seg import create_segmenter
from crossformer_deploy.model.seg.checkpoint import read_seg_state_dict
from crossformer_deploy.model.seg.config import released_backbone
from tests.helpers import seg_grouping


def test_reads_head_variant_classes_and_drops_the_auxiliary_head(seg_ckpts):
    sd = read_seg_state_dict(seg_ckpts["upernet_tiny"])
    assert not any(k.startswith("auxiliary_head.") for k in sd)
    model = create_segmenter(None, seg_ckpts["upernet_tiny"])
    assert (model.seg_cfg.head, model.cfg.name, model.num_classes, model.seg_cfg.channels) == ("upernet", "tiny", 5, 32)
    fpn = create_segmenter(None, seg_ckpts["fpn_tiny_g14"], grouping=((14, 14, 7, 7), (16, 8, 2, 1)))
    assert (fpn.seg_cfg.head, fpn.seg_cfg.neck_channels, fpn.seg_cfg.channels) == ("fpn", 32, 16)
    pp = create_segmenter(None, seg_ckpts["upernet_pp_tiny"])
    assert pp.cfg.family.value == "crossformer++" and pp.cfg.group_sizes == (7, 7, 7, 7)


def test_released_grouping_table():
    """Semantic FPN S and L were trained with G 14, 14, 7, 7 and I 16, 8, 2, 1; everything else with 7 / 8, 4, 2, 1."""
    for variant, head, groups in [("s", "fpn", (14, 14, 7, 7)), ("l", "fpn", (14, 14, 7, 7)), ("b", "fpn", (7,) * 4),
                                  ("s", "upernet", (7,) * 4), ("pp-s2", "fpn", (7,) * 4)]:
        cfg = released_backbone(get_config(variant), head)
        assert cfg.group_sizes == groups, (variant, head)
        assert cfg.intervals == ((16, 8, 2, 1) if groups[0] == 14 else (8, 4, 2, 1))


def _save(path, obj):
    torch.save(obj, path)
    return str(path)


def test_refusals_are_one_line(seg_ckpts, golden_seg, golden_ckpt, tmp_path):
    sd = torch.load(seg_ckpts["upernet_tiny"], weights_only=False)["state_dict"]
    det = dict(sd)
    det["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(81, 1024)
    cases = {
        _save(tmp_path / "cls.pth", torch.load(golden_ckpt, weights_only=True)): "image classifier checkpoint",
        _save(tmp_path / "det.pth", {"state_dict": det}): "detection checkpoint (roi_head.*)",
        _save(tmp_path / "bb.pth", {"state_dict": {k: v for k, v in sd.items() if k.startswith("backbone.")}}):
            "no decode head",
        _save(tmp_path / "odd.pth", {"state_dict": {**{k: v for k, v in sd.items()
                                                        if not k.startswith("decode_head.psp_modules.")},
                                                     "decode_head.convs.0.weight": torch.zeros(1)}}):
            "neither UPerHead nor FPNHead",
    }
    for path, words in cases.items():
        with pytest.raises(CheckpointError, match=words.replace("(", r"\(").replace(")", r"\)").replace(".*", r"\.\*")):
            create_segmenter(None, path)
    with pytest.raises(CheckpointError, match="holds a UPerNet head"):
        create_segmenter(None, seg_ckpts["upernet_tiny"], head="fpn")
    with pytest.raises(CheckpointError, match=r"holds CrossFormer \(tiny\).*not CrossFormer-S"):
        create_segmenter("s", seg_ckpts["upernet_tiny"])
    with pytest.raises(CheckpointError, match="has 5 classes, not 150"):
        create_segmenter(None, seg_ckpts["upernet_tiny"], num_classes=150)


def test_strict_load_names_the_mismatch(seg_ckpts, tmp_path):
    sd = torch.load(seg_ckpts["upernet_tiny"], weights_only=False)["state_dict"]
    sd.pop("decode_head.bottleneck.bn.running_var")
    path = _save(tmp_path / "short.pth", {"state_dict": sd})
    with pytest.raises(CheckpointError, match=r"1 missing \(e\.g\. decode_head\.bottleneck\.bn\.running_var"):
        create_segmenter(None, path)


def test_grouping_from_the_fixture_matches(golden_seg):
    assert seg_grouping(golden_seg["models"]["fpn_tiny_g14"]) == ((14, 14, 7, 7), (16, 8, 2, 1))
