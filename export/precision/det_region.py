"""Which nodes of a whole detector's graph FP16 and INT8 may lower: the network, never the post-processing.

A detector export (``crossformer-export --task det``) is one graph: backbone -> neck -> heads -> anchors, box
decoding, TopK, NonMaxSuppression (and for Mask R-CNN: RoI level assignment, RoiAlign, the box and mask heads on
the RoIs, their own decoding and NMS). Only the network's arithmetic is lowered:

    /patch_embed/ /layers.i/ /backbone/   the CrossFormer backbone
    /neck/                                FPN
    /bbox_head/ /rpn_head/ /mask_head/    the heads' convs and fcs (RetinaHead; RPN, Shared2FC, FCN mask head)

Everything else stays fp32, found by the exporter's scope names (``/postprocess/``, ``/rpn_postprocess/``,
``/rcnn_postprocess/``, ``/bbox_roi_extractor/``, ``/mask_roi_extractor/`` and the top-level mask selection):
box decoding multiplies deltas by anchors hundreds of pixels wide (fp16 keeps ~0.1-0.5 px there) and clips at
image sizes up to 1333 px, the boxes' coordinates feed NMS IoUs and RoiAlign's bilinear grid, and the scores feed
TopK's thresholds (0.05) and NMS order, whose ties fp16 would multiply. FP16 then casts the heads' outputs (and
the neck's maps going into RoiAlign) up to fp32 where they leave the network; INT8 puts no Q/DQ outside it.

Names, not data flow, draw the line: for Mask R-CNN the network resumes after RoiAlign (the box and mask heads),
which no data-flow rule tells apart from post-processing.
"""
from __future__ import annotations

from collections.abc import Callable

import onnx

from crossformer_deploy.base.model_info import DETECTOR

NETWORK_SCOPES = ("/patch_embed/", "/layers.", "/backbone/", "/neck/", "/bbox_head/", "/rpn_head/", "/mask_head/")


def is_detector(proto: onnx.ModelProto) -> bool:
    """Whether ``proto`` is a whole detector's export (its metadata's ``mode``)."""
    return any(p.key == "mode" and p.value == DETECTOR for p in proto.metadata_props)


def in_network(node_name: str) -> bool:
    """Whether a detector's node belongs to the backbone, the neck or a head (by its exporter scope)."""
    return node_name.startswith(NETWORK_SCOPES)


def lowerable(proto: onnx.ModelProto) -> Callable[[str], bool]:
    """node name -> may FP16 / INT8 lower it: ``in_network`` for a detector, every node for other models."""
    return in_network if is_detector(proto) else (lambda _name: True)
