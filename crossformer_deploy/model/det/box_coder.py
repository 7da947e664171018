"""mmdet's ``DeltaXYWHBBoxCoder.decode`` (``delta2bbox``): anchors + regression deltas -> boxes, batched.

A delta (dx, dy, dw, dh), after ``* stds + means``, moves the anchor's centre by (dx * w, dy * h) and scales its
size by (exp(dw), exp(dh)), dw and dh clamped to +-|log(wh_ratio_clip)| (16/1000: at most ~62x). Boxes are
clipped to the real (unpadded) image: x to [0, W], y to [0, H]. The float32 operations are mmdet's, in its
order, so that the same inputs give the same bits.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


def decode(anchors: Tensor, deltas: Tensor, max_shape: tuple[Tensor, Tensor] | None = None,
           means: Sequence[float] = (0.0, 0.0, 0.0, 0.0), stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
           wh_ratio_clip: float = 16 / 1000) -> Tensor:
    """anchors [B, K, 4], deltas [B, K, 4] -> boxes [B, K, 4] (x1, y1, x2, y2).

    max_shape: (height [B, 1], width [B, 1]) float tensors, the image each row's boxes are clipped to (per
    image: one graph serves a batch of images of different real sizes); None: no clipping.
    """
    means_t = deltas.new_tensor(list(means))
    stds_t = deltas.new_tensor(list(stds))
    d = deltas * stds_t + means_t
    dxy, dwh = d[..., :2], d[..., 2:]
    pxy = (anchors[..., :2] + anchors[..., 2:]) * 0.5
    pwh = anchors[..., 2:] - anchors[..., :2]
    bound = abs(math.log(wh_ratio_clip))
    dwh = dwh.clamp(min=-bound, max=bound)
    gxy = pxy + pwh * dxy
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if max_shape is None:
        return boxes
    height, width = max_shape
    # torch.clamp(min=0, max=W) per image: W is a per-row tensor, so Max / Min (ONNX Clip takes scalars only)
    upper = torch.stack([width, height, width, height], dim=-1)  # [B, 1, 4]
    return torch.minimum(torch.clamp(boxes, min=0), upper)
