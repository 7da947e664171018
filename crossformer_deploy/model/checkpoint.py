"""Load the authors' checkpoints (and ours) safely, and tell the variant from the tensors' shapes.

Layouts accepted: ImageNet releases ``{"model": sd}``; mmdet/mmseg ``{"state_dict": sd}`` with a
``backbone.`` prefix (neck and head keys ignored); a bare state dict; DDP's ``module.`` prefix;
``.safetensors``; the authors' training layout (weights next to optimizer, scheduler and a yacs config).
Derived buffers (``attn.biases``, ``attn.relative_position_index``) are dropped. Pickles are read by
``safe_pickle``: data only, never the checkpoint's code.

The family shows in the keys (CrossFormer++ blocks carry ``ex_conv`` / ``ex_ln``), the variant in the
shapes. Group sizes and intervals leave no trace: a CrossFormer++ checkpoint with a classifier head is
taken with its classifier's (pp-s/b/l/h), a backbone-only one with pp-S's shapes as pp-s2 (the
authors' detection and segmentation configs all build that backbone); ``--variant`` overrides.
"""
from __future__ import annotations

import os
import pickle
import re

import torch

from crossformer_deploy.base.errors import CheckpointError, first_line
from crossformer_deploy.model import safe_pickle
from crossformer_deploy.model.config import PP_GROUPING, TINIES, VARIANTS, CrossFormerConfig, get_config

DERIVED = ("attn.biases", "attn.relative_position_index", "attn_mask")
HEAD_KEYS = ("norm.weight", "norm.bias", "head.weight", "head.bias")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The model's tensors from a checkpoint file, unwrapped and with derived buffers dropped."""
    return unwrap(read_checkpoint(path), checkpoint_file(path))


def read_checkpoint(path: str | os.PathLike) -> object:
    """What a checkpoint file holds, as loaded (a dict of tensors and plain data), read safely."""
    path = checkpoint_file(path)
    try:
        if path.endswith(".safetensors"):
            # here, not at the top: the model package also runs where only PyTorch is (the GPU check)
            from safetensors.torch import load_file

            obj = load_file(path)
        else:
            # weights_only=False only hands the job to safe_pickle, whose allow-list replaces torch's
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=safe_pickle)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused, the pickle needs code execution to load ({first_line(e)}); "
                              "only tensors, containers and known config classes are loaded") from None
    except Exception as e:  # truncated zip, garbage bytes, a pickle that builds nonsense: all the file's fault
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line(e)})") from None
    return obj


def checkpoint_file(path: str | os.PathLike) -> str:
    """``path`` as a string if it is a readable file, else CheckpointError saying what it is instead."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} is a directory, not a file")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    if not os.access(path, os.R_OK):
        raise CheckpointError(f"checkpoint {path}: permission denied")
    return path


def read_mm_state_dict(path: str | os.PathLike, framework: str, head: str, task: str) -> tuple[str, dict]:
    """(path, tensors with ``module.`` stripped) of an OpenMMLab checkpoint (``{"state_dict": ..., "meta": ...}``);
    ``framework`` ("MMSegmentation"), ``head`` (its head's key prefix, "decode_head.") and ``task`` ("seg") only
    word the CheckpointError a classifier's or any other file gets."""
    path = checkpoint_file(path)
    obj = read_checkpoint(path)
    sd = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        inner = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
        keys = inner if isinstance(inner, dict) else {}
        if any(str(k).endswith("head.weight") and not str(k).startswith(head) for k in keys):
            raise CheckpointError(f"{path} is an image classifier checkpoint (head.weight, no {head}*); "
                                  f"--task {task} needs the authors' {framework} checkpoint")
        raise CheckpointError(f"{path} is not an {framework} checkpoint (no 'state_dict' with {head}*)")
    if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: no state dict of tensors found")
    return path, {k.removeprefix("module."): v for k, v in sd.items()}


def unwrap(obj: object, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{where}: no state dict of tensors found")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    if any(k.startswith("backbone.") for k in sd):  # mmdet / mmseg: keep the backbone only
        sd = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith("backbone.")}
    return {k: v for k, v in sd.items() if not k.endswith(DERIVED)}


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _first(sd: dict, pattern: str) -> torch.Tensor:
    """The first tensor whose key matches (a missing block's key is reported by load_weights, not here)."""
    rx = re.compile(pattern)
    return sd[next(k for k in sorted(sd) if rx.match(k))]


def infer_config(sd: dict[str, torch.Tensor]) -> tuple[CrossFormerConfig, int | None]:
    """(architecture, class count or None for a backbone checkpoint) read off the tensor shapes."""
    try:
        embed_dim = sd["patch_embed.norm.weight"].shape[0]
        n_stages = _count(sd, r"layers\.(\d+)\.")
        depths = tuple(_count(sd, rf"layers\.{i}\.blocks\.(\d+)\.") for i in range(n_stages))
        heads = tuple(sd[f"layers.{i}.blocks.0.attn.pos.pos3.2.weight"].shape[0] for i in range(n_stages))
        patch_sizes = tuple(sd[f"patch_embed.projs.{k}.weight"].shape[-1]
                            for k in range(_count(sd, r"patch_embed\.projs\.(\d+)\.")))
        merges = tuple(
            tuple(sd[f"layers.{i}.downsample.reductions.{k}.weight"].shape[-1]
                  for k in range(_count(sd, rf"layers\.{i}\.downsample\.reductions\.(\d+)\.")))
            for i in range(n_stages - 1))
        mlp_ratios = tuple(_first(sd, rf"layers\.{i}\.blocks\.\d+\.mlp\.fc1\.weight$").shape[0] / (embed_dim * 2**i)
                           for i in range(n_stages))
    except (KeyError, IndexError, StopIteration):
        some = ", ".join(sorted(sd)[:3])
        raise CheckpointError(f"not a CrossFormer checkpoint (keys start {some} ...)") from None
    num_classes = sd["head.weight"].shape[0] if "head.weight" in sd else None
    cooling = any(".ex_conv." in k for k in sd)  # only CrossFormer++ has cooling layers
    family = {**PP_GROUPING, "group_sizes": PP_GROUPING["group_sizes"][:n_stages],
              "intervals": PP_GROUPING["intervals"][:n_stages]} if cooling else {}
    try:
        cfg = CrossFormerConfig(embed_dim, depths, heads, patch_sizes=patch_sizes, merge_sizes=merges,
                                mlp_ratios=mlp_ratios, **family)
    except ValueError as e:
        raise CheckpointError(f"not a CrossFormer checkpoint ({first_line(e)})") from None
    known = [v for v in (*VARIANTS.values(), *TINIES.values()) if v.same_tensors(cfg)]
    if num_classes is None:  # a backbone: the detection variant where one shares the shapes (pp-s2)
        known.sort(key=lambda v: not v.name.endswith("2"))
    else:
        known = [v for v in known if not v.name.endswith("2")]
    return (known[0] if known else cfg), num_classes


def describe(cfg: CrossFormerConfig) -> str:
    return (f"{cfg.label} (embed {cfg.embed_dim}, depths {','.join(map(str, cfg.depths))}, "
            f"heads {','.join(map(str, cfg.num_heads))})")


def asked_variant(found: CrossFormerConfig, variant: str | None, where: str) -> CrossFormerConfig:
    """The config to build: ``variant``'s when given (refused if its tensors are not the checkpoint's), else the
    one read off the checkpoint."""
    if variant is None:
        return found
    asked = get_config(variant)
    if not asked.same_tensors(found):
        raise CheckpointError(f"{where} holds {describe(found)}, not {describe(asked)}")
    return asked


def load_weights(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """Strict load: every parameter present with its shape, nothing unknown (head keys may be
    surplus for a backbone). Raises CheckpointError naming the first few mismatches."""
    if getattr(model, "mode", "classifier") == "backbone":
        sd = {k: v for k, v in sd.items() if k not in HEAD_KEYS}
    load_strict(model, sd, where)


def load_strict(model: torch.nn.Module, sd: dict[str, torch.Tensor], where: str = "checkpoint") -> None:
    """``sd`` into ``model``: every tensor present with its shape and nothing unknown, else one CheckpointError
    naming the first few missing, unexpected and misshapen keys (the classifier's and the segmenter's rule)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointError(f"{where} does not fit the model: " + "; ".join(problems))
    model.load_state_dict(sd, strict=True)
