"""The whole segmenter as one module: CrossFormer backbone -> (FPN neck) -> decode head -> per-pixel classes.

What mmseg's ``EncoderDecoder`` computes in ``mode='whole'`` at test time, as one graph: logits at stride 4,
bilinear to the (aligned) input size, bilinear again to the original image size, argmax over classes.
The original size is an input (``output_size``) because the test pipeline's AlignResize stretches an image
to multiples of 32 (375x500 -> 512x683 -> 512x704) and the logits are resized back to 512x683, a size the
image tensor no longer carries.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from crossformer_deploy.base.errors import InputSizeError
from crossformer_deploy.base.model_info import SEGMENTER
from crossformer_deploy.model.crossformer import CrossFormer
from crossformer_deploy.model.grouping import Size
from crossformer_deploy.model.seg.config import SegConfig
from crossformer_deploy.model.seg.fpn import FPN
from crossformer_deploy.model.seg.fpn_head import FPNHead
from crossformer_deploy.model.seg.resize import resize, resize_bilinear_exact
from crossformer_deploy.model.seg.uper_head import UPerHead
from crossformer_deploy.model.tracing import spatial_size


class Segmentor(nn.Module):
    """``forward(image [B, 3, H, W], output_size [2] int64 or None)`` -> ``class_map`` [B, H0, W0] int64, and
    with ``return_logits`` also ``logits`` [B, num_classes, H0, W0]; (H0, W0) = ``output_size`` or (H, W).

    State-dict keys are mmseg's: ``backbone.*``, ``neck.*`` (Semantic FPN), ``decode_head.*``; a released
    checkpoint loads strictly once its ``auxiliary_head.*`` (training only) is dropped. ``cfg`` is the
    backbone's config (what an export records as ``architecture``), ``seg_cfg`` the whole one.
    """

    mode = SEGMENTER

    def __init__(self, seg_cfg: SegConfig, return_logits: bool = False):
        super().__init__()
        self.seg_cfg, self.cfg = seg_cfg, seg_cfg.backbone
        self.num_classes, self.return_logits = seg_cfg.num_classes, return_logits
        self.backbone = CrossFormer(seg_cfg.backbone, "backbone")
        if seg_cfg.head == "fpn":
            self.neck = FPN(seg_cfg.in_channels, seg_cfg.neck_channels, num_outs=len(seg_cfg.in_channels))
            self.decode_head = FPNHead(seg_cfg.neck_channels, seg_cfg.channels, seg_cfg.feature_strides,
                                       seg_cfg.num_classes)
        else:
            self.neck = None
            self.decode_head = UPerHead(seg_cfg.in_channels, seg_cfg.channels, seg_cfg.pool_scales,
                                        seg_cfg.num_classes)

    @property
    def output_names(self) -> list[str]:
        return ["class_map", "logits"] if self.return_logits else ["class_map"]

    def logits(self, image: Tensor, output_size: Tensor | tuple[int, int] | None = None) -> Tensor:
        """[B, 3, H, W] -> [B, num_classes, H0, W0]: mmseg's ``seg_logits`` after ``postprocess_result``."""
        feats = self.backbone(image)
        if self.neck is not None:
            feats = self.neck(feats)
        x = resize(self.decode_head(feats), spatial_size(image))  # decode_head.predict: to the input size
        if output_size is not None:
            x = resize_bilinear_exact(x, _pair(output_size))  # postprocess_result: to the original size
        return x

    def forward(self, image: Tensor, output_size: Tensor | tuple[int, int] | None = None) -> Tensor | tuple[Tensor,
                                                                                                            Tensor]:
        x = self.logits(image, output_size)
        classes = x.argmax(dim=1)
        return (classes, x) if self.return_logits else classes


def _pair(size: Tensor | tuple[int, int]) -> tuple[Size, Size]:
    """(H0, W0) from ``output_size``: 0-d tensors while tracing (the graph reads them at run time), else ints."""
    if isinstance(size, Tensor) and torch.jit.is_tracing():
        # at least 1 a side (an empty Resize is an error in some runtimes); the Max also keeps OpenVINO from folding
        # Gather + Concat back into the input itself, which renames the input's port
        size = torch.maximum(size, torch.ones_like(size))
        return size[0], size[1]
    values = size.tolist() if isinstance(size, Tensor) else list(size)
    if len(values) != 2 or not all(isinstance(v, int) and v > 0 for v in values):
        raise InputSizeError(f"output_size must be two positive integers (height, width), not {values}")
    return values[0], values[1]
