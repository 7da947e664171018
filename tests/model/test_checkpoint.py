import os
import pickle

import pytest
import torch

from crossformer_deploy import create_model
from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.checkpoint import infer_config, read_state_dict


def test_release_layout_and_class_count(golden_ckpt):
    cfg, classes = infer_config(read_state_dict(golden_ckpt))
    assert (cfg.embed_dim, cfg.depths, cfg.num_heads, classes) == (32, (2, 2, 2, 2), (1, 2, 4, 8), 10)
    assert create_model("tiny", golden_ckpt).num_classes == 10


def test_mmdet_layout_and_derived_buffers(tmp_path, golden_ckpt, golden_cases):
    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    det = {"backbone." + k: v for k, v in sd.items() if not k.startswith(("norm.", "head."))}
    det["neck.lateral.0.weight"] = torch.zeros(3)
    det["backbone.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(49, 49, dtype=torch.long)
    det["backbone.layers.0.blocks.0.attn.biases"] = torch.zeros(169, 2)
    p = tmp_path / "det.pth"
    torch.save({"state_dict": det, "meta": {"epoch": 12}}, p)
    m = create_model(None, p, mode="backbone")
    with torch.no_grad():
        y = m(golden_cases["bb_96x160_x"])[3]
    assert (y - golden_cases["bb_96x160_y3"]).abs().max() <= 1e-5
    with pytest.raises(CheckpointError, match="backbone checkpoint"):
        create_model(None, p, mode="classifier")


def test_bare_ddp_and_safetensors(tmp_path, golden_ckpt):
    from safetensors.torch import save_file

    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    ref = create_model(None, golden_ckpt).state_dict()
    for name in ("ddp.pth", "w.safetensors"):
        got = create_model(None, tmp_path / name).state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in ref)


def test_wrong_variant_is_named(tmp_path):
    p = tmp_path / "t.pth"
    torch.save({"model": create_model("t").state_dict()}, p)
    with pytest.raises(CheckpointError, match=r"holds CrossFormer-T .*not CrossFormer-S"):
        create_model("s", p)


def test_foreign_and_corrupt(tmp_path):
    p = tmp_path / "foreign.pth"
    torch.save({"model": {"conv1.weight": torch.zeros(3)}}, p)
    with pytest.raises(CheckpointError, match="not a CrossFormer checkpoint"):
        create_model(None, p)
    bad = tmp_path / "trunc.pth"
    bad.write_bytes(open(tmp_path / "foreign.pth", "rb").read()[:100])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        create_model(None, bad)
    with pytest.raises(CheckpointError, match="not found"):
        create_model(None, tmp_path / "nope.pth")


class Evil:
    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return (self.call, self.args)


@pytest.mark.parametrize("torch_zip", [False, True], ids=["plain-pickle", "torch-save"])
def test_pickle_needing_code_is_refused(tmp_path, golden_ckpt, torch_zip):
    marker = tmp_path / "pwned"
    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    evils = {f"{os.system.__module__}.system": Evil(os.system, f"touch {marker}"),
             "builtins.eval": Evil(eval, f"open({str(marker)!r}, 'w')"),
             "builtins.__import__": Evil(__import__, "subprocess")}
    for name, evil in evils.items():
        p = tmp_path / "evil.pth"
        if torch_zip:  # beside real weights, where the authors keep their config
            torch.save({"model": sd, "config": evil}, p)
        else:  # a bare pickle (tensors would pickle through torch's own loader, refused as well)
            with open(p, "wb") as f:
                pickle.dump({"model": evil}, f, protocol=2)
        with pytest.raises(CheckpointError, match=rf"refused, the pickle needs code .*{name}") as e:
            read_state_dict(p)
        assert "\n" not in str(e.value) and not marker.exists(), name


def test_partial_checkpoint_names_missing(tmp_path, golden_ckpt):
    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    sd.pop("layers.1.blocks.0.mlp.fc1.weight")
    p = tmp_path / "partial.pth"
    torch.save({"model": sd}, p)
    with pytest.raises(CheckpointError, match=r"1 missing \(e.g. layers.1.blocks.0.mlp.fc1.weight"):
        create_model(None, p)
