"""``non_max_suppression`` (nms.py) for graphs that are exported: the same eager op, the same ONNX node, but
nothing of the eager body traced.

While exporting, the tracer records an ``autograd.Function``'s forward as a sub-block of the graph, even though
``symbolic`` replaces the node: for NMS that is the whole greedy loop unrolled (a Mask R-CNN's RPN keeps ~1000
boxes: tens of thousands of ops), which the exporter's passes then take most of a minute over. Here the forward
only makes an output of the right type while exporting (``[0, 3]`` int64; the graph's ``NonMaxSuppression`` has
its own run-time shape), and runs ``nms_reference`` otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor

from crossformer_deploy.model.det.nms import NonMaxSuppression, nms_reference


class ExportedNonMaxSuppression(NonMaxSuppression):
    """``NonMaxSuppression`` (same symbolic) whose forward is a placeholder while exporting."""

    @staticmethod
    def forward(ctx, boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                score_threshold: float) -> Tensor:
        if torch.onnx.is_in_onnx_export():
            return torch.zeros(0, 3, dtype=torch.int64, device=boxes.device)
        return nms_reference(boxes, scores, max_per_class, iou_threshold, score_threshold)


def non_max_suppression(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
                        score_threshold: float) -> Tensor:
    """Per-class NMS over a batch: boxes [B, K, 4], scores [B, C, K] -> selected [M, 3] int64 (batch, class,
    box); one ``NonMaxSuppression`` node (center_point_box 0) in an export."""
    return ExportedNonMaxSuppression.apply(boxes, scores, max_per_class, iou_threshold, score_threshold)
