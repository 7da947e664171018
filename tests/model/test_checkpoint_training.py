"""Checkpoints as training scripts write them: weights next to optimizer, scheduler and config objects.

They must load without running any of the pickle's code: config classes become inert stand-ins
(crossformer_deploy/model/safe_pickle.py), anything else is refused with one line.
"""
import argparse
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from crossformer_deploy import create_model
from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.model.checkpoint import read_state_dict
from crossformer_deploy.model.safe_pickle import ArgsNamespace, ConfigNode


def authors_config():
    """A yacs config shaped like the authors' config.py (defaults, then frozen after merging)."""
    from yacs.config import CfgNode as CN

    cfg = CN()
    cfg.DATA = CN()
    cfg.DATA.IMG_SIZE = 224
    cfg.MODEL = CN()
    cfg.MODEL.TYPE = "cross-scale"
    cfg.MODEL.NAME = "tiny_golden"
    cfg.MODEL.NUM_CLASSES = 10
    cfg.MODEL.CROS = CN()
    cfg.MODEL.CROS.PATCH_SIZE = [4, 8, 16, 32]
    cfg.MODEL.CROS.MERGE_SIZE = [[2, 4], [2, 4], [2, 4]]
    cfg.MODEL.CROS.GROUP_SIZE = [7, 7, 7, 7]
    cfg.TRAIN = CN()
    cfg.TRAIN.BASE_LR = 5e-4
    cfg.AMP_OPT_LEVEL = "O1"
    cfg.freeze()
    return cfg


def save_like_the_authors(path, model, cfg, epoch=299, max_accuracy=82.5):
    """What the authors' save_checkpoint writes (utils.py of github.com/cheerss/CrossFormer), with the
    apex ``amp`` state it adds when AMP_OPT_LEVEL is not O0."""
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.TRAIN.BASE_LR)
    model(torch.randn(1, 3, 64, 64)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "lr_scheduler": sched.state_dict(),
             "max_accuracy": max_accuracy, "epoch": epoch, "config": cfg}
    if cfg.AMP_OPT_LEVEL != "O0":
        state["amp"] = {"loss_scaler0": {"loss_scale": 65536.0, "unskipped": 0}}
    torch.save(state, path)


@pytest.fixture(scope="module")
def authors_ckpt(tmp_path_factory, golden_ckpt):
    pytest.importorskip("yacs", reason="yacs is in the test extra (the authors' config class)")
    model = create_model(None, golden_ckpt).train()
    path = tmp_path_factory.mktemp("train") / "ckpt_epoch_299.pth"
    save_like_the_authors(path, model, authors_config())
    return path, {k: v.clone() for k, v in model.state_dict().items()}


def test_authors_training_checkpoint_loads(authors_ckpt):
    path, saved = authors_ckpt
    with pytest.raises(pickle.UnpicklingError):  # what torch alone says: the reason for safe_pickle
        torch.load(path, weights_only=True)
    sd = read_state_dict(path)
    assert sd.keys() == saved.keys() and all(torch.equal(sd[k], saved[k]) for k in saved)
    model = create_model(None, path)
    got = model.state_dict()
    assert all(torch.equal(got[k], saved[k]) for k in got)


def test_authors_config_is_an_inert_stand_in(authors_ckpt):
    path, _ = authors_ckpt
    from crossformer_deploy.model import safe_pickle

    obj = torch.load(path, weights_only=False, pickle_module=safe_pickle)
    cfg = obj["config"]
    assert type(cfg) is ConfigNode and type(cfg["MODEL"]["CROS"]) is ConfigNode
    assert cfg["MODEL"]["CROS"]["MERGE_SIZE"] == [[2, 4], [2, 4], [2, 4]] and cfg["DATA"]["IMG_SIZE"] == 224
    assert cfg.yacs_flags["__immutable__"] is True
    assert obj["epoch"] == 299 and obj["amp"]["loss_scaler0"]["loss_scale"] == 65536.0
    assert obj["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)


def test_loading_never_imports_yacs(authors_ckpt):
    """The stand-in must not run (or even import) yacs: checked in a fresh interpreter."""
    path, _ = authors_ckpt
    code = ("import sys; from crossformer_deploy.model.checkpoint import read_state_dict; "
            f"sd = read_state_dict({str(path)!r}); "
            "assert 'yacs' not in sys.modules, 'yacs was imported'; print(len(sd))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and int(r.stdout) > 0, r.stderr


def test_argparse_namespace_checkpoint(tmp_path, golden_ckpt):
    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    p = tmp_path / "args.pth"
    torch.save({"model": sd, "args": argparse.Namespace(lr=0.1, model="crossformer_tiny")}, p)
    from crossformer_deploy.model import safe_pickle

    args = torch.load(p, weights_only=False, pickle_module=safe_pickle)["args"]
    assert type(args) is ArgsNamespace and (args.lr, args.model) == (0.1, "crossformer_tiny")
    got = read_state_dict(p)
    assert all(torch.equal(got[k], sd[k]) for k in sd)


def test_mmdet_checkpoint_with_meta(tmp_path, golden_ckpt, golden_cases):
    """mmcv's save_checkpoint: {"meta", "state_dict", "optimizer"}; meta holds the config text, env info,
    the class names and hook messages (a best score is often a numpy scalar)."""
    sd = torch.load(golden_ckpt, weights_only=True)["model"]
    det = {"backbone." + k: v for k, v in sd.items() if not k.startswith(("norm.", "head."))}
    det["rpn_head.rpn_conv.weight"] = torch.randn(4, 4, 3, 3)
    meta = {"mmcv_version": "1.3.17", "time": "Thu Mar  3 10:00:00 2022", "epoch": 12, "iter": 87960,
            "CLASSES": ("person", "bicycle", "car"), "env_info": "sys.platform: linux\nPython: 3.7.10",
            "config": "model = dict(\n    type='MaskRCNN',\n    backbone=dict(type='CrossFormer_S'))\n",
            "seed": None, "hook_msgs": {"last_ckpt": "work_dirs/epoch_12.pth", "best_score": np.float64(0.464)}}
    p = tmp_path / "mask_rcnn_cross_s.pth"
    torch.save({"meta": meta, "state_dict": det, "optimizer": {"state": {}, "param_groups": []}}, p)
    m = create_model(None, p, mode="backbone")
    with torch.no_grad():
        y = m(golden_cases["bb_96x160_x"])[3]
    assert (y - golden_cases["bb_96x160_y3"]).abs().max() <= 1e-5
    got = read_state_dict(p)
    assert all(torch.equal(got[k[len("backbone."):]], v) for k, v in det.items() if k.startswith("backbone."))


def test_stand_ins_refuse_planted_attributes(tmp_path, golden_ckpt):
    """A pickle may BUILD an allowed object with any state: the stand-ins take plain data only."""
    sd = torch.load(golden_ckpt, weights_only=True)["model"]

    class FakeNamespace:  # pickles as argparse.Namespace with a state that plants an instance __setstate__,
        def __reduce__(self):  # which pickle would look up (and call) on a second BUILD
            return (argparse.Namespace, (), {"__setstate__": "planted"})

    p = tmp_path / "planted.pth"
    torch.save({"model": sd, "args": FakeNamespace()}, p)
    with pytest.raises(CheckpointError, match=r"refused.*not plain attributes"):
        read_state_dict(p)
