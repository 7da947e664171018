"""The whole Mask R-CNN as one module: CrossFormer backbone -> FPN -> RPN -> proposals -> RoI box head -> NMS ->
RoI mask head.

What mmdet 3.x's ``MaskRCNN.predict(..., rescale=True)`` computes for a batch that the test pipeline made
(resize keeping the ratio to (1333, 800), ImageNet normalisation, padding to a multiple of 32), as one graph:
image in, a fixed number of detections and their 28x28 mask probabilities out. The masks are pasted into the
image on the host (``paste_masks.py``: mmdet's ``_do_paste_mask`` and its 0.5 threshold), as a deployment does
anyway: a [100, H, W] output would cost more than the whole head.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.det.anchors import AnchorGenerator
from crossformer_deploy.model.det.detector import DETECTOR, _check_image_size, _full_size
from crossformer_deploy.model.det.mask_rcnn_config import MaskRCNNConfig
from crossformer_deploy.model.det.rcnn_postprocess import RCNNPostProcess
from crossformer_deploy.model.det.roi_head import StandardRoIHead, flatten_rois
from crossformer_deploy.model.det.rpn_head import RPNHead
from crossformer_deploy.model.det.rpn_postprocess import RPNPostProcess
from crossformer_deploy.model.seg.fpn import FPN
from crossformer_deploy.model.tracing import spatial_size

OUTPUT_NAMES = ["dets", "labels", "masks"]


class MaskRCNN(nn.Module):
    """``forward(image [B, 3, H, W], image_size [B, 4] int64 or None)`` -> ``dets`` [B, M, 5] (x1, y1, x2, y2,
    score; original-image pixels; unused rows 0), ``labels`` [B, M] int64 (-1 unused) and ``masks`` [B, M, 28, 28]
    (the label's mask probability over the box; unused rows 0), M = max_per_img.

    image_size rows are (img_h, img_w, ori_h, ori_w), as for ``RetinaNet``. State-dict keys are mmdet's:
    ``backbone.*``, ``neck.*``, ``rpn_head.*``, ``roi_head.bbox_head.*``, ``roi_head.mask_head.*``.
    """

    mode = DETECTOR

    def __init__(self, det_cfg: MaskRCNNConfig):
        super().__init__()
        self.det_cfg, self.cfg = det_cfg, det_cfg.backbone
        self.num_classes = det_cfg.num_classes
        self.backbone = CrossFormer(det_cfg.backbone, "backbone")
        self.neck = FPN(det_cfg.in_channels, det_cfg.neck_channels, num_outs=det_cfg.num_outs, start_level=0,
                        add_extra_convs=None)
        self.rpn_head = RPNHead(det_cfg.neck_channels, det_cfg.rpn_channels, det_cfg.anchors.num_anchors)
        self.roi_head = StandardRoIHead(det_cfg)
        self.anchor_generator = AnchorGenerator(det_cfg.anchors)
        self.rpn_postprocess = RPNPostProcess(det_cfg.rpn_test)
        self.rcnn_postprocess = RCNNPostProcess(det_cfg.num_classes, det_cfg.test, det_cfg.rpn_test.max_per_img)

    @property
    def output_names(self) -> list[str]:
        return list(OUTPUT_NAMES)

    def features(self, image: Tensor) -> tuple[Tensor, ...]:
        """[B, 3, H, W] -> the neck's 5 maps [B, neck_channels, H / s, W / s], s = 4..64 (mmdet's extract_feat)."""
        return self.neck(self.backbone(image))

    def raw(self, image: Tensor) -> tuple[tuple[Tensor, ...], list[Tensor], list[Tensor]]:
        """For parity checks: (neck maps, per-level RPN logits [B, A, H_l, W_l], deltas [B, A * 4, H_l, W_l])."""
        feats = self.features(image)
        cls_scores, bbox_preds = self.rpn_head(feats)
        return feats, cls_scores, bbox_preds

    def proposals(self, feats: tuple[Tensor, ...], img_hw: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """The RPN's proposals [B, P, 4] (resized-image pixels, descending objectness) and their valid [B, P]."""
        cls_scores, bbox_preds = self.rpn_head(feats)
        anchors = self.anchor_generator([spatial_size(c) for c in cls_scores])
        return self.rpn_postprocess(cls_scores, bbox_preds, anchors, img_hw)

    def detect(self, feats: tuple[Tensor, ...], proposals: Tensor, valid: Tensor,
               img_hw: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Box head and NMS on the proposals: (boxes [B, M, 4] resized-image pixels, scores, labels, valid)."""
        rois, batch_idx = flatten_rois(proposals)
        cls_score, bbox_pred = self.roi_head.bbox_forward(feats, rois, batch_idx)
        return self.rcnn_postprocess(proposals, valid, cls_score, bbox_pred, img_hw)

    def masks(self, feats: tuple[Tensor, ...], boxes: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
        """Mask head on the detections: boxes [B, M, 4] (resized-image pixels) -> [B, M, S, S] probabilities of each
        detection's own class (mmdet: ``mask_preds[range(N), labels]``, then sigmoid); padding rows 0."""
        rois, batch_idx = flatten_rois(boxes)
        logits = self.roi_head.mask_forward(feats, rois, batch_idx)  # [B * M, K, S, S]
        s = self.det_cfg.mask_out_size
        pick = labels.clamp(min=0).reshape(-1)[:, None, None, None].expand(-1, 1, s, s)
        probs = torch.gather(logits, 1, pick).sigmoid().reshape(spatial_size(boxes, (0, 1))[0], -1, s, s)
        return torch.where(valid[..., None, None], probs, torch.zeros_like(probs))

    def forward(self, image: Tensor, image_size: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        if image_size is None:
            image_size = _full_size(image)
        elif not torch.jit.is_tracing():
            _check_image_size(image, image_size)
        size = image_size.to(torch.float32)
        img_h, img_w, ori_h, ori_w = (size[:, i:i + 1] for i in range(4))  # [B, 1] each
        feats = self.features(image)
        proposals, valid = self.proposals(feats, (img_h, img_w))
        roi_feats = feats[:len(self.det_cfg.roi.strides)]
        boxes, scores, labels, kept = self.detect(roi_feats, proposals, valid, (img_h, img_w))
        masks = self.masks(roi_feats, boxes, labels, kept)
        # to the original image as mmdet's mask branch does: boxes / scale_factor, scale_factor = resized / original
        sx, sy = img_w / ori_w, img_h / ori_h
        boxes = boxes / torch.stack([sx, sy, sx, sy], dim=-1)
        dets = torch.cat([boxes, scores[..., None]], -1)
        return dets, labels, masks
