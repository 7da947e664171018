"""Host side: a detection's 28x28 mask probabilities pasted into the original image, by mmdet's rule.

mmdet 3.x's ``FCNMaskHead._predict_by_feat_single`` (CPU path, one detection a chunk) and ``_do_paste_mask``:
the region from floor(min x1, y1) - 1 (clamped at 0) to ceil(max x2, y2) + 1 (clamped to the image) is sampled
with ``grid_sample`` (bilinear, ``align_corners=False``, zeros outside) at pixel centres mapped into the box
(``(px + 0.5 - x1) / (x2 - x1) * 2 - 1``; a zero-width box's infinities read as 0), then ``>= threshold``
(0.5); everything outside the region is False.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def paste_mask(mask: Tensor, box: Tensor, height: int, width: int, threshold: float = 0.5) -> Tensor:
    """mask [S, S] probabilities, box [4] (x1, y1, x2, y2; image pixels) -> bool [height, width]."""
    x0 = max(int(torch.floor(box[0]).item()) - 1, 0)
    y0 = max(int(torch.floor(box[1]).item()) - 1, 0)
    x1 = min(int(torch.ceil(box[2]).item()) + 1, width)
    y1 = min(int(torch.ceil(box[3]).item()) + 1, height)
    out = torch.zeros(height, width, dtype=torch.bool)
    if x1 <= x0 or y1 <= y0:
        return out
    box = box.to(torch.float32)
    gy = (torch.arange(y0, y1, dtype=torch.float32) + 0.5 - box[1]) / (box[3] - box[1]) * 2 - 1
    gx = (torch.arange(x0, x1, dtype=torch.float32) + 0.5 - box[0]) / (box[2] - box[0]) * 2 - 1
    gy, gx = (torch.where(torch.isinf(g), torch.zeros_like(g), g) for g in (gy, gx))
    grid = torch.stack([gx[None, :].expand(len(gy), -1), gy[:, None].expand(-1, len(gx))], -1)
    sampled = F.grid_sample(mask.to(torch.float32)[None, None], grid[None], align_corners=False)[0, 0]
    out[y0:y1, x0:x1] = sampled >= threshold
    return out


def paste_masks(masks: Tensor | np.ndarray, dets: Tensor | np.ndarray, height: int, width: int,
                threshold: float = 0.5) -> Tensor:
    """One image's detector outputs -> bool [N, height, width]: masks [M, S, S], dets [M, 5] (boxes in
    original-image pixels, score), N = the rows with score > 0 (padding rows dropped)."""
    masks, dets = torch.as_tensor(masks), torch.as_tensor(dets)
    rows = torch.nonzero(dets[:, 4] > 0).flatten().tolist()
    out = torch.zeros(len(rows), height, width, dtype=torch.bool)
    for i, r in enumerate(rows):
        out[i] = paste_mask(masks[r], dets[r, :4], height, width, threshold)
    return out
