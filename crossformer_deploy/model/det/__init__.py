"""Whole detectors: the authors' RetinaNet and Mask R-CNN (MMDetection's FPN, RetinaHead, RPN and RoI heads) on a
CrossFormer backbone, with mmdet's test-time post-processing in the graph."""
from crossformer_deploy.model.det.config import DetConfig
from crossformer_deploy.model.det.detector import RetinaNet
from crossformer_deploy.model.det.factory import build_detector, create_detector
from crossformer_deploy.model.det.mask_rcnn import MaskRCNN
from crossformer_deploy.model.det.mask_rcnn_config import MaskRCNNConfig
from crossformer_deploy.model.det.paste_masks import paste_masks

__all__ = ["DetConfig", "MaskRCNN", "MaskRCNNConfig", "RetinaNet", "build_detector", "create_detector",
           "paste_masks"]
