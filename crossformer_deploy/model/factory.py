"""``create_model``: the one public way to build a CrossFormer, with or without weights."""
from __future__ import annotations

import os

from ..errors import CheckpointError
from .checkpoint import describe, infer_config, load_weights, read_state_dict
from .config import CrossFormerConfig, get_config
from .crossformer import CrossFormer


def create_model(variant: str | CrossFormerConfig | None = "s", weights: str | os.PathLike | None = None,
                 mode: str = "classifier", num_classes: int | None = None) -> CrossFormer:
    """An eval-mode CrossFormer.

    variant: "t", "s", "b", "l", "tiny" or a config; ``None`` takes it from ``weights``.
    weights: a checkpoint path (any layout of ``checkpoint.py``); the variant and, for a classifier,
    the class count are checked against (or read from) its shapes.
    """
    if weights is None:
        if variant is None:
            raise CheckpointError("give a variant or a checkpoint")
        model = CrossFormer(get_config(variant), mode, 1000 if num_classes is None else num_classes)
        return model.eval()
    sd = read_state_dict(weights)
    found, classes = infer_config(sd)
    if variant is not None and get_config(variant) != found:
        raise CheckpointError(f"{os.fspath(weights)} holds {describe(found)}, "
                              f"not {describe(get_config(variant))}")
    if mode == "classifier":
        if classes is None:
            raise CheckpointError(f"{os.fspath(weights)} is a backbone checkpoint (no classifier head); "
                                  "use mode='backbone'")
        if num_classes is not None and num_classes != classes:
            raise CheckpointError(f"{os.fspath(weights)} has {classes} classes, not {num_classes}")
    model = CrossFormer(found, mode, classes or 0)
    load_weights(model, sd, os.fspath(weights))
    return model.eval()
