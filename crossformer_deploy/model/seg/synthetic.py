"""Untrained segmenters that behave like trained ones where a comparison needs it.

Random init leaves every BatchNorm at running statistics (0, 1) and affine (1, 0), so BN is nearly the
identity and a BN key-mapping slip cannot show; activations then shrink or grow layer by layer, and the
logits are of order 0.01, where an fp16 or INT8 argmax flips on noise. Here BN statistics are set from one
batch (the data-dependent init a trained network approximates), BN affines and biases move off their init,
and ``conv_seg`` is scaled so the logits spread a few units, like a trained model's.
"""
from __future__ import annotations

import torch
from torch import nn

from crossformer_deploy.model.seg.segmentor import Segmentor
from crossformer_deploy.model.synthetic import trained_like

LOGIT_STD = 3.0  # spread of the logits over classes and pixels after scaling (trained ADE20K models: a few units)


def trained_like_segmenter(model: Segmentor, seed: int = 0, x: torch.Tensor | None = None) -> Segmentor:
    """In place: the backbone ``trained_like``, the heads' BN statistics from ``x`` (default: a seeded
    random 2x3x128x160 batch), BN affines and head biases perturbed, logits of std ``LOGIT_STD``."""
    g = torch.Generator().manual_seed(seed)
    trained_like(model.backbone, seed)
    heads = [m for m in (model.neck, model.decode_head) if m is not None]
    if x is None:
        x = torch.randn(2, model.cfg.in_chans, 128, 160, generator=g)
    bns = [m for h in heads for m in h.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:  # cumulative statistics of this one batch
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        model.logits(x)
        for bn in bns:
            bn.momentum = 0.1
            bn.eval()
            bn.weight.copy_(1.0 + 0.1 * torch.randn(bn.weight.shape, generator=g))
            bn.bias.copy_(0.1 * torch.randn(bn.bias.shape, generator=g))
        for h in heads:
            for m in h.modules():
                if isinstance(m, nn.Conv2d) and m.bias is not None:
                    m.bias.add_(0.05 * torch.randn(m.bias.shape, generator=g))
        spread = model.logits(x).std().item()
        model.decode_head.conv_seg.weight.mul_(LOGIT_STD / max(spread, 1e-12))
    return model.eval()
