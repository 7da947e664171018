"""COCO's 80 detection classes, in the order of mmdet's ``CocoDataset.METAINFO['classes']`` (the contiguous label
ids 0..79 a COCO detector outputs; COCO's own category ids 1..90 have gaps and are not these)."""
from __future__ import annotations

COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)


def det_class_names(num_classes: int) -> tuple[str, ...]:
    """COCO's names for an 80-class detector (every released CrossFormer detector), else "class i"."""
    if num_classes == len(COCO_NAMES):
        return COCO_NAMES
    return tuple(f"class {i}" for i in range(num_classes))
