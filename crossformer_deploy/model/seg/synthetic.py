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


def fit_head(model: Segmentor, x: torch.Tensor, clusters: int = 24, steps: int = 300, seed: int = 0,
             samples: int = 20000) -> Segmentor:
    """In place: ``conv_seg`` refitted as a trained model's classifier would be, on the model's own features.

    A random ``conv_seg`` over 150 classes leaves most pixels within a logit or two of a tie (CrossFormer-S
    UperNet: 61 % of pixels under 1.0 between the top two), so any precision's argmax flips there on noise; a
    trained head separates what the features separate, with margins of several units. Here the features that
    reach ``conv_seg`` on ``x`` are clustered (k-means, ``clusters`` groups: about the classes of a scene), each
    cluster gets a class, and ``conv_seg`` is trained (logistic regression) to name them: the backbone and the
    rest of the head are unchanged, the decision boundaries are a trained classifier's. For precision checks
    (benchmarks/seg_vs_mmseg.py ``precision --head-fit probe``); a stand-in for trained weights, not one."""
    g = torch.Generator().manual_seed(seed)
    conv = model.decode_head.conv_seg
    seen: list[torch.Tensor] = []
    hook = conv.register_forward_hook(lambda _m, inp, _out: seen.append(inp[0].detach()))
    try:
        with torch.no_grad():
            model.logits(x)
    finally:
        hook.remove()
    feats = seen[0].permute(0, 2, 3, 1).reshape(-1, conv.in_channels)
    feats = feats[torch.randperm(len(feats), generator=g)[:samples]]
    centers = feats[torch.randperm(len(feats), generator=g)[:clusters]].clone()
    for _ in range(25):  # Lloyd's k-means
        assign = torch.cdist(feats, centers).argmin(1)
        for k in range(clusters):
            members = feats[assign == k]
            if len(members):
                centers[k] = members.mean(0)
    assign = torch.cdist(feats, centers).argmin(1)
    labels = torch.randperm(conv.out_channels, generator=g)[:clusters][assign]
    weight = torch.zeros_like(conv.weight[:, :, 0, 0]).requires_grad_()
    bias = torch.zeros_like(conv.bias).requires_grad_()
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    mean, std = feats.mean(0), feats.std(0) + 1e-6
    z = (feats - mean) / std
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(z @ weight.T + bias, labels) + 1e-4 * weight.square().sum()
        loss.backward()
        opt.step()
    with torch.no_grad():  # fold the standardisation into the 1x1 conv
        conv.weight.copy_((weight / std)[:, :, None, None])
        conv.bias.copy_(bias - (weight / std) @ mean)
    return model.eval()
