"""``create_model``: the one public way to build a CrossFormer, with or without weights."""
from __future__ import annotations

import os

import torch

from crossformer_deploy.base.errors import CheckpointError
from crossformer_deploy.base.fileio import sha256_file
from crossformer_deploy.model.checkpoint import (
    asked_variant,
    checkpoint_file,
    infer_config,
    load_weights,
    read_state_dict,
)
from crossformer_deploy.model.config import CrossFormerConfig, get_config
from crossformer_deploy.model.crossformer import CrossFormer


def create_model(variant: str | CrossFormerConfig | None = "s", weights: str | os.PathLike | None = None,
                 mode: str = "classifier", num_classes: int | None = None) -> CrossFormer:
    """An eval-mode CrossFormer.

    variant: "t", "s", "b", "l", "pp-s", "pp-b", "pp-l", "pp-h", "pp-s2", "tiny", "pp-tiny" or a config;
    ``None`` takes it from ``weights``.
    weights: a checkpoint path (any layout of ``checkpoint.py``); the variant and, for a classifier,
    the class count are checked against (or read from) its tensors. A variant that differs from the
    checkpoint's only in group sizes and intervals (pp-s / pp-s2) is taken as given.
    """
    if weights is None:
        if variant is None:
            raise CheckpointError("give a variant or a checkpoint")
        model = CrossFormer(get_config(variant), mode, 1000 if num_classes is None else num_classes)
        return model.eval()
    sd = read_state_dict(weights)
    found, classes = infer_config(sd)
    found = asked_variant(found, variant, os.fspath(weights))
    if mode == "classifier":
        if classes is None:
            raise CheckpointError(f"{os.fspath(weights)} is a backbone checkpoint (no classifier head); "
                                  "use mode='backbone'")
        if num_classes is not None and num_classes != classes:
            raise CheckpointError(f"{os.fspath(weights)} has {classes} classes, not {num_classes}")
    model = CrossFormer(found, mode, classes or 0)
    load_weights(model, sd, os.fspath(weights))
    return model.eval()


def weights_label(weights: str | os.PathLike | None, seed: int = 0) -> str:
    """How an exported model records its weights, so validation can rebuild the same reference."""
    if weights is None:
        return f"random-init seed={seed}"

    return f"{os.path.basename(os.fspath(weights))} sha256={sha256_file(checkpoint_file(weights))}"


def build_model(variant: str | CrossFormerConfig | None, weights: str | os.PathLike | None = None,
                mode: str = "classifier", num_classes: int | None = None, seed: int = 0) -> CrossFormer:
    """``create_model``, with untrained weights made reproducible from ``seed`` (export and validate
    must build the same random model)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_model(variant, weights, mode, num_classes)


def model_from_label(variant: str | None, label: str, mode: str, num_classes: int,
                     weights: str | os.PathLike | None = None) -> CrossFormer:
    """Rebuild the PyTorch model an export was made from (its metadata ``weights`` label)."""
    if variant.startswith("custom"):
        variant = None  # a custom architecture: read it off the checkpoint
    if label.startswith("random-init seed="):
        return build_model(variant, None, mode, num_classes, seed=int(label.split("=")[1]))
    if weights is None:
        raise CheckpointError(f"this model was exported from {label.split(' sha256=')[0]}: pass it with --weights")
    got = weights_label(weights)
    if got.split("sha256=")[1] != label.split("sha256=")[-1]:
        raise CheckpointError(f"{os.fspath(weights)} is not the checkpoint this model was exported from "
                              f"({label[:80]})")
    return build_model(variant, weights, mode, num_classes)
