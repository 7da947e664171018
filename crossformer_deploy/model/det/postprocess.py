"""mmdet 3.x's RetinaNet test-time post-processing, batched, with fixed-size outputs and standard ONNX ops only.

What ``BaseDenseHead.predict_by_feat`` does per image (``_predict_by_feat_single``, ``filter_scores_and_topk``,
``_bbox_post_process``, mmcv's ``batched_nms``), and how it is expressed here for a whole batch:

1. per level, sigmoid scores of every (anchor, class) pair; mmdet keeps those > ``score_thr`` and of them the
   ``nms_pre`` best. Here ``TopK`` takes the min(nms_pre, pairs) best of all pairs: the same set once the
   pairs <= ``score_thr`` are dropped (they are, by NMS's score threshold), ties at the cut aside;
2. decode the kept pairs' anchors and deltas (``box_coder.decode``), clipped to the real resized image;
3. boxes back to the original image: x * (ori_w / img_w), y * (ori_h / img_h) (mmdet: ``1 / scale_factor``
   with ``scale_factor = new / original`` per axis, from the Resize transform);
4. ``min_bbox_size`` 0: mmdet drops boxes of width or height <= 0 (clipping makes them): here their score
   becomes 0, below any threshold;
5. class-aware NMS over all levels together (IoU > 0.5 suppresses), then the ``max_per_img`` best by score:
   one ``NonMaxSuppression`` (per class, see ``nms.py`` for its relation to mmcv's), ``ScatterND`` of the
   kept scores into a [B, K] row (zeros elsewhere), ``TopK`` of ``max_per_img`` over that row.

Outputs: ``dets`` [B, max_per_img, 5] (x1, y1, x2, y2, score; descending score; unused rows all 0) and
``labels`` [B, max_per_img] int64 (-1 on unused rows).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossformer_deploy.model.det.box_coder import decode
from crossformer_deploy.model.det.config import TestConfig
from crossformer_deploy.model.det.nms import non_max_suppression
from crossformer_deploy.model.tracing import spatial_size


def _top_k(scores: Tensor, limit: int) -> tuple[Tensor, Tensor]:
    """TopK of the min(limit, n) best along dim 1 of [B, n]; n a graph value in a dynamic trace."""
    n = spatial_size(scores, (0, 1))[1]
    k = torch.clamp(n, max=limit) if isinstance(n, Tensor) else min(n, limit)
    return torch.topk(scores, k, dim=1)


class RetinaPostProcess(nn.Module):
    """``forward(cls_scores, bbox_preds, anchors, image_size)`` -> (dets [B, M, 5], labels [B, M]), M =
    ``max_per_img``.

    cls_scores / bbox_preds: per level [B, A * C, H_l, W_l] / [B, A * 4, H_l, W_l] (RetinaHead); anchors: per
    level [H_l * W_l * A, 4]; image_size: [B, 4] int64 rows (img_h, img_w, ori_h, ori_w): the real (unpadded)
    size of the resized image in the input, which boxes are clipped to, and the original image's size, which
    boxes are scaled to (boxes in original-image pixels, as mmdet's ``rescale=True``).
    """

    def __init__(self, num_classes: int, cfg: TestConfig | None = None):
        super().__init__()
        self.num_classes, self.cfg = num_classes, cfg or TestConfig()

    def candidates(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], anchors: Sequence[Tensor],
                   img_hw: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """Steps 1-2: boxes [B, K, 4] (resized-image pixels, clipped), scores [B, K], labels [B, K] int64."""
        c = self.num_classes
        boxes, scores, labels = [], [], []
        for cls, reg, anc in zip(cls_scores, bbox_preds, anchors):
            s = cls.permute(0, 2, 3, 1).flatten(1).sigmoid()  # [B, N * C]: pair (n, c) at n * C + c
            d = reg.permute(0, 2, 3, 1)
            d = d.reshape(spatial_size(d, (0, 1))[0], -1, 4)  # [B, N, 4]; the batch a graph value when traced
            top, idx = _top_k(s, self.cfg.nms_pre)
            anchor_idx = torch.div(idx, c, rounding_mode="floor")
            deltas = torch.gather(d, 1, anchor_idx[..., None].expand(-1, -1, 4))
            boxes.append(decode(anc[anchor_idx], deltas, img_hw, self.cfg.means, self.cfg.stds,
                                self.cfg.wh_ratio_clip))
            scores.append(top)
            labels.append(idx % c)
        return torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(labels, 1)

    def forward(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], anchors: Sequence[Tensor],
                image_size: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        size = image_size.to(torch.float32)
        img_h, img_w, ori_h, ori_w = (size[:, i:i + 1] for i in range(4))  # [B, 1] each
        boxes, scores, labels = self.candidates(cls_scores, bbox_preds, anchors, (img_h, img_w))
        sx, sy = ori_w / img_w, ori_h / img_h
        boxes = boxes * torch.stack([sx, sy, sx, sy], dim=-1)  # [B, K, 4] in original-image pixels
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        scores = torch.where((w > cfg.min_bbox_size) & (h > cfg.min_bbox_size), scores, torch.zeros_like(scores))
        classes = torch.arange(self.num_classes, device=labels.device)
        per_class = torch.where(labels[:, None, :] == classes[None, :, None], scores[:, None, :],
                                torch.zeros_like(scores)[:, None, :])  # [B, C, K]
        sel = non_max_suppression(boxes, per_class, cfg.max_per_img, cfg.iou_threshold, cfg.score_thr)
        b, k = sel[:, 0], sel[:, 2]
        kept = torch.zeros_like(scores).index_put((b, k), scores[b, k])  # [B, K]: kept scores, 0 elsewhere
        m = cfg.max_per_img
        # m padding columns (score 0) so that TopK(m) is valid for any K, even an image with K < m pairs
        kept = torch.cat([kept, torch.zeros_like(kept[:, :1]).repeat(1, m)], 1)
        boxes = torch.cat([boxes, torch.zeros_like(boxes[:, :1]).repeat(1, m, 1)], 1)
        labels = torch.cat([labels, torch.full_like(labels[:, :1], -1).repeat(1, m)], 1)
        top, idx = torch.topk(kept, m, dim=1)
        valid = top > 0
        out_boxes = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
        dets = torch.cat([out_boxes, top[..., None]], -1)
        dets = torch.where(valid[..., None], dets, torch.zeros_like(dets))
        return dets, torch.where(valid, torch.gather(labels, 1, idx), torch.full_like(idx, -1))
