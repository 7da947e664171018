"""Whole segmenters: the authors' Semantic FPN and UPerNet (MMSegmentation heads) on a CrossFormer backbone."""
from crossformer_deploy.model.seg.config import HEADS, SegConfig
from crossformer_deploy.model.seg.factory import build_segmenter, create_segmenter
from crossformer_deploy.model.seg.segmentor import Segmentor

__all__ = ["HEADS", "SegConfig", "Segmentor", "build_segmenter", "create_segmenter"]
