"""What an exported model says about itself (ONNX ``metadata_props``), so runtimes need no flags."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CROP_RATIO = 0.875
CENTER_CROP = "center-crop"  # ImageNet evaluation: shorter side to size / crop_ratio, center crop
ALIGN_RESIZE = "align-resize"  # the authors' segmentation test pipeline (base/seg_preprocess.py)
SEGMENTER = "segmenter"  # ModelInfo.mode of a whole segmenter (model/seg)
SEG_SCALE = (2048, 512)  # AlignResize's bound (long side, short side): ADE20K's img_scale
DETECTOR = "detector"  # ModelInfo.mode of a whole detector (model/det)
KEEP_RATIO_PAD = "keep-ratio-pad"  # mmdet's test pipeline (base/det_preprocess.py): Resize keep_ratio, pad to 32
DET_SCALE = (1333, 800)  # mmdet's Resize scale (long side, short side bound) in the authors' COCO configs


@dataclass(frozen=True)
class ModelInfo:
    """Everything a runtime needs to feed the model and read its outputs."""

    variant: str
    mode: str  # classifier | backbone | segmenter | detector
    num_classes: int
    weights: str  # "random-init seed=N" or "<file name> sha256=<hex>"
    input_size: tuple[int, int] = (224, 224)  # export size; the only size of a static graph
    dynamic: bool = True  # H and W dynamic
    batch: int | None = None  # fixed batch, or None for dynamic
    precision: str = "fp32"
    target: str = "plain"
    stride: int = 32
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_ratio: float = CROP_RATIO
    input_layout: str = "NCHW float32 RGB; pixels in [0, 1], then (x - mean) / std"
    extra: dict = field(default_factory=dict)  # a segmenter's: {"segmenter": its SegConfig as JSON text}; a
    #                                            detector's: {"detector": its config as JSON text}
    resize: str = CENTER_CROP  # how an image becomes the input: CENTER_CROP (classifier), ALIGN_RESIZE (segmenter),
    #                            KEEP_RATIO_PAD (detector)
    scale: tuple[int, int] | None = None  # ALIGN_RESIZE's / KEEP_RATIO_PAD's (long, short) bound
    head: str = ""  # segmenter: "fpn" (Semantic FPN) or "upernet"; detector: "retinanet" (or "mask_rcnn")

    def to_props(self) -> dict[str, str]:
        props = {}
        for k, v in asdict(self).items():
            props[k] = v if isinstance(v, str) else json.dumps(v)
        return props

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelInfo:
        kw = {}
        for f in fields(cls):
            if f.name not in props:
                continue
            v = props[f.name]
            if f.type != "str":
                v = json.loads(v)
                if isinstance(v, list):
                    v = tuple(v)
            kw[f.name] = v
        return cls(**kw)
