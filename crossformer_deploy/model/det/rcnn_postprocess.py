"""mmdet 3.x's box-head test path (``BBoxHead._predict_by_feat_single`` with mmdet's ``multiclass_nms``),
batched, with fixed-size outputs and standard ONNX ops only.

Per image, as mmdet 3.3.0 does it for a Mask R-CNN (whose box branch does not rescale: the mask branch needs the
boxes in resized-image pixels):

1. softmax over the K + 1 logits of each proposal; the background column dropped;
2. class-specific decoding: class c's box from the proposal and deltas ``4c .. 4c + 3`` (means 0, stds 0.1, 0.1,
   0.2, 0.2), clipped to the real resized image;
3. every (proposal, class) pair with score > ``score_thr``, NMS per class at IoU 0.5 (mmcv's ``batched_nms``:
   offsets per class; here one ``NonMaxSuppression`` over the classes), the ``max_per_img`` (100) best.

Step 3 as a graph: a proposal has at most ceil(1 / score_thr) - 1 classes over the threshold (softmax sums to 1),
so ``TopK`` of P * min(K, ceil(1 / score_thr)) pairs holds every pair mmdet keeps (19000 of 80000 for COCO)
before NMS drops the rest; the boxes are decoded for those pairs only. Padding proposals (RPN rows past its
survivors) get score 0.

Outputs: boxes [B, M, 4] (resized-image pixels), scores [B, M], labels [B, M] (-1 padding), valid [B, M].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from crossformer_deploy.model.det.box_coder import decode
from crossformer_deploy.model.det.export_nms import non_max_suppression
from crossformer_deploy.model.det.keep_best import keep_best, top_k
from crossformer_deploy.model.det.mask_rcnn_config import RCNNTestConfig
from crossformer_deploy.model.tracing import spatial_size


def pairs_per_roi(num_classes: int, score_thr: float) -> int:
    """A bound on the classes of one proposal whose softmax score exceeds ``score_thr`` (they sum to < 1)."""
    return num_classes if score_thr <= 0 else min(num_classes, math.ceil(1 / score_thr))


class RCNNPostProcess(nn.Module):
    """``forward(proposals [B, P, 4], valid [B, P], cls_score [B * P, K + 1], bbox_pred [B * P, K * 4], img_hw)``
    -> (boxes [B, M, 4], scores [B, M], labels [B, M], valid [B, M]); M = ``max_per_img``."""

    def __init__(self, num_classes: int, cfg: RCNNTestConfig | None = None, max_proposals: int = 1000):
        super().__init__()
        self.num_classes, self.cfg = num_classes, cfg or RCNNTestConfig()
        self.max_pairs = max_proposals * pairs_per_roi(num_classes, self.cfg.score_thr)

    def forward(self, proposals: Tensor, valid: Tensor, cls_score: Tensor, bbox_pred: Tensor,
                img_hw: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg, c = self.cfg, self.num_classes
        b = spatial_size(valid, (0, 1))[0]  # a graph value in a dynamic trace
        scores = torch.softmax(cls_score, -1)[:, :c].reshape(b, -1, c)  # [B, P, K]
        scores = torch.where(valid[..., None], scores, torch.zeros_like(scores)).flatten(1)  # pair (p, k): p*K + k
        top, idx = top_k(scores, self.max_pairs)
        roi, label = torch.div(idx, c, rounding_mode="floor"), idx % c
        deltas = torch.gather(bbox_pred.reshape(b, -1, 4), 1, idx[..., None].expand(-1, -1, 4))
        priors = torch.gather(proposals, 1, roi[..., None].expand(-1, -1, 4))
        boxes = decode(priors, deltas, img_hw, cfg.means, cfg.stds, cfg.wh_ratio_clip)
        classes = torch.arange(c, device=label.device)
        per_class = torch.where(label[:, None, :] == classes[None, :, None], top[:, None, :],
                                torch.zeros_like(top)[:, None, :])  # [B, K, N]
        sel = non_max_suppression(boxes, per_class, cfg.max_per_img, cfg.iou_threshold, cfg.score_thr)
        return keep_best(boxes, top, sel, cfg.max_per_img, label)
