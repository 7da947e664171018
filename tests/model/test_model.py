import json
import os

import pytest
import torch

from crossformer_deploy import create_model
from crossformer_deploy.base.errors import InputSizeError
from crossformer_deploy.model import TINY
from crossformer_deploy.model.grouping import group, group_index, group_layout, ungroup, ungroup_index
from tests.helpers import ROOT

DATA = os.path.join(ROOT, "tests", "data")


@pytest.mark.parametrize("variant,millions", [("t", 27.78), ("s", 30.66), ("b", 51.97), ("l", 91.97)])
def test_param_counts_and_keys(variant, millions):
    with open(os.path.join(DATA, "official_keys.json")) as f:
        keys = json.load(f)
    m = create_model(variant)
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 2) == millions
    assert sorted(m.state_dict()) == keys[variant]
    assert sorted(create_model(variant, mode="backbone").state_dict()) == keys[variant + "_backbone"]


@pytest.mark.parametrize("h,w,msg", [(225, 224, "height 225 -> 224 or 256"), (224, 100, "width 100 -> 96 or 128"),
                                     (16, 64, "height 16 -> 32")])
def test_bad_sizes_name_nearest(h, w, msg):
    m = create_model(TINY)
    with pytest.raises(ValueError, match=msg):
        m(torch.zeros(1, 3, h, w))
    with pytest.raises(InputSizeError):
        m(torch.zeros(1, 3, h, w))


@pytest.mark.parametrize("h,w,lda,interval", [(13, 19, True, 4), (9, 16, False, 8), (56, 80, True, 8),
                                              (6, 10, True, 2), (7, 9, True, 1)])
def test_group_ungroup_roundtrip(h, w, lda, interval):
    lay = group_layout(h, w, 7, interval, lda)
    x = torch.randn(2, h, w, 5)
    idx, valid = group_index(lay)
    g = group(x, idx)
    assert g.shape == (2, lay.nh * lay.nw, lay.gh * lay.gw, 5)
    assert torch.equal(g[:, ~valid], x[:, :1, :1].reshape(2, 1, 5).expand_as(g[:, ~valid]))  # copies of token 0
    assert int(valid.sum()) == h * w  # every token exactly once
    assert torch.equal(ungroup(g, ungroup_index(lay)), x)


def test_small_map_rule():
    lay = group_layout(7, 9, 7, 1, lda=True)  # stage 4 at 224x288: LDA becomes 7x7 SDA
    assert (lay.gh, lay.gw, lay.nh, lay.nw, lay.s) == (7, 7, 1, 2, 1)
    lay = group_layout(16, 24, 7, 4, lda=True)
    assert (lay.gh, lay.gw, lay.nh, lay.nw, lay.s) == (4, 6, 4, 4, 4)
