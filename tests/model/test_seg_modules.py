"""The segmenter's parts: exact dynamic pooling, the generic FPN neck, x2 upsampling, ConvModule keys."""
import pytest
import torch
import torch.nn.functional as F

from crossformer_deploy.model.seg.adaptive_pool import AdaptiveAvgPool, pool_matrix
from crossformer_deploy.model.seg.conv_module import ConvModule
from crossformer_deploy.model.seg.fpn import FPN
from crossformer_deploy.model.seg.resize import Upsample2x


@pytest.mark.parametrize("s", [1, 2, 3, 6])
def test_adaptive_pool_equals_torch_at_every_size(s):
    """PyTorch's bins (overlapping where s does not divide, repeated cells where the map is smaller than s)."""
    g = torch.Generator().manual_seed(s)
    for h in range(1, 25):
        for w in (1, 5, 16, 22):
            x = torch.randn(2, 3, h, w, generator=g)
            assert (AdaptiveAvgPool(s)(x) - torch.nn.AdaptiveAvgPool2d(s)(x)).abs().max() <= 1e-6, (h, w)


def test_pool_matrix_rows_average_their_bins():
    p = pool_matrix(16, 6)
    assert torch.allclose(p.sum(1), torch.ones(6))
    assert p[1].nonzero().flatten().tolist() == [2, 3, 4, 5]  # floor(16/6) .. ceil(32/6) - 1: bins overlap


def test_upsample_by_scale_equals_size_based():
    """mmseg's Upsample resizes to int(size * 2): the same pixels as a scale factor of 2."""
    x = torch.randn(1, 4, 5, 7)
    assert torch.equal(Upsample2x()(x), F.interpolate(x, size=(10, 14), mode="bilinear", align_corners=False))


def test_conv_module_keys():
    assert set(ConvModule(4, 8, 3).state_dict()) == {"conv.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                                     "bn.running_var", "bn.num_batches_tracked"}
    assert set(ConvModule(4, 8, 1, norm=False, act=False).state_dict()) == {"conv.weight", "conv.bias"}


def feats(channels=(96, 192, 384, 768), h=64, w=96):
    return [torch.randn(1, c, h // s, w // s) for c, s in zip(channels, (4, 8, 16, 32))]


def test_fpn_semantic_fpn_layout():
    fpn = FPN((96, 192, 384, 768), 256, num_outs=4)
    outs = fpn(feats())
    assert [tuple(o.shape) for o in outs] == [(1, 256, 16, 24), (1, 256, 8, 12), (1, 256, 4, 6), (1, 256, 2, 3)]
    assert len(fpn.state_dict()) == 16  # the keys file's 16 neck tensors


def test_fpn_detection_options():
    """RetinaNet's neck (C3..C5, two extra stride-2 convs, the first on C5) and Mask R-CNN's (a fifth output by
    pooling): the shapes and keys of the released detectors (mm_oracle_keys.txt)."""
    retina = FPN((96, 192, 384, 768), 256, num_outs=5, start_level=1, add_extra_convs="on_input")
    sd = retina.state_dict()
    assert len(sd) == 16 and sd["fpn_convs.3.conv.weight"].shape == (256, 768, 3, 3)
    assert sd["lateral_convs.0.conv.weight"].shape == (256, 192, 1, 1)
    assert [tuple(o.shape[2:]) for o in retina(feats())] == [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    mrcnn = FPN((96, 192, 384, 768), 256, num_outs=5)
    assert len(mrcnn.state_dict()) == 16
    outs = mrcnn(feats())
    assert torch.equal(outs[4], outs[3][:, :, ::2, ::2])  # max_pool2d(kernel 1, stride 2)
    with pytest.raises(ValueError, match="add_extra_convs"):
        FPN((8, 16), 8, num_outs=3, add_extra_convs="sideways")


def test_fit_head_gives_a_trained_classifiers_margins():
    """synthetic.fit_head: only conv_seg changes; the refitted head names about as many classes as it was given
    clusters, with top-1 / top-2 margins of several units where the scaled random head leaves near-ties."""
    from crossformer_deploy.model.seg.factory import build_segmenter
    from crossformer_deploy.model.seg.synthetic import fit_head, trained_like_segmenter

    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    model = trained_like_segmenter(build_segmenter("tiny", head="fpn", num_classes=40), 0, x)

    def margins(m):
        with torch.no_grad():
            top = m.logits(x).topk(2, dim=1).values
        return (top[:, 0] - top[:, 1]).flatten()

    before = {k: v.clone() for k, v in model.state_dict().items()}
    scaled = margins(model)
    fit_head(model, x, clusters=6, steps=200)
    fitted = margins(model)
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"decode_head.conv_seg.weight", "decode_head.conv_seg.bias"}
    with torch.no_grad():
        classes = model.logits(x).argmax(1).unique()
    assert 3 <= len(classes) <= 6
    assert fitted.median() > 2.0 and fitted.median() > 3 * scaled.median(), (fitted.median(), scaled.median())
