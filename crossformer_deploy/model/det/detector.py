"""The whole RetinaNet as one module: CrossFormer backbone -> FPN -> RetinaHead -> anchors, decoding, NMS.

What mmdet 3.x's ``RetinaNet.predict(..., rescale=True)`` computes for a batch that the test pipeline made
(resize keeping the ratio to (1333, 800), ImageNet normalisation, padding to a multiple of 32), as one graph:
image in, a fixed number of detections out. The per-image sizes are an input (``image_size``) because the
padded tensor no longer carries them: boxes are clipped to the real resized image and scaled back to the
original one, exactly as mmdet reads ``img_shape`` and ``scale_factor`` from its metadata.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.base.errors import InputSizeError
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.det.anchors import AnchorGenerator
from crossformer_deploy.model.det.config import DetConfig
from crossformer_deploy.model.det.postprocess import RetinaPostProcess
from crossformer_deploy.model.det.retina_head import RetinaHead
from crossformer_deploy.model.seg.fpn import FPN
from crossformer_deploy.model.tracing import spatial_size

DETECTOR = "detector"  # the mode a whole detector reports, beside "classifier", "backbone", "segmenter"
OUTPUT_NAMES = ["dets", "labels"]
INPUT_NAMES = ["image", "image_size"]


class RetinaNet(nn.Module):
    """``forward(image [B, 3, H, W], image_size [B, 4] int64 or None)`` -> ``dets`` [B, M, 5] (x1, y1, x2, y2,
    score; original-image pixels; unused rows 0) and ``labels`` [B, M] int64 (-1 unused), M = max_per_img.

    image_size rows are (img_h, img_w, ori_h, ori_w): the resized image's real size inside the padded input and
    the original image's size (None: every image fills the input and was not resized). State-dict keys are
    mmdet's: ``backbone.*``, ``neck.*``, ``bbox_head.*``; anchors and post-processing hold no tensors.
    """

    mode = DETECTOR

    def __init__(self, det_cfg: DetConfig):
        super().__init__()
        self.det_cfg, self.cfg = det_cfg, det_cfg.backbone
        self.num_classes = det_cfg.num_classes
        self.backbone = CrossFormer(det_cfg.backbone, "backbone")
        self.neck = FPN(det_cfg.in_channels, det_cfg.neck_channels, num_outs=det_cfg.num_outs,
                        start_level=det_cfg.start_level, add_extra_convs="on_input")
        self.bbox_head = RetinaHead(det_cfg.num_classes, det_cfg.neck_channels, det_cfg.feat_channels,
                                    det_cfg.stacked_convs, det_cfg.anchors.num_anchors)
        self.anchor_generator = AnchorGenerator(det_cfg.anchors)
        self.postprocess = RetinaPostProcess(det_cfg.num_classes, det_cfg.test)

    @property
    def output_names(self) -> list[str]:
        return list(OUTPUT_NAMES)

    def features(self, image: Tensor) -> tuple[Tensor, ...]:
        """[B, 3, H, W] -> the neck's 5 maps [B, neck_channels, H / s, W / s], s = 8..128 (mmdet's extract_feat)."""
        return self.neck(self.backbone(image))

    def raw(self, image: Tensor) -> tuple[tuple[Tensor, ...], list[Tensor], list[Tensor]]:
        """For parity checks: (neck maps, per-level cls logits [B, A * C, H_l, W_l], deltas [B, A * 4, H_l, W_l])."""
        feats = self.features(image)
        cls_scores, bbox_preds = self.bbox_head(feats)
        return feats, cls_scores, bbox_preds

    def forward(self, image: Tensor, image_size: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if image_size is None:
            image_size = _full_size(image)
        elif not torch.jit.is_tracing():
            _check_image_size(image, image_size)
        _, cls_scores, bbox_preds = self.raw(image)
        anchors = self.anchor_generator([spatial_size(c) for c in cls_scores])
        return self.postprocess(cls_scores, bbox_preds, anchors, image_size)


def _full_size(image: Tensor) -> Tensor:
    """[B, 4] rows (H, W, H, W): each image fills the input, unresized (graph values in a dynamic trace)."""
    h, w = spatial_size(image)
    row = torch.stack([h, w, h, w]) if isinstance(h, Tensor) else torch.tensor([h, w, h, w])
    return torch.zeros_like(image[:, :1, 0, 0], dtype=torch.int64) + row  # [B, 1] + [4]: the batch stays dynamic


def _check_image_size(image: Tensor, image_size: Tensor) -> None:
    """One-line InputSizeError for an ``image_size`` that does not describe ``image``."""
    b, h, w = image.shape[0], image.shape[2], image.shape[3]
    if image_size.dtype != torch.int64 or tuple(image_size.shape) != (b, 4):
        raise InputSizeError(f"image_size must be int64 [{b}, 4] rows (img_h, img_w, ori_h, ori_w), "
                             f"not {image_size.dtype} {list(image_size.shape)}")
    if bool((image_size <= 0).any()):
        raise InputSizeError(f"image_size values must be positive, got {image_size.tolist()}")
    if bool((image_size[:, 0] > h).any() or (image_size[:, 1] > w).any()):
        raise InputSizeError(f"image_size's real sizes {image_size[:, :2].tolist()} exceed the input {h}x{w}")
