"""mmdet's ``StandardRoIHead`` with a box and a mask branch, at inference, with its state-dict keys
(``roi_head.bbox_head.*``, ``roi_head.mask_head.*``; the extractors hold no tensors)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from crossformer_deploy.model.det.bbox_head import Shared2FCBBoxHead
from crossformer_deploy.model.det.mask_head import FCNMaskHead
from crossformer_deploy.model.det.mask_rcnn_config import MaskRCNNConfig
from crossformer_deploy.model.det.roi_extractor import SingleRoIExtractor
from crossformer_deploy.model.tracing import spatial_size


def flatten_rois(boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image boxes [B, N, 4] -> (rois [B * N, 4], batch_idx [B * N] int64: the image of each row)."""
    b, _ = spatial_size(boxes, (0, 1))
    index = torch.arange(b, device=boxes.device)[:, None] + torch.zeros_like(boxes[..., 0], dtype=torch.int64)
    return boxes.reshape(-1, 4), index.reshape(-1)


class StandardRoIHead(nn.Module):
    """``bbox_forward`` / ``mask_forward``: the first four FPN maps and RoIs -> box head / mask head outputs."""

    def __init__(self, cfg: MaskRCNNConfig):
        super().__init__()
        roi, c = cfg.roi, cfg.neck_channels
        self.bbox_roi_extractor = SingleRoIExtractor(roi.bbox_size, roi.strides, roi.finest_scale, roi.aligned)
        self.bbox_head = Shared2FCBBoxHead(cfg.num_classes, c, roi.bbox_size, cfg.fc_channels)
        self.mask_roi_extractor = SingleRoIExtractor(roi.mask_size, roi.strides, roi.finest_scale, roi.aligned)
        self.mask_head = FCNMaskHead(cfg.num_classes, c, cfg.mask_channels, cfg.mask_convs)

    def bbox_forward(self, feats: Sequence[Tensor], rois: Tensor, batch_idx: Tensor) -> tuple[Tensor, Tensor]:
        """rois [R, 4], batch_idx [R] -> (cls_score [R, K + 1] logits, bbox_pred [R, K * 4] deltas)."""
        return self.bbox_head(self.bbox_roi_extractor(feats, rois, batch_idx))

    def mask_forward(self, feats: Sequence[Tensor], rois: Tensor, batch_idx: Tensor) -> Tensor:
        """rois [R, 4], batch_idx [R] -> mask logits [R, K, 28, 28]."""
        return self.mask_head(self.mask_roi_extractor(feats, rois, batch_idx))
