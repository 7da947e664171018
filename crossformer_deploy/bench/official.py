"""The authors' own model as the benchmark's peer, built from their source file, which the user points to.

What a user of the authors' code deploys without us is their model exported by plain ``torch.onnx.export`` at a
fixed size (their classifier computes its attention masks at construction, for one square image size, and cannot
export dynamically). So the peers of ``crossformer-bench`` run that graph, with the same weights as ours. Their
code is not part of this package: ``--official FILE`` names their ``models/crossformer.py`` (the ``crossformer``
branch for CrossFormer, ``main`` for CrossFormer++) of a clone of github.com/cheerss/CrossFormer.

Their file imports three helpers from timm (``DropPath``, ``to_2tuple``, ``trunc_normal_``); where timm is not
installed, inference-only stand-ins written here are registered in its place.
"""
from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import sys
import types
from collections.abc import Callable

import torch
from torch import nn

from crossformer_deploy.base.errors import UsageError, first_line
from crossformer_deploy.model.config import CrossFormerConfig, Family

PeerFactory = Callable[[tuple[int, int]], nn.Module]
DERIVED_BUFFERS = ("attn.biases", "attn.relative_position_index", "attn_mask")


def _timm_stand_in() -> None:
    """timm.models.layers with the three names the authors' file imports (inference: DropPath is identity)."""
    if "timm" in sys.modules or importlib.util.find_spec("timm") is not None:  # timm, or the stand-in already
        return

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (list, tuple)) else (x, x)

    def trunc_normal_(tensor: torch.Tensor, std: float = 1.0, **_: object) -> torch.Tensor:
        return nn.init.trunc_normal_(tensor, std=std)

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, trunc_normal_
    models = types.ModuleType("timm.models")
    models.layers = layers
    timm = types.ModuleType("timm")
    timm.models = models
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


def load_official(path: str, cfg: CrossFormerConfig, state_dict: dict[str, torch.Tensor],
                  num_classes: int) -> PeerFactory:
    """A factory of the authors' classifier for ``cfg`` at a given square size, holding ``state_dict``."""
    file = os.path.join(path, "models", "crossformer.py") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise UsageError(f"--official {path}: no such file (give the authors' models/crossformer.py, or their clone)")
    _timm_stand_in()
    spec = importlib.util.spec_from_file_location("crossformer_official", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        cls = module.CrossFormer
    except Exception as e:  # their file, not ours: say which and why in one line
        raise UsageError(f"--official {file}: could not load the authors' CrossFormer ({first_line(e)})") from None
    params = inspect.signature(cls.__init__).parameters
    pp = "use_acl" in params
    if pp != (cfg.family is Family.CROSSFORMER_PP):
        want = "main branch (CrossFormer++)" if cfg.family is Family.CROSSFORMER_PP else "crossformer branch"
        raise UsageError(f"--official {file} is the authors' {'CrossFormer++' if pp else 'CrossFormer'}, "
                         f"{cfg.label} needs their {want} models/crossformer.py")

    def make(size: tuple[int, int]) -> nn.Module:
        if size[0] != size[1]:
            raise UsageError(f"the authors' classifier takes square images only (img_size), not {size[0]}x{size[1]}")
        kw = dict(img_size=size[0], patch_size=list(cfg.patch_sizes), in_chans=cfg.in_chans, num_classes=num_classes,
                  embed_dim=cfg.embed_dim, depths=list(cfg.depths), num_heads=list(cfg.num_heads),
                  group_size=list(cfg.group_sizes), crs_interval=list(cfg.intervals),
                  merge_size=[list(m) for m in cfg.merge_sizes],
                  mlp_ratio=list(cfg.mlp_ratios) if pp else cfg.mlp_ratios[0], drop_path_rate=0.0)
        with contextlib.redirect_stdout(io.StringIO()):  # their CrossFormer++ prints its group sizes
            model = cls(**{k: v for k, v in kw.items() if k in params})
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.endswith(DERIVED_BUFFERS)]
        if missing or unexpected:
            raise UsageError(f"the authors' model does not take these weights: {len(missing)} missing (e.g. "
                             f"{missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
        return model.eval()

    return make
