"""Whole detectors: the authors' RetinaNet (MMDetection's FPN and RetinaHead) on a CrossFormer backbone, with
mmdet's test-time post-processing in the graph."""
from crossformer_deploy.model.det.config import DetConfig
from crossformer_deploy.model.det.detector import RetinaNet
from crossformer_deploy.model.det.factory import build_detector, create_detector

__all__ = ["DetConfig", "RetinaNet", "build_detector", "create_detector"]
