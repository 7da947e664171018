"""ONNX ``NonMaxSuppression`` as a PyTorch op: an eager implementation with the operator's semantics that the
ONNX exporter writes as the standard op (no plugin, no custom domain).

How it relates to mmcv's ``nms`` (offset 0) and ``batched_nms``, which mmdet's RetinaNet test path calls:

- IoU: both compute ``inter / (area_i + area_j - inter)`` with ``w = max(0, min(x2) - max(x1))`` (mmcv's
  ``offset=0``: no +1 pixel) and suppress when IoU **>** the threshold (mmcv's ``ovr > iou_threshold``; ORT's
  ``SuppressByIOU`` returns ``iou > iou_threshold``): an IoU of exactly 0.5 survives in both. ORT never lets
  a box of zero area suppress; mmcv gets IoU 0 for it (or NaN, which is not > 0.5): the same outcome.
- Boxes: ``center_point_box=0`` means (y1, x1, y2, x2) corners in the spec, but the IoU is symmetric in the two
  axes, so (x1, y1, x2, y2) rows give the same IoUs; ORT also orders each corner pair (min / max) itself.
- Classes: ``batched_nms`` offsets each class's boxes by ``label * (max coordinate + 1)`` so that boxes of
  different classes never overlap, then runs one NMS; ONNX runs NMS per class natively (``scores`` [B, C, K]).
  Both are per-class NMS; the offsets only cost mmcv some float precision on large coordinates.
- score_threshold: ORT keeps candidates with score **>** the threshold, as mmdet's ``scores > score_thr``.
- Order and ties: both visit candidates by descending score; on equal scores ORT takes the lower index first,
  mmcv whatever ``sort`` gives. ``max_output_boxes_per_class`` caps each class (mmdet caps the whole image
  afterwards: a cap of ``max_per_img`` per class loses nothing of the image's top ``max_per_img``).
"""
from __future__ import annotations

import torch
from torch import Tensor


def _iou_row(box: Tensor, others: Tensor) -> Tensor:
    """IoU of one box [4] with boxes [N, 4], ORT's arithmetic; 0 where a box (or the union) has no area."""
    x1 = torch.maximum(box[0], others[:, 0])
    y1 = torch.maximum(box[1], others[:, 1])
    x2 = torch.minimum(box[2], others[:, 2])
    y2 = torch.minimum(box[3], others[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = area + areas - inter
    ok = (inter > 0) & (area > 0) & (areas > 0) & (union > 0)
    return torch.where(ok, inter / torch.where(ok, union, torch.ones_like(union)), torch.zeros_like(inter))


def nms_reference(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                  score_threshold: float) -> Tensor:
    """boxes [B, K, 4] (x1, y1, x2, y2), scores [B, C, K] -> selected [M, 3] int64 rows (batch, class, box), per
    batch and class in selection order (descending score), at most ``max_per_class`` per (batch, class)."""
    rows = []
    for b in range(scores.shape[0]):
        for c in range(scores.shape[1]):
            s = scores[b, c]
            cand = torch.nonzero(s > score_threshold).flatten()
            if cand.numel() == 0:
                continue
            # descending score, lower index first on ties (ORT's priority queue); a stable sort of the indices
            order = cand[torch.sort(s[cand], descending=True, stable=True).indices]
            cand_boxes = boxes[b, order]
            alive = torch.ones(order.numel(), dtype=torch.bool)
            kept = []
            for i in range(order.numel()):
                if not alive[i]:
                    continue
                kept.append(int(order[i]))
                if len(kept) == max_per_class:
                    break
                alive[i + 1:] &= ~(_iou_row(cand_boxes[i], cand_boxes[i + 1:]) > iou_threshold)
            rows += [(b, c, k) for k in kept]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


class NonMaxSuppression(torch.autograd.Function):
    """``apply(boxes [B, K, 4], scores [B, C, K], max_per_class, iou_threshold, score_threshold)`` -> [M, 3]."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                score_threshold: float) -> Tensor:
        return nms_reference(boxes, scores, max_per_class, iou_threshold, score_threshold)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
        # the thresholds as 1-element constants, as the operator's optional inputs take them
        const = lambda v, t: g.op("Constant", value_t=torch.tensor([v], dtype=t))  # noqa: E731
        return g.op("NonMaxSuppression", boxes, scores, const(max_per_class, torch.int64),
                    const(iou_threshold, torch.float32), const(score_threshold, torch.float32),
                    center_point_box_i=0)


def non_max_suppression(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                        score_threshold: float) -> Tensor:
    """Per-class NMS over a batch: boxes [B, K, 4], scores [B, C, K] -> selected [M, 3] int64 (batch, class,
    box); the ONNX export is one ``NonMaxSuppression`` node (center_point_box 0)."""
    return NonMaxSuppression.apply(boxes, scores, max_per_class, iou_threshold, score_threshold)
