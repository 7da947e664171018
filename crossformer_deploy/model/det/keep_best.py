"""After NMS: the best ``m`` kept candidates of each image, in fixed-size rows, with standard ONNX ops only.

``NonMaxSuppression`` returns a variable list of (batch, class, box) rows; mmdet keeps, per image, the kept
candidates by descending score and cuts at ``max_per_img``. Here the kept scores are scattered into a [B, K] row
(``ScatterND``, 0 elsewhere), ``m`` columns of score 0 appended (so that ``TopK(m)`` is valid even for K < m),
and ``TopK(m)`` picks them: a row whose score is 0 is padding. Scores must be > 0 to count as kept (NMS's score
threshold is >= 0 in every caller).
"""
from __future__ import annotations

import torch
from torch import Tensor

from crossformer_deploy.model.tracing import spatial_size


def top_k(scores: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """TopK of the min(limit, n) best along dim 1 of [B, n]; n a graph value in a dynamic trace."""
    n = spatial_size(scores, (0, 1))[1]
    k = torch.clamp(n, max=limit) if isinstance(n, Tensor) else min(n, limit)
    return torch.topk(scores, k, dim=1)


def keep_best(boxes: Tensor, scores: Tensor, selected: Tensor, m: int,
              labels: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """boxes [B, K, 4], scores [B, K], selected [S, 3] (batch, class, candidate) -> (boxes [B, m, 4], scores
    [B, m], labels [B, m] (-1 on padding; 0 without ``labels``), valid [B, m] bool), by descending score; padding
    rows all 0."""
    b, k = selected[:, 0], selected[:, 2]
    kept = torch.zeros_like(scores).index_put((b, k), scores[b, k])
    kept = torch.cat([kept, torch.zeros_like(kept[:, :1]).repeat(1, m)], 1)
    boxes = torch.cat([boxes, torch.zeros_like(boxes[:, :1]).repeat(1, m, 1)], 1)
    if labels is None:
        labels = torch.zeros_like(scores, dtype=torch.int64)
    labels = torch.cat([labels, torch.full_like(labels[:, :1], -1).repeat(1, m)], 1)
    top, idx = torch.topk(kept, m, dim=1)
    valid = top > 0
    out_boxes = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
    out_boxes = torch.where(valid[..., None], out_boxes, torch.zeros_like(out_boxes))
    out_labels = torch.where(valid, torch.gather(labels, 1, idx), torch.full_like(idx, -1))
    return out_boxes, torch.where(valid, top, torch.zeros_like(top)), out_labels, valid
