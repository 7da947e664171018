"""mmdet 3.x's RPN test-time proposals (``RPNHead._predict_by_feat_single`` and ``_bbox_post_process``), batched,
with fixed-size outputs and standard ONNX ops only.

Per image, as mmdet 3.3.0 does it:

1. per level, sigmoid objectness of every anchor; the ``nms_pre`` (1000) best by a descending sort (here
   ``TopK``: the same set, ties at the cut aside); no score threshold;
2. decode those anchors' deltas (means 0, stds 1), clipped to the real resized image (mmdet's ``img_shape``;
   proposals stay in resized-image pixels, ``rescale=False``);
3. ``min_bbox_size`` 0: boxes of width or height <= 0 dropped (here: score 0, which NMS's threshold 0 drops);
4. ``batched_nms`` with the **level** as the index: NMS at IoU 0.7 within each level, never across levels (mmcv
   offsets each level's boxes apart; here one ``NonMaxSuppression`` with the levels as its classes);
5. all levels' survivors by descending score, the ``max_per_img`` (1000) best.

Outputs: proposals [B, P, 4] (x1, y1, x2, y2; descending score; P = max_per_img; padding rows 0) and valid [B, P].
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossformer_deploy.model.det.box_coder import decode
from crossformer_deploy.model.det.export_nms import non_max_suppression
from crossformer_deploy.model.det.keep_best import keep_best, top_k
from crossformer_deploy.model.det.mask_rcnn_config import RPNTestConfig
from crossformer_deploy.model.tracing import spatial_size


class RPNPostProcess(nn.Module):
    """``forward(cls_scores, bbox_preds, anchors, img_hw)`` -> (proposals [B, P, 4], valid [B, P]).

    cls_scores / bbox_preds: per level [B, A, H_l, W_l] / [B, A * 4, H_l, W_l] (RPNHead); anchors: per level
    [H_l * W_l * A, 4]; img_hw: (img_h [B, 1], img_w [B, 1]) float, the real resized image of each row.
    """

    def __init__(self, cfg: RPNTestConfig | None = None):
        super().__init__()
        self.cfg = cfg or RPNTestConfig()

    def forward(self, cls_scores: Sequence[Tensor], bbox_preds: Sequence[Tensor], anchors: Sequence[Tensor],
                img_hw: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        boxes, scores, levels = [], [], []
        for level, (cls, reg, anc) in enumerate(zip(cls_scores, bbox_preds, anchors)):
            s = cls.permute(0, 2, 3, 1).flatten(1).sigmoid()  # [B, H * W * A]: (y, x, anchor) order
            d = reg.permute(0, 2, 3, 1)
            d = d.reshape(spatial_size(d, (0, 1))[0], -1, 4)
            top, idx = top_k(s, cfg.nms_pre)
            deltas = torch.gather(d, 1, idx[..., None].expand(-1, -1, 4))
            boxes.append(decode(anc[idx], deltas, img_hw, cfg.means, cfg.stds, cfg.wh_ratio_clip))
            scores.append(top)
            levels.append(torch.full_like(idx, level))
        boxes, scores, levels = torch.cat(boxes, 1), torch.cat(scores, 1), torch.cat(levels, 1)
        w, h = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        scores = torch.where((w > cfg.min_bbox_size) & (h > cfg.min_bbox_size), scores, torch.zeros_like(scores))
        ids = torch.arange(len(cls_scores), device=levels.device)
        per_level = torch.where(levels[:, None, :] == ids[None, :, None], scores[:, None, :],
                                torch.zeros_like(scores)[:, None, :])  # [B, L, K]: a level is an NMS class
        sel = non_max_suppression(boxes, per_level, cfg.max_per_img, cfg.iou_threshold, 0.0)
        proposals, _, _, valid = keep_best(boxes, scores, sel, cfg.max_per_img)
        return proposals, valid
